"""Built-in text generator: a transformers causal LM, with the chat template when the tokenizer has one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from generators.base import BatchItem, GenerationContext, GenerationResult, Generator, GeneratorConfig, Modality
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
    max_batch_size = 8
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

    def batch_key(self, params: TextParams) -> tuple | None:
        # A pass shares its sampling settings and random stream, so a seeded job runs alone: its seed then
        # reproduces its text whatever else is queued.
        if params.seed is not None:
            return None
        return (params.max_new_tokens, params.temperature, params.top_p)

    def generate(self, params: TextParams, ctx: GenerationContext) -> GenerationResult:
        outcome = self.generate_batch([BatchItem(params=params, ctx=ctx)])[0]
        if isinstance(outcome, GeneratorError):
            raise outcome
        return outcome

    def generate_batch(self, items: Sequence[BatchItem]) -> list[GenerationResult | GeneratorError]:
        """Left-pad the prompts into one batch and decode them together; each item gets its own result."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        outcomes: list[GenerationResult | GeneratorError | None] = [None] * len(items)
        prompts = []
        for index, item in enumerate(items):
            ids = self._input_ids(item.params)[0]
            if len(ids) > self.config.max_input_tokens:
                outcomes[index] = GeneratorError(
                    f"`prompt` is {len(ids)} tokens, over this deployment's limit of {self.config.max_input_tokens}",
                    code="prompt_too_long",
                )
            else:
                prompts.append((index, ids))
        if not prompts:
            return outcomes  # type: ignore[return-value]

        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        width = max(len(ids) for _, ids in prompts)
        input_ids = torch.full((len(prompts), width), pad_id if pad_id is not None else 0, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, (_, ids) in enumerate(prompts):
            input_ids[row, width - len(ids) :] = ids
            attention_mask[row, width - len(ids) :] = 1
        contexts = [items[index].ctx for index, _ in prompts]
        first: TextParams = items[prompts[0][0]].params  # the batch key makes the sampling settings equal

        class Progress(StoppingCriteria):
            def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:  # noqa: ARG002
                done = int(ids.shape[-1]) - width
                for ctx in contexts:
                    ctx.progress(min(done / first.max_new_tokens, 1.0), f"{done}/{first.max_new_tokens} tokens")
                stop = all(ctx.cancelled() for ctx in contexts)
                return torch.full((ids.shape[0],), stop, dtype=torch.bool, device=ids.device)

        if first.seed is not None:
            torch.manual_seed(first.seed)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": first.temperature, "top_p": first.top_p}
            if first.temperature > 0
            else {"do_sample": False}
        )
        with torch.inference_mode():
            output = self.model.generate(
                input_ids.to(self.model.device),
                attention_mask=attention_mask.to(self.model.device),
                max_new_tokens=first.max_new_tokens,
                stopping_criteria=StoppingCriteriaList([Progress()]),
                pad_token_id=pad_id,
                **sampling,
            )
        stops = self._stop_token_ids()
        for row, (index, ids) in enumerate(prompts):
            ctx = items[index].ctx
            if ctx.cancelled():
                outcomes[index] = JobCancelled("the job was cancelled during generation")
                continue
            tokens = output[row, width:].tolist()
            end = next((i for i, token in enumerate(tokens) if token in stops), len(tokens))
            outcomes[index] = GenerationResult(
                text=self.tokenizer.decode(tokens[:end], skip_special_tokens=True).strip(),
                metadata={
                    "model_id": self.config.model_id,
                    "revision": self.config.revision,
                    "prompt_tokens": len(ids),
                    "completion_tokens": end,
                    "seed": items[index].params.seed,
                    "device": ctx.device.device,
                    "dtype": ctx.device.dtype,
                    "batch_size": len(prompts),
                },
            )
        return outcomes  # type: ignore[return-value]

    def _stop_token_ids(self) -> set[int]:
        """Tokens that end a sequence; `generate` pads finished rows after them."""
        configured = self.model.generation_config.eos_token_id
        if configured is None:
            return set()
        return set(configured) if isinstance(configured, list) else {configured}
