"""Engines: one thread per loaded model that turns submitted sequences into outputs, step by step.

`StepEngine` serves plugins with a step runner (iteration-level scheduling: jobs join and leave the running batch
between steps). `PassEngine` serves every other plugin: it runs one `generate_batch` (or `generate`) pass at a time
over compatible waiting jobs. Both take work through `submit`, stop work through `Sequence.cancel`, and send
everything they produce one way, through `emit`; a sequence's future resolves after its outputs were emitted.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from generators.base import BatchItem, GenerationContext, GenerationResult, Generator
from generators.engine.scheduler import Scheduler
from generators.engine.sequence import Output, Sequence, timed_out
from generators.errors import GeneratorError, JobCancelled

log = logging.getLogger(__name__)

Emit = Callable[[list[Output]], None]


class StepRunner(Protocol):
    """What a plugin returns from `Generator.create_runner()` to be served by a StepEngine."""

    def prepare(self, seq: Sequence) -> None: ...  # tokenize, set seq.cost; raise GeneratorError to refuse
    def footprint(self, rows: list[Sequence]) -> int: ...  # KV token slots these rows may need together
    def kv_bytes_per_token(self) -> int: ...
    def step(self, joining: list[Sequence], leaving: list[Sequence]) -> list[Output]: ...
    def reset(self) -> None: ...  # forget every row (after a failed step)


def emit_then_resolve(emit: Emit, name: str, outputs: list[Output]) -> None:
    """Emit the outputs, then resolve the futures of those that carry an outcome (a job's events go out first)."""
    try:
        emit(outputs)
    except Exception:  # noqa: BLE001 - events are best effort; outcomes below still resolve
        log.exception("engine %s could not emit %d outputs", name, len(outputs))
    for out in outputs:
        if out.outcome is not None and not out.seq.future.done():
            out.seq.future.set_result(out.outcome)


def stopped(seq: Sequence) -> GeneratorError:
    return JobCancelled("the job was cancelled") if seq.cancelled else timed_out(seq)


class _EngineThread:
    """The inbox, the thread and the counters both engines share."""

    def __init__(self, name: str, emit: Emit) -> None:
        self.name = name
        self.emit_to = emit
        self._inbox: list[Sequence] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps_total = 0
        self.rows_total = 0
        self.step_seconds_total = 0.0
        self.emit_seconds_total = 0.0  # handing outputs on (an engine process's pipe)
        self.tokens_total = 0
        self.items_total = 0

    def submit(self, seq: Sequence) -> Sequence:
        with self._wake:
            if self._stopping:
                raise RuntimeError(f"engine {self.name} is stopped")
            seq.context = seq.context or contextvars.copy_context()
            self._inbox.append(seq)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"engine:{self.name}", daemon=True)
                self._thread.start()
            self._wake.notify()
        return seq

    @property
    def stopped(self) -> bool:
        return self._stopping

    def wake(self) -> None:
        with self._wake:
            self._wake.notify()

    def stop(self, timeout: float = 30) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _take(self, idle: Callable[[], bool], poll: float) -> list[Sequence] | None:
        """New sequences; waits while there is nothing to do. None once stopping."""
        with self._wake:
            while not self._inbox and idle() and not self._stopping:
                self._wake.wait(poll)
            if self._stopping:
                return None
            taken, self._inbox = self._inbox, []
            return taken

    def _emit(self, outputs: list[Output]) -> None:
        if not outputs:
            return
        for out in outputs:  # counted first: an emit that reports the counters (ProcessEngine's child) has them
            if out.token is not None:
                self.tokens_total += 1
            if out.outcome is not None and not out.seq.future.done():
                self.items_total += 1
        started = time.perf_counter()
        emit_then_resolve(self.emit_to, self.name, outputs)
        self.emit_seconds_total += time.perf_counter() - started

    def _run(self) -> None:
        try:
            self.loop()
        except Exception:  # noqa: BLE001 - never leave a waiting job without an outcome
            log.exception("engine %s stopped on an error", self.name)
        finally:
            for seq in self.abandon():
                if not seq.future.done():
                    seq.future.set_result(GeneratorError("the engine stopped", code="engine_stopped"))

    def loop(self) -> None:
        raise NotImplementedError

    def abandon(self) -> list[Sequence]:
        """Every sequence this engine still holds; it takes no more (a later `submit` raises)."""
        with self._wake:
            self._stopping = True
            left, self._inbox = self._inbox, []
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None:
            left += scheduler.drop_waiting(lambda s: False) + list(scheduler.running)
        return left


