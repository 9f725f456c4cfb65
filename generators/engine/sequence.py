"""What flows through an engine: a job's sequence in, its outputs out."""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from generators.base import GenerationResult
from generators.errors import GeneratorError


@dataclass(eq=False)
class Sequence:
    """One job inside an engine. `future` resolves with its GenerationResult or GeneratorError."""

    id: str
    params: Any
    tenant: str = ""
    deadline: float | None = None  # time.monotonic() after which the job ends with `timeout`
    future: Future = field(default_factory=Future)
    submitted_at: float = field(default_factory=time.monotonic)
    cost: int = 0  # KV-cache token slots this job may need at most (set by the runner's `prepare`)
    steps: int = 1  # engine steps the job takes at most (its plugin's `expected_steps`): the admission order
    prepared: Any = None  # the runner's own per-job data (token ids, ...)
    context: contextvars.Context | None = None  # the submitter's context (log fields), for work done for it alone
    _cancel: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


@dataclass
class Output:
    """One event an engine emits for one job: a token delta, a progress report, or the final outcome."""

    seq: Sequence
    token: tuple[int, str] | None = None  # (index, text delta)
    progress: tuple[float, str] | None = None
    outcome: GenerationResult | GeneratorError | None = None


def timed_out(seq: Sequence) -> GeneratorError:
    return GeneratorError("the job ran past its time limit", code="timeout")
