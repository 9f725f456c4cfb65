"""Built-in text generator: a transformers causal LM served by the step engine, with the chat template when the
tokenizer has one, per-job sampling and seeds, stop strings and grammar-constrained JSON output."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from generators.base import BatchItem, GenerationContext, GenerationResult, Generator, GeneratorConfig, Modality
from generators.errors import GeneratorError, ModelLoadFailed
from hardware import DeviceChoice, HardwareNeeds

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
MAX_NEW_TOKENS = 2048


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"] = Field(description="Who says it.")
    content: str = Field(max_length=8000, description="What is said.")


class JsonObjectFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["json_object"] = Field(description="Any valid JSON object.")


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["json_schema"] = Field(description="JSON valid against `schema`.")
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON Schema the output must satisfy.")


ResponseFormat = Annotated[JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class TextParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # `messages` comes first so that the check of `prompt`, which names the field, can see it.
    messages: list[Message] | None = Field(
        default=None, min_length=1, max_length=64, description="A conversation instead of `prompt`."
    )
    prompt: str | None = Field(
        default=None,
        min_length=1,
        max_length=8000,
        validate_default=True,
        description="What to write: the user's instruction (or give `messages`).",
    )
    system: str | None = Field(default=None, max_length=2000, description="Optional system message.")
    max_new_tokens: int = Field(default=256, ge=1, le=MAX_NEW_TOKENS, description="Upper bound on generated tokens.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="0 means greedy decoding.")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="Fix for reproducible output.")
    stop: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=4, description="Generation ends before the first of these strings."
    )
    response_format: ResponseFormat | None = Field(
        default=None, description="Constrain the output to JSON (any object, or one valid against a schema)."
    )

    @field_validator("prompt")
    @classmethod
    def _one_input(cls, prompt: str | None, info: ValidationInfo) -> str | None:
        if (prompt is None) == (info.data.get("messages") is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        return prompt


class TextConfig(GeneratorConfig):
    model_id: str = Field(
        default_factory=lambda: os.environ.get("AIGC_MODEL_TRANSFORMERS_TEXT", DEFAULT_MODEL),
        description="Causal LM id or path (env AIGC_MODEL_TRANSFORMERS_TEXT).",
    )
    max_input_tokens: int = Field(default=4096, ge=16, le=131072, description="Longer prompts are refused.")
    kv_layout: Literal["auto", "frame", "slots"] = Field(
        default="auto",
        description=(
            "How the engine holds keys and values: `slots` (a preallocated cache, one slot per job, decode steps as "
            "CUDA graphs on CUDA), `frame` (one left-padded batch that grows and shrinks), `auto` (slots on CUDA)."
        ),
    )
    cuda_graphs: bool = Field(default=True, description="Replay decode steps as CUDA graphs (slots on CUDA).")


def _grammar_batch_mask() -> Any:
    """The grammar library's one-pass mask for a whole step, where it is installed."""
    try:
        from generators.grammar import mask_logits_batch
    except ImportError:
        return None
    return mask_logits_batch


class TextGenerator(Generator):
    """Text from an instruction with a transformers causal language model."""

    name = "transformers-text"
    modality = Modality.TEXT
    Params = TextParams
    Config = TextConfig
    needs = HardwareNeeds(devices=("cuda", "mps", "cpu"), dtypes=("bfloat16", "float16", "float32"), memory_mb=600)
    max_batch_size = 64
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
        self._direct_lock = threading.Lock()
        self._direct_runner: Any = None

    def create_runner(self) -> Any:
        """The engine capability: a step runner over this model (see docs/plugins.md)."""
        from generators.engine.causal_lm import CausalLMRunner
        from generators.engine.slots import SlotRunner

        common = {
            "encode": self._input_ids,
            "stop_token_ids": self._stop_token_ids(),
            "metadata": self._metadata,
            "make_constraint": self._constraint,
            "mask_batch": _grammar_batch_mask(),
        }
        layout = self.config.kv_layout
        if layout == "auto":
            layout = "slots" if self.device is not None and self.device.device.startswith("cuda") else "frame"
        if layout == "frame":
            return CausalLMRunner(self.model, self.tokenizer, **common)
        longest = self.config.max_input_tokens + MAX_NEW_TOKENS
        limit = getattr(self.model.config, "max_position_embeddings", None) or longest
        return SlotRunner(
            self.model, self.tokenizer, row_tokens=min(longest, limit), graphs=self.config.cuda_graphs, **common
        )

    def _input_ids(self, params: TextParams) -> list[int]:
        messages = (
            [m.model_dump() for m in params.messages]
            if params.messages
            else [{"role": "user", "content": params.prompt}]
        )
        if params.system:
            messages = [{"role": "system", "content": params.system}, *messages]
        if getattr(self.tokenizer, "chat_template", None):
            encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
            ids = list(encoded["input_ids"])
        else:
            ids = self.tokenizer("\n\n".join(m["content"] for m in messages))["input_ids"]
        if len(ids) > self.config.max_input_tokens:
            field = "messages" if params.messages else "prompt"
            raise GeneratorError(
                f"`{field}` is {len(ids)} tokens, over this deployment's limit of {self.config.max_input_tokens}",
                code="prompt_too_long",
            )
        return ids

    def _constraint(self, params: TextParams) -> Any:
        if params.response_format is None:
            return None
        try:
            from generators.grammar import compile_constraint
        except ImportError:
            raise GeneratorError(
                "`response_format`: constrained decoding is not installed on this worker",
                code="structured_output_unsupported",
            ) from None
        vocab = self.model.get_output_embeddings().weight.shape[0]
        return compile_constraint(
            self.tokenizer, params.response_format.model_dump(by_alias=True), vocab, max_tokens=params.max_new_tokens
        )

    def _metadata(self, params: TextParams) -> dict[str, Any]:
        return {
            "model_id": self.config.model_id,
            "revision": self.config.revision,
            "seed": params.seed,
            "device": self.device.device if self.device else None,
            "dtype": self.device.dtype if self.device else None,
        }

    @classmethod
    def expected_steps(cls, params: TextParams) -> int:
        return int(params.max_new_tokens)  # one decode step a token, at most

    def batch_key(self, params: TextParams) -> tuple:
        # Every row has its own sampling settings, seed and stop rules: any two jobs can share a batch.
        return ()

    def generate(self, params: TextParams, ctx: GenerationContext) -> GenerationResult:
        outcome = self.generate_batch([BatchItem(params=params, ctx=ctx)])[0]
        if isinstance(outcome, GeneratorError):
            raise outcome
        return outcome

    def generate_batch(self, items: Sequence[BatchItem]) -> list[GenerationResult | GeneratorError]:
        """All items start together on a fresh runner; each leaves when done, with its own result."""
        from generators.engine.static import run_to_end

        # One runner serves the direct passes (its cache and CUDA graphs are kept), one pass at a time.
        with self._direct_lock:
            if self._direct_runner is None:
                self._direct_runner = self.create_runner()
            try:
                return run_to_end(self._direct_runner, items)
            finally:
                self._direct_runner.reset()

    def _stop_token_ids(self) -> set[int]:
        """Tokens that end a sequence."""
        configured = self.model.generation_config.eos_token_id
        if configured is None:
            return set()
        return set(configured) if isinstance(configured, list) else {configured}
