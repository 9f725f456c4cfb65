"""Built-in text generator: a transformers causal LM, with the chat template when the tokenizer has one."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from generators.base import GenerationContext, GenerationResult, Generator, GeneratorConfig, Modality
from generators.errors import GeneratorError, JobCancelled, ModelLoadFailed
from hardware import DeviceChoice, HardwareNeeds

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


class TextParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=8000, description="What to write: the user's instruction.")
    system: str | None = Field(default=None, max_length=2000, description="Optional system message.")
    max_new_tokens: int = Field(default=256, ge=1, le=2048, description="Upper bound on generated tokens.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="0 means greedy decoding.")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="Fix for reproducible output.")


class TextConfig(GeneratorConfig):
    model_id: str = Field(
        default_factory=lambda: os.environ.get("AIGC_MODEL_TRANSFORMERS_TEXT", DEFAULT_MODEL),
        description="Causal LM id or path (env AIGC_MODEL_TRANSFORMERS_TEXT).",
    )
    max_input_tokens: int = Field(default=4096, ge=16, le=131072, description="Longer prompts are refused.")


class TextGenerator(Generator):
    """Text from an instruction with a transformers causal language model."""

    name = "transformers-text"
    modality = Modality.TEXT
    Params = TextParams
    Config = TextConfig
    needs = HardwareNeeds(devices=("cuda", "mps", "cpu"), dtypes=("bfloat16", "float16", "float32"), memory_mb=600)
    config: TextConfig

    def setup(self, device: DeviceChoice) -> None:
        import torch  # noqa: F401 - heavy imports live here, never at module level
        from transformers import AutoModelForCausalLM, AutoTokenizer

        super().setup(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.config.model_id, revision=self.config.revision)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.config.model_id, revision=self.config.revision, dtype=device.torch_dtype()
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadFailed(f"could not load text model {self.config.model_id!r}: {exc}") from exc
        self.model.to(device.device)
        self.model.eval()

    def _input_ids(self, params: TextParams):  # noqa: ANN202
        if getattr(self.tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": params.system}] if params.system else []) + [
                {"role": "user", "content": params.prompt}
            ]
            encoded = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            return encoded["input_ids"]
        text = f"{params.system}\n\n{params.prompt}" if params.system else params.prompt
        return self.tokenizer(text, return_tensors="pt")["input_ids"]

    def generate(self, params: TextParams, ctx: GenerationContext) -> GenerationResult:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        input_ids = self._input_ids(params)
        prompt_tokens = int(input_ids.shape[-1])
        if prompt_tokens > self.config.max_input_tokens:
            raise GeneratorError(
                f"`prompt` is {prompt_tokens} tokens, over this deployment's limit of {self.config.max_input_tokens}",
                code="prompt_too_long",
            )
        input_ids = input_ids.to(self.model.device)

        class Progress(StoppingCriteria):
            def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> bool:  # noqa: ARG002
                done = int(ids.shape[-1]) - prompt_tokens
                ctx.progress(min(done / params.max_new_tokens, 1.0), f"{done}/{params.max_new_tokens} tokens")
                return ctx.cancelled()

        if params.seed is not None:
            torch.manual_seed(params.seed)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
            if params.temperature > 0
            else {"do_sample": False}
        )
        with torch.inference_mode():
            output = self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=params.max_new_tokens,
                stopping_criteria=StoppingCriteriaList([Progress()]),
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **sampling,
            )
        if ctx.cancelled():
            raise JobCancelled("the job was cancelled during generation")
        new_tokens = output[0, prompt_tokens:]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        return GenerationResult(
            text=text,
            metadata={
                "model_id": self.config.model_id,
                "revision": self.config.revision,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": int(new_tokens.shape[-1]),
                "seed": params.seed,
                "device": ctx.device.device,
                "dtype": ctx.device.dtype,
            },
        )