class StepEngine(_EngineThread):
    """Iteration-level scheduling over a StepRunner."""

    def __init__(
        self,
        runner: StepRunner,
        *,
        budget_tokens: int,
        max_rows: int,
        emit: Emit,
        name: str = "",
        emit_linger: float = 0.0,
    ) -> None:
        super().__init__(name, emit)
        self.runner = runner
        # Where a serving step's time goes besides the runner's step: steps that prefilled joining rows (and their
        # seconds, included in step_seconds_total), and seconds from one step's start to the next while rows ran
        # (the step plus all the loop does between).
        self.prefill_steps_total = 0
        self.prefill_step_seconds_total = 0.0
        self.loop_seconds_total = 0.0
        # Outputs of successive steps may be held up to this long and emitted together, where each emit costs
        # (a pipe message from an engine process). A job's first token and every outcome go out at once.
        self.emit_linger = emit_linger
        reserve = getattr(runner, "reserve", None)  # a runner that preallocates its cache sizes it from the budget
        if reserve is not None:
            budget_tokens = reserve(budget_tokens, max_rows)
        self.scheduler = Scheduler(
            budget_tokens=budget_tokens,
            max_rows=max_rows,
            footprint=runner.footprint,
            step_seconds=self.decode_step_seconds,
        )

    def decode_step_seconds(self) -> float:
        """The mean step without a prefill, as measured so far (0 before the first): what a job's `steps` take."""
        steps = self.steps_total - self.prefill_steps_total
        return (self.step_seconds_total - self.prefill_step_seconds_total) / steps if steps > 0 else 0.0

    def stats(self) -> dict[str, Any]:
        running = list(self.scheduler.running)
        try:
            used = self.runner.footprint(running)
        except Exception:  # noqa: BLE001 - read from another thread while a step changes the frame
            used = sum(s.cost for s in running)
        return {
            "running": len(running),
            "waiting": self.scheduler.waiting_count + len(self._inbox),
            "kv_budget_tokens": self.scheduler.budget_tokens,
            # The most one job may hold: the whole budget, or one slot where the runner preallocates per row.
            "kv_row_tokens": getattr(self.runner, "row_tokens", self.scheduler.budget_tokens),
            "kv_used_tokens": used,
            "max_rows": self.scheduler.max_rows,
            "steps_total": self.steps_total,
            "rows_total": self.rows_total,  # rows summed over steps: / steps_total = the mean batch
            "step_seconds_total": round(self.step_seconds_total, 6),  # / steps_total = the mean step time
            "prefill_steps_total": self.prefill_steps_total,
            "prefill_step_seconds_total": round(self.prefill_step_seconds_total, 6),
            "emit_seconds_total": round(self.emit_seconds_total, 6),
            "loop_seconds_total": round(self.loop_seconds_total, 6),
            "tokens_total": self.tokens_total,
            "items_total": self.items_total,
        }

    def loop(self) -> None:
        scheduler = self.scheduler
        last_step: float | None = None  # when the previous step started, while rows were running
        held: list[Output] = []  # emitted with a later step's outputs (emit_linger)
        held_since = 0.0
        while (incoming := self._take(lambda: scheduler.idle, poll=0.5)) is not None:
            outputs: list[Output] = held
            holding = bool(held)
            for seq in incoming:
                refusal = self._admit(seq)
                if refusal is not None:
                    outputs.append(Output(seq, outcome=refusal))
            for seq in scheduler.drop_waiting(lambda s: not (s.cancelled or s.expired)):
                outputs.append(Output(seq, outcome=stopped(seq)))
            for seq in [s for s in scheduler.running if s.cancelled or s.expired]:
                scheduler.finish(seq)  # leaves at this step boundary; the others go on
                outputs.append(Output(seq, outcome=stopped(seq)))
            plan = scheduler.plan()
            fresh: list[Output] = []
            if plan.joining or plan.leaving or scheduler.running:
                started = time.perf_counter()
                if last_step is not None:
                    self.loop_seconds_total += started - last_step
                fresh = self._step(plan.joining, plan.leaving)
                outputs.extend(fresh)
                last_step = started if scheduler.running else None
            if not outputs:
                continue
            now = time.monotonic()
            held_since = held_since if holding else now
            if (
                scheduler.idle  # nothing more will step: nothing may wait for a later emit
                or now - held_since >= self.emit_linger
                or any(out.outcome is not None for out in outputs)
                or any(out.token is not None and out.token[0] == 0 for out in fresh)  # a first token
            ):
                self._emit(outputs)
                held = []
            else:
                held = outputs

    def _admit(self, seq: Sequence) -> GeneratorError | None:
        try:
            self.runner.prepare(seq)
        except Exception as exc:  # noqa: BLE001 - one job's bad input (a schema, a tokenizer error) fails it alone
            return _as_error(exc)
        if not self.scheduler.fits_ever(seq):
            return GeneratorError(
                f"the prompt and `max_new_tokens` need {self.runner.footprint([seq])} KV-cache token slots, over "
                f"this engine's budget of {self.scheduler.budget_tokens}",
                code="context_exceeds_kv_budget",
            )
        self.scheduler.add(seq)
        return None

    def _step(self, joining: list[Sequence], leaving: list[Sequence]) -> list[Output]:
        started = time.perf_counter()
        try:
            outputs = self.runner.step(joining, leaving)
        except Exception as exc:  # noqa: BLE001 - a failed step fails its rows, the engine serves on
            from hardware.oom import is_oom

            log.exception("engine %s: a step failed", self.name)
            code = "out_of_memory" if is_oom(exc) else "internal_error"
            error = GeneratorError(f"{type(exc).__name__}: {exc}", code=code)
            rows = list(self.scheduler.running)
            for seq in rows:
                self.scheduler.finish(seq)
            self.scheduler.plan()  # they leave now: the runner forgets every row
            self.runner.reset()
            del exc
            return [Output(seq, outcome=error) for seq in rows]
        if self.scheduler.running:  # a step that only let rows go (the last one cancelled) decoded nothing
            seconds = time.perf_counter() - started
            self.steps_total += 1
            self.rows_total += len(self.scheduler.running)
            self.step_seconds_total += seconds
            if joining:
                self.prefill_steps_total += 1
                self.prefill_step_seconds_total += seconds
        for out in outputs:
            if out.outcome is not None:
                self.scheduler.finish(out.seq)
        return outputs


