"""A StepEngine in a process of its own, driven from the worker through a pipe (vLLM's engine-core split).

Why: an engine thread shares its process's GIL with everything else the worker runs in Python (claims and
finishes through the ORM, Celery's consumer, the event sender), and a torch step gives the GIL up and takes it
back at every operator. Measured in-process (bench part F), one Python thread busy 30 % of the time beside the
engine of 32 jobs cost it 40-48 % of its tokens/s, four such threads 84-94 %. In its own process the engine's
thread has a GIL to itself; the worker keeps the jobs, the database and Redis.

What crosses the pipe, one way each: jobs in (`submit`, `cancel`, `stop`), outputs out (token deltas, progress,
outcomes, and the engine's counters). The parent turns outputs back into `Output`s of its own sequences and emits
them as an in-process engine would, so callers see the same interface (`submit`, `wake`, `stop`, `stopped`,
`stats`, `abandon`) and the same futures.

The child is made from a fork server (`multiprocessing`'s "forkserver"), never by forking the worker itself, whose
threads hold locks and whose torch may have started OpenMP or CUDA. It needs the plugin class (imported there by
name), its config and the device choice; it loads the plugin, builds the runner and sizes the engine there.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from generators.engine.loop import emit_then_resolve
from generators.engine.sequence import Output, Sequence
from generators.errors import GeneratorError

log = logging.getLogger(__name__)

# Modules the fork server imports once, so each engine process starts without importing torch again.
PRELOAD = ["torch", "transformers", "generators.engine.loop"]
STATS_SECONDS = 0.25  # how often the counters ride along with the outputs (and always with an outcome)
# Each step's outputs were one pipe message: pickled, sent and read back by the worker, a few tens of microseconds a
# step on each side. Steps of a few rows take under a millisecond, so the engine process sends what several steps
# emitted together, at most this much later (first tokens and outcomes at once). The worker's event publisher
# lingers 20 ms before it writes to Redis anyway, so a client sees the same stream.
EMIT_LINGER_SECONDS = 0.005

_context_lock = threading.Lock()
_context: Any = None


def _mp() -> Any:
    global _context
    with _context_lock:
        if _context is None:
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(PRELOAD)
        return _context


def warm() -> None:
    """Start the fork server now (importing torch and transformers there takes seconds), so the first engine
    process starts without that wait. A generation worker calls it at start-up, from a thread of its own."""
    from multiprocessing import forkserver

    _mp()
    forkserver.ensure_running()


class ProcessEngine:
    """The parent's side: same interface as `StepEngine`, outputs emitted through `emit` in this process."""

    def __init__(
        self,
        plugin: type,
        config: Any,
        device: Any,
        *,
        max_rows: int,
        budget: Callable[[str, int], int],
        emit: Callable[[list[Output]], None],
        name: str = "",
        start_timeout: float = 600.0,
    ) -> None:
        self.name = name
        self.emit_to = emit
        self._live: dict[str, Sequence] = {}
        self._cancels_sent: set[str] = set()
        self._lock = threading.Lock()  # the pipe's send side and `_live`
        self._stopping = False
        self._stats: dict[str, Any] = {}
        self.model_bytes = 0
        context = _mp()
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_child_main,
            args=(child_conn, plugin, config, device, max_rows, budget),
            name=f"engine:{name}",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        if not self._conn.poll(start_timeout):
            self._process.kill()
            raise GeneratorError(f"the engine process for {name} did not start in {start_timeout:.0f} s")
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            raise GeneratorError(f"the engine process for {name} exited while loading") from None
        if kind == "failed":
            self._process.join(5)
            raise payload
        self.model_bytes, self._stats = payload["model_bytes"], payload["stats"]
        self._reader = threading.Thread(target=self._read, name=f"engine-pipe:{name}", daemon=True)
        self._reader.start()

    # -- the StepEngine interface --------------------------------------------------------------------------
    def submit(self, seq: Sequence) -> Sequence:
        with self._lock:
            if self._stopping:
                raise RuntimeError(f"engine {self.name} is stopped")
            self._live[seq.id] = seq
            self._conn.send(("submit", seq.id, seq.params, seq.tenant, seq.deadline, seq.steps))
        return seq

    def wake(self) -> None:
        self._send_cancels()

    @property
    def stopped(self) -> bool:
        return self._stopping

    def stats(self) -> dict[str, Any]:
        """The child's latest counters; `running` and `waiting` from the jobs this side holds, which include those
        sent since (a worker sizing its next claim must count them)."""
        stats = dict(self._stats)
        with self._lock:
            live = len(self._live)
        stats["running"] = min(stats.get("running", 0), live)
        stats["waiting"] = live - stats["running"]
        return stats

    def stop(self, timeout: float = 30) -> None:
        with self._lock:
            if not self._stopping:
                self._stopping = True
                with contextlib.suppress(OSError):
                    self._conn.send(("stop",))
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._fail_live("the engine stopped")

    def abandon(self) -> list[Sequence]:
        with self._lock:
            self._stopping = True
            return list(self._live.values())

    # -- the pipe ----------------------------------------------------------------------------------------------
    def _send_cancels(self) -> None:
        with self._lock:
            for seq_id, seq in self._live.items():
                if seq.cancelled and seq_id not in self._cancels_sent:
                    self._cancels_sent.add(seq_id)
                    try:
                        self._conn.send(("cancel", seq_id))
                    except OSError:
                        return

    def _read(self) -> None:
        try:
            while True:
                if not self._conn.poll(0.05):  # a cancel asked for meanwhile goes out within 50 ms
                    self._send_cancels()
                    continue
                message = self._conn.recv()
                if message[0] == "outputs":
                    self._deliver(message[1], message[2])
                self._send_cancels()
        except (EOFError, OSError):
            pass
        finally:
            if not self._stopping and not sys.is_finalizing():
                log.error("engine process %s exited", self.name)
            self._stopping = True
            self._fail_live("the engine stopped")

    def _deliver(self, items: list[tuple], stats: dict[str, Any] | None) -> None:
        if stats is not None:
            self._stats = stats
        outputs = []
        with self._lock:
            for seq_id, token, progress, outcome in items:
                seq = self._live.get(seq_id)
                if seq is None:
                    continue
                outputs.append(Output(seq, token=token, progress=progress, outcome=outcome))
                if outcome is not None:
                    del self._live[seq_id]
                    self._cancels_sent.discard(seq_id)
        emit_then_resolve(self.emit_to, self.name, outputs)

    def _fail_live(self, message: str) -> None:
        with self._lock:
            left, self._live = list(self._live.values()), {}
        for seq in left:
            if not seq.future.done():
                seq.future.set_result(GeneratorError(message, code="engine_stopped"))


