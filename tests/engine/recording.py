"""An engine's `emit` for tests: every output it emits, in emission order."""

from __future__ import annotations

import threading

from generators.engine.sequence import Output, Sequence


class Recorder:
    """Every output the engine emits, in emission order."""

    def __init__(self) -> None:
        self.outputs: list[Output] = []
        self.lock = threading.Lock()

    def __call__(self, outputs: list[Output]) -> None:
        with self.lock:
            self.outputs.extend(outputs)

    def tokens(self, seq: Sequence) -> list[tuple[int, str]]:
        with self.lock:
            return [o.token for o in self.outputs if o.seq is seq and o.token is not None]

    def outcome_at(self, seq: Sequence) -> int:
        """Where the job's outcome sits in the event order."""
        with self.lock:
            return next(i for i, o in enumerate(self.outputs) if o.seq is seq and o.outcome is not None)
