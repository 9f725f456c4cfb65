"""The plugin contract: one class with typed params, declared hardware needs, `setup` and `generate`."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from generators.errors import GeneratorError, JobCancelled, ParamsInvalid
from hardware import DeviceChoice, HardwareNeeds

__all__ = [
    "PLUGIN_API_VERSION",
    "BatchItem",
    "Generator",
    "GeneratorConfig",
    "GenerationContext",
    "GenerationResult",
    "HardwareNeeds",
    "LocalContext",
    "Modality",
    "OutputFile",
    "field_errors",
]


# The plugin API this platform implements, MAJOR.MINOR: a minor release only adds (a plugin written for 1.0
# runs on 1.3); a major one may break, and the previous major stays supported for a deprecation window
# (docs/plugins.md, "Plugin API versions"). A plugin declares the version it targets in `api_version`.
PLUGIN_API_VERSION = "1.0"


class Modality(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"


class GeneratorConfig(BaseModel):
    """What an admin may set per deployment; plugins subclass it to add their own fields."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_id: str = Field(description="Hugging Face model id or local path loaded with `from_pretrained`.")
    revision: str | None = Field(default=None, description="Model revision (branch, tag or commit).")
    allowed_models: list[str] = Field(
        default_factory=list, description="Other model ids a job may ask for instead of `model_id`."
    )


@dataclass
class OutputFile:
    filename: str
    content_type: str
    data: bytes
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationResult:
    """What one job produced: inline text, files, and metadata recorded with the job."""

    text: str | None = None
    files: list[OutputFile] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    data: Any = None  # structured JSON, where the plugin produces it


class GenerationContext(ABC):
    """Handed to `generate`: report progress, honour cancellation, know the device."""

    device: DeviceChoice
    job_id: str = ""
    logger: logging.Logger = logging.getLogger("generators")

    @abstractmethod
    def progress(self, fraction: float, message: str = "") -> None: ...

    @abstractmethod
    def cancelled(self) -> bool: ...

    def raise_if_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled("the job was cancelled")


class LocalContext(GenerationContext):
    """A context for calling a plugin directly (benchmarks, the contract kit, notebooks)."""

    def __init__(
        self,
        device: DeviceChoice | None = None,
        *,
        on_progress: Callable[[float, str], None] | None = None,
        cancel_after: int | None = None,
    ) -> None:
        self.device = device or DeviceChoice(device="cpu", dtype="float32")
        self.reports: list[tuple[float, str]] = []
        self._on_progress = on_progress
        self._cancel_after = cancel_after

    def progress(self, fraction: float, message: str = "") -> None:
        self.reports.append((fraction, message))
        if self._on_progress:
            self._on_progress(fraction, message)

    def cancelled(self) -> bool:
        return self._cancel_after is not None and len(self.reports) >= self._cancel_after


@dataclass
class BatchItem:
    params: BaseModel
    ctx: GenerationContext


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as [{field, code, message}] with dotted field paths."""
    out = []
    for err in error.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "params"
        out.append({"field": loc, "code": err["type"], "message": f"`{loc}`: {err['msg']}"})
    return out


class Generator(ABC):
    """Subclass this, declare `name`, `modality`, `Params` (and `Config`, `needs`), implement `generate`.

    Import torch / transformers / diffusers inside `setup`, never at module level: the web process
    lists plugins and validates params without them.
    """

    name: ClassVar[str]
    modality: ClassVar[Modality]
    Params: ClassVar[type[BaseModel]]
    Config: ClassVar[type[GeneratorConfig]]
    needs: ClassVar[HardwareNeeds] = HardwareNeeds()
    max_batch_size: ClassVar[int] = 1
    # The plugin API version this plugin was written for. Plugins written before the field existed target 1.0.
    api_version: ClassVar[str] = "1.0"

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.device: DeviceChoice | None = None

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def default_config(cls, **overrides: Any) -> GeneratorConfig:
        return cls.Config(**overrides)

    @classmethod
    def validate_params(cls, raw: Any) -> BaseModel:
        """Params as the plugin's model, or `ParamsInvalid` naming each bad field."""
        if not isinstance(raw, dict):
            raise ParamsInvalid(
                "`params` must be a JSON object",
                [{"field": "params", "code": "type", "message": "`params` must be a JSON object"}],
            )
        try:
            return cls.Params.model_validate(raw)
        except ValidationError as exc:
            errors = field_errors(exc)
            raise ParamsInvalid("; ".join(e["message"] for e in errors), errors) from None

    @classmethod
    def validate_config(cls, raw: dict[str, Any]) -> GeneratorConfig:
        try:
            return cls.Config.model_validate(raw)
        except ValidationError as exc:
            errors = field_errors(exc)
            raise ParamsInvalid("; ".join(e["message"] for e in errors), errors) from None

    def setup(self, device: DeviceChoice) -> None:
        """Load weights once per worker process onto `device`."""
        self.device = device

    @abstractmethod
    def generate(self, params: Any, ctx: GenerationContext) -> GenerationResult:
        """Run one job."""

    def create_runner(self) -> Any:
        """Opt-in engine capability: return a step runner (`generators.engine.loop.StepRunner`) so the worker
        schedules this plugin's jobs step by step (continuous batching). None: jobs run through `generate` or
        `generate_batch`, one pass at a time."""
        return None

    def batch_key(self, params: Any) -> Any:
        """Jobs whose keys are equal may run together in `generate_batch`; None means never batch."""
        return None

    @classmethod
    def expected_steps(cls, params: Any) -> int:
        """Opt-in: how many engine steps one job takes at most (a step runner's decode steps; text: its
        `max_new_tokens`). A worker whose engine is full takes the job with the most work left first, so the
        batch stays full to the end (see docs/plugins.md). Called at submission with validated params; 1 (every
        job alike: oldest first) unless a plugin says otherwise."""
        return 1

    def generate_batch(self, items: Sequence[BatchItem]) -> list[GenerationResult | GeneratorError]:
        """Run several compatible jobs; the default runs them one after another."""
        results: list[GenerationResult | GeneratorError] = []
        for item in items:
            try:
                results.append(self.generate(item.params, item.ctx))
            except GeneratorError as exc:
                results.append(exc)
        return results

    def teardown(self) -> None:
        """Drop references to loaded weights; called when the model cache evicts this plugin."""
        for attr in list(vars(self)):
            if attr not in ("config", "device"):
                setattr(self, attr, None)