# -- the child ---------------------------------------------------------------------------------------------------
def _child_main(conn: Any, plugin: type, config: Any, device: Any, max_rows: int, budget: Callable) -> None:
    from generators.engine.loop import StepEngine
    from hardware.memory import module_bytes
    from hardware.threads import configure_cpu_threads

    configure_cpu_threads()
    send_lock = threading.Lock()
    try:
        generator = plugin(config)
        generator.setup(device)
        runner = generator.create_runner()
        sender = _Sender(conn, send_lock)
        engine = StepEngine(
            runner,
            budget_tokens=budget(device.device, runner.kv_bytes_per_token()),
            max_rows=max_rows,
            emit=sender.emit,
            name=f"{plugin.__name__}:{getattr(config, 'model_id', '')}@{device.device}",
            emit_linger=EMIT_LINGER_SECONDS,
        )
        sender.engine = engine
    except BaseException as exc:  # noqa: BLE001 - the parent raises it for the job that asked for the model
        error: BaseException = exc  # as it was (its code too: `model_load_failed`…), as a load in the worker raises
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an error that cannot cross the pipe goes as its text
            error = GeneratorError(f"{type(exc).__name__}: {exc}")
        with send_lock:
            conn.send(("failed", error))
        return
    with send_lock:
        conn.send(("ready", {"model_bytes": module_bytes(generator), "stats": engine.stats()}))
    seqs: dict[str, Sequence] = {}
    try:
        while True:
            message = conn.recv()
            if message[0] == "submit":
                _, seq_id, params, tenant, deadline, steps = message
                seqs[seq_id] = seq = Sequence(id=seq_id, params=params, tenant=tenant, deadline=deadline, steps=steps)
                seq.future.add_done_callback(lambda _, seq_id=seq_id: seqs.pop(seq_id, None))
                engine.submit(seq)
            elif message[0] == "cancel":
                seq = seqs.get(message[1])
                if seq is not None:
                    seq.cancel()
                    engine.wake()
            elif message[0] == "stop":
                break
    except (EOFError, OSError):
        pass  # the worker went away: stop serving
    finally:
        engine.stop()
        generator.teardown()


class _Sender:
    """The child's emit: each step's outputs as plain tuples, with the engine's counters now and then."""

    def __init__(self, conn: Any, lock: threading.Lock) -> None:
        self.conn, self.lock = conn, lock
        self.engine: Any = None
        self._last_stats = 0.0

    def emit(self, outputs: list[Output]) -> None:
        items = [(out.seq.id, out.token, out.progress, out.outcome) for out in outputs]
        now = time.monotonic()
        stats = None
        if self.engine is not None and (
            any(out.outcome is not None for out in outputs) or now - self._last_stats >= STATS_SECONDS
        ):
            self._last_stats = now
            stats = self.engine.stats()
        with self.lock:
            self.conn.send(("outputs", items, stats))
