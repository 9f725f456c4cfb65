"""Errors a plugin raises; each carries a machine-readable code and a sentence for humans."""

from __future__ import annotations


class GeneratorError(Exception):
    """A job-level failure the platform records as the job's error (code + message)."""

    code = "generation_failed"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ParamsInvalid(GeneratorError):
    """Params failed the plugin's model; `errors` lists each bad field."""

    code = "invalid_params"

    def __init__(self, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.errors = errors


class JobCancelled(GeneratorError):
    """Raised inside `generate` when the context reports a cancel request."""

    code = "cancelled"


class OutOfMemory(GeneratorError):
    """The device ran out of memory while loading or running a model."""

    code = "out_of_memory"


class ModelLoadFailed(GeneratorError):
    """Weights or configuration for the configured model could not be loaded."""

    code = "model_load_failed"