class _PassContext(GenerationContext):
    """Progress of one pass item goes out as an event; cancellation and the deadline are the sequence's."""

    def __init__(self, engine: PassEngine, seq: Sequence, generator: Generator) -> None:
        self.engine, self.seq = engine, seq
        self.job_id = seq.id
        self.device = generator.device  # type: ignore[assignment]
        self._last = 0.0

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last >= 0.2 or fraction >= 1.0:
            self._last = now
            self.engine._emit([Output(self.seq, progress=(max(0.0, min(1.0, float(fraction))), message[:200]))])

    def cancelled(self) -> bool:
        return self.seq.cancelled or self.seq.expired


class PassEngine(_EngineThread):
    """One pass at a time over compatible waiting jobs (equal `batch_key`, up to `max_batch_size`), fair by tenant."""

    def __init__(self, generator: Generator, *, emit: Emit, name: str = "") -> None:
        super().__init__(name, emit)
        self.generator = generator
        self.scheduler = Scheduler(budget_tokens=1, max_rows=1, footprint=lambda rows: 0)
        self.running = 0

    def stats(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "waiting": self.scheduler.waiting_count + len(self._inbox),
            "kv_budget_tokens": 0,
            "kv_used_tokens": 0,
            "max_rows": type(self.generator).max_batch_size,
            "steps_total": self.steps_total,
            "rows_total": self.rows_total,  # rows summed over steps: / steps_total = the mean batch
            "step_seconds_total": round(self.step_seconds_total, 6),  # / steps_total = the mean step time
            "tokens_total": self.tokens_total,
            "items_total": self.items_total,
        }

    def loop(self) -> None:
        scheduler = self.scheduler
        while (incoming := self._take(lambda: not scheduler.waiting, poll=0.5)) is not None:
            for seq in incoming:
                scheduler.add(seq)
            self._emit(
                [
                    Output(s, outcome=stopped(s))
                    for s in scheduler.drop_waiting(lambda s: not (s.cancelled or s.expired))
                ]
            )
            first = scheduler.next_waiting()  # the next tenant's oldest job, in round-robin order
            if first is not None:
                self._pass([first, *self._companions(first)])

    def _companions(self, seq: Sequence) -> list[Sequence]:
        size = type(self.generator).max_batch_size
        key = self.generator.batch_key(seq.params) if size > 1 else None
        if key is None:
            return []
        chosen: list[Sequence] = []
        for tenant in list(self.scheduler.waiting):
            for other in list(self.scheduler.waiting[tenant]):
                if len(chosen) == size - 1:
                    break
                if self.generator.batch_key(other.params) == key:
                    chosen.append(other)
        self.scheduler.drop_waiting(lambda s: s not in chosen)
        return chosen

    def _pass(self, seqs: list[Sequence]) -> None:
        items = [BatchItem(params=s.params, ctx=_PassContext(self, s, self.generator)) for s in seqs]
        self.running = len(seqs)
        try:
            if len(items) == 1:  # one job: the plugin's log lines carry that job's fields (its submitter's context)
                context = seqs[0].context or contextvars.copy_context()
                results: list[GenerationResult | GeneratorError] = [context.run(self._one, items[0])]
            else:
                results = list(self.generator.generate_batch(items))
                if len(results) != len(items):
                    raise GeneratorError(
                        f"plugin {self.generator.name!r} returned {len(results)} results for {len(items)} jobs",
                        code="plugin_contract_broken",
                    )
        except Exception as exc:  # noqa: BLE001 - the pass's jobs record the failure; the engine serves on
            results = [_as_error(exc)] * len(items)
            del exc
        finally:
            self.running = 0
        self.steps_total += 1
        outcomes = []
        for seq, result in zip(seqs, results, strict=True):
            if isinstance(result, JobCancelled) and seq.expired and not seq.cancelled:
                result = timed_out(seq)
            if isinstance(result, GeneratorError):
                result = detached(result)
            outcomes.append(Output(seq, outcome=result))
        self._emit(outcomes)

    def _one(self, item: BatchItem) -> GenerationResult | GeneratorError:
        try:
            return self.generator.generate(item.params, item.ctx)
        except GeneratorError as exc:
            return detached(exc)


def detached(error: GeneratorError) -> GeneratorError:
    """The error without its traceback and chained causes: they hold the failed pass's frames (the plugin,
    its activations), which must not outlive the pass, above all while an out-of-memory retry loads again."""
    error.__traceback__ = error.__cause__ = error.__context__ = None
    return error


def _as_error(exc: BaseException) -> GeneratorError:
    """Any failure as a GeneratorError with a code; out-of-memory and device errors keep theirs."""
    from hardware.oom import is_oom

    if isinstance(exc, GeneratorError):
        return detached(exc)
    if is_oom(exc):
        return GeneratorError(f"the device ran out of memory: {exc}", code="out_of_memory")
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return GeneratorError(getattr(exc, "message", str(exc)), code=code)
    log.error("a pass failed", exc_info=exc)
    return GeneratorError(f"{type(exc).__name__}: {exc}", code="internal_error")
