"""The engines of one worker process: one per loaded (plugin, config, device), kept in the model cache.

A task thread hands its claimed job to the engine and waits for the outcome, renewing the job's lease and
writing a coarse progress while it waits. Engines emit token and progress events straight to the job's Redis
stream; the database sees the claim and the outcome, nothing per step.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.db import connection

from aigc_saas.jobs import events, services
from aigc_saas.jobs.models import Job
from aigc_saas.plugins.services import config_fingerprint
from generators.base import Generator, GeneratorConfig
from generators.engine.loop import PassEngine, StepEngine
from generators.engine.process import ProcessEngine, warm
from generators.engine.sequence import Output, Sequence
from generators.errors import GeneratorError
from generators.registry import PluginInfo
from hardware import DeviceChoice
from hardware.kv import kv_budget_tokens
from hardware.memory import module_bytes
from hardware.oom import free_device

log = logging.getLogger(__name__)

TICK_SECONDS = 2.0  # how often a waiting task thread writes coarse progress and looks at its lease


class Served:
    """What the model cache holds: a loaded plugin and the engine serving it; eviction stops both.

    `generator` None: the plugin is loaded in an engine process of its own (`ProcessEngine`), not here."""

    def __init__(
        self, info: PluginInfo, config: GeneratorConfig, device: DeviceChoice, generator: Generator | None
    ) -> None:
        self.info, self.config, self.device, self.generator = info, config, device, generator
        self.took_jobs = False  # until its first jobs are handed over (`_serve`)
        name = f"{info.name}:{config.model_id}@{device.device}"
        if generator is None:
            self.components: dict[str, Any] = {}
            self.engine: StepEngine | PassEngine | ProcessEngine = ProcessEngine(
                info.cls,
                config,
                device,
                max_rows=settings.AIGC_ENGINE_MAX_ROWS,
                budget=kv_budget_tokens,
                emit=publish_outputs,
                name=name,
            )
            return
        self.components = vars(generator)  # lets the cache measure the plugin's torch modules
        runner = generator.create_runner()
        if runner is None:
            self.engine = PassEngine(generator, emit=publish_outputs, name=name)
        else:
            budget = kv_budget_tokens(device.device, runner.kv_bytes_per_token())
            self.engine = StepEngine(
                runner, budget_tokens=budget, max_rows=settings.AIGC_ENGINE_MAX_ROWS, emit=publish_outputs, name=name
            )

    def busy(self) -> bool:
        """Jobs are running in its engine or waiting for rows there: the model cache does not evict it (that
        would fail them all); a load that needs its room waits for it to drain."""
        stats = self.engine.stats()
        return stats.get("running", 0) + stats.get("waiting", 0) > 0

    def describe(self) -> dict[str, Any]:
        return {
            "generator": self.info.name,
            "model_id": self.config.model_id,
            "device": self.device.device,
            "kind": type(self.engine).__name__,
            **self.engine.stats(),
        }

    def size_bytes(self, estimate: int) -> int:
        """What the model cache counts for it: the weights the engine process reported, else those held here."""
        if isinstance(self.engine, ProcessEngine):
            return self.engine.model_bytes or estimate
        return module_bytes(self) or estimate

    def teardown(self) -> None:
        self.engine.stop()
        if self.generator is not None:
            self.generator.teardown()


def release_connection() -> None:
    """Give this thread's database connection back while it only waits (not inside a transaction)."""
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()


# What this process serves, for reports; weak, so an engine the model cache evicted is not kept alive here.
_served: weakref.WeakValueDictionary[Any, Served] = weakref.WeakValueDictionary()
_served_lock = threading.Lock()
_live: dict[str, Sequence] = {}  # job id -> its sequence, while an engine holds it
_progress: dict[str, tuple[float, str]] = {}  # job id -> latest progress, written to the row coarsely


def served(info: PluginInfo, config: GeneratorConfig, device: DeviceChoice) -> Served:
    """The engine for this plugin, config and device, loading the plugin once per process."""
    from aigc_saas.jobs.runtime import model_cache

    key = (info.name, info.version, config_fingerprint(config), device.device, device.dtype, device.low_memory)

    def load() -> Served:
        if in_own_process(info):
            return Served(info, config, device, None)
        generator = info.cls(config)
        generator.setup(device)
        return Served(info, config, device, generator)

    cache = model_cache()
    estimate = info.cls.needs.memory_mb * 1024 * 1024
    options = {
        "device": device.device,
        "estimate_bytes": estimate,
        "measure": lambda s: s.size_bytes(estimate),
        # Engines busy with jobs are not evicted: the load waits for them to drain, at most as long as a job may run.
        "wait_seconds": settings.AIGC_JOB_TIME_LIMIT,
    }
    value = cache.get_or_load(key, load, **options)
    if value.engine.stopped:  # its loop (or process) died on an error it could not survive: load it afresh
        cache.evict(key)
        value = cache.get_or_load(key, load, **options)
    with _served_lock:
        _served[key] = value
    return value


def in_own_process(info: PluginInfo) -> bool:
    """Whether this plugin's engine runs in a process of its own: a step-runner plugin, with
    AIGC_ENGINE_PROCESS on (the engine then has a GIL to itself; see generators/engine/process.py)."""
    return settings.AIGC_ENGINE_PROCESS and info.cls.create_runner is not Generator.create_runner


def warm_engine_processes() -> None:
    """Start what engine processes are made from, before the first text job needs one."""
    try:
        warm()
    except Exception:  # noqa: BLE001 - the first engine starts it then, and says why if it cannot
        log.exception("could not start the engine processes' fork server")


def snapshot() -> list[dict[str, Any]]:
    """Each engine of this process: capacity and load (for metrics and the worker's status row); `draining`: a
    model waits to load in its room, so claims take no new jobs for it."""
    from aigc_saas.jobs.runtime import model_cache

    cache = model_cache()
    with _served_lock:
        served_now = list(_served.items())
    return [{**s.describe(), "draining": cache.draining(key)} for key, s in served_now if key in cache]


class Publisher:
    """Sends engine events to Redis from its own thread, so a step never waits on a network round trip.

    It lingers `LINGER_SECONDS` after the first pending event so that several steps share one pipeline: sending
    costs Python time under the same GIL the engine needs, and per step it cost a one-row job a third of its speed.
    Events keep their order; `flush()` sends at once and returns when everything handed over before the call is
    out, which the task thread awaits before recording the outcome, so a job's `end` follows its last token.

    A job's tokens that wait together go out as one `token` event (their texts joined; `index` counts the job's
    token events): a stream event per token cost Redis, the web server and every SSE client one message each,
    for a delta of a few characters.
    """

    LINGER_SECONDS = 0.02

    def __init__(self) -> None:
        self._pending: list[tuple[str, str, dict[str, Any]]] = []
        self._chunks: dict[str, int] = {}  # job id -> token events sent so far
        self._forgotten: list[tuple[int, str]] = []  # (events queued when the job ended, job id)
        self._queued = self._sent = 0
        self._hurry = 0  # flushes waiting: send without lingering
        self._urgent = False  # a first token is pending: send without lingering
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, batch: list[tuple[str, str, dict[str, Any]]], urgent: bool = False) -> None:
        """`urgent`: send without lingering (a job's first token: the time to it is what a streaming user waits)."""
        with self._cond:
            self._urgent = self._urgent or urgent
            first = not self._pending or urgent
            self._pending.extend(batch)
            self._queued += len(batch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="aigc-event-publisher", daemon=True)
                self._thread.start()
            if first:  # wake the sender for the first event only: waking it on every step, to linger again, cost
                self._cond.notify_all()  # the engine's thread a GIL hand-over per step

    def flush(self, timeout: float = 10.0) -> None:
        with self._cond:
            target = self._queued
            self._hurry += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: self._sent >= target, timeout)
            finally:
                self._hurry -= 1

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
                self._cond.wait_for(lambda: self._hurry > 0 or self._urgent, self.LINGER_SECONDS)  # more steps join
                batch, self._pending, self._urgent = self._pending, [], False
                merged = self._coalesce(batch)
            events.publish_many(merged)  # one pipeline for everything the engines emitted meanwhile
            with self._cond:
                self._sent += len(batch)
                self._drop_forgotten()
                self._cond.notify_all()

    def _coalesce(self, batch: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str, dict[str, Any]]]:
        """Each run of a job's consecutive tokens (no other event of that job between them) as one event."""
        merged: list[tuple[str, str, dict[str, Any]]] = []
        open_token: dict[str, dict[str, Any]] = {}  # job id -> its token event still open for more text
        for job_id, event, data in batch:
            if event != "token":
                open_token.pop(job_id, None)
                merged.append((job_id, event, data))
            elif (current := open_token.get(job_id)) is not None:
                current["text"] += data["text"]
            else:
                index = self._chunks.get(job_id, 0)
                self._chunks[job_id] = index + 1
                open_token[job_id] = {"index": index, "text": data["text"]}
                merged.append((job_id, event, open_token[job_id]))
        return merged

    def forget(self, job_id: str) -> None:
        """The job is over: drop its token count once everything it handed over has been sent."""
        with self._cond:
            if self._sent >= self._queued:
                self._chunks.pop(job_id, None)
            else:
                self._forgotten.append((self._queued, job_id))

    def _drop_forgotten(self) -> None:
        while self._forgotten and self._forgotten[0][0] <= self._sent:
            self._chunks.pop(self._forgotten.pop(0)[1], None)


publisher = Publisher()


def publish_outputs(outputs: list[Output]) -> None:
    """One engine step's events, handed to the publisher; outcomes resolve the waiting task threads."""
    batch = []
    urgent = False
    for out in outputs:
        if out.token is not None:
            batch.append((out.seq.id, "token", {"text": out.token[1]}))  # the publisher numbers the events
            urgent = urgent or out.token[0] == 0
        if out.progress is not None:
            _progress[out.seq.id] = out.progress
            batch.append((out.seq.id, "progress", {"fraction": out.progress[0], "message": out.progress[1]}))
    if batch:
        publisher.put(batch, urgent)


def cancel(job_id: str) -> bool:
    """Stop a job this process runs at its engine's next step (from the Redis cancel broadcast)."""
    seq = _live.get(str(job_id))
    if seq is None:
        return False
    seq.cancel()
    return True


@dataclass
class Claimed:
    """A claimed job, resolved: what its engine needs to run it."""

    job: Job
    info: PluginInfo
    config: GeneratorConfig
    device: DeviceChoice
    params: Any


def run_many(claimed: list[Claimed]) -> Iterator[tuple[Job, Any]]:
    """Run claimed jobs on their engines together; yields (job, outcome) as each ends, where the outcome is a
    result, an error, or None when this attempt lost the job (its lease was taken over: it writes nothing).

    The jobs join their engines at once (one batch, one prefill), and this thread keeps all their leases,
    cancel checks and coarse progress. A job that ran out of device memory is retried once in low-memory mode
    when the others are done, with the device freed first."""
    loaded: list[tuple[Claimed, Served]] = []
    for item, target in _load(claimed):
        if isinstance(target, Served):
            loaded.append((item, target))
        else:
            yield item.job, target
    out_of_memory: list[Claimed] = []
    parked: list[Job] = []  # their leases are kept while the others finish (`renewing` reads the list as it grows)
    with renewing(parked):
        for item, outcome in _serve(loaded):
            if isinstance(outcome, GeneratorError) and outcome.code == "out_of_memory" and not item.device.low_memory:
                out_of_memory.append(item)
                parked.append(item.job)
            else:
                yield item.job, outcome
    if out_of_memory:
        # Nothing of the failed attempt may stay referenced while the retry loads: the engines and plugins too.
        del loaded, item, target, outcome
        yield from _retry_in_low_memory(out_of_memory)


def _load(items: list[Claimed]) -> Iterator[tuple[Claimed, Served | BaseException]]:
    """Each job's engine, loading its plugin where needed (their leases renewed meanwhile); a failed load is that
    job's outcome, and the others go on."""
    with renewing([item.job for item in items]):
        for item in items:
            try:
                target: Served | BaseException = served(item.info, item.config, item.device)
            except Exception as exc:  # noqa: BLE001 - this job fails; the others go on
                target = exc
            yield item, target


def _retry_in_low_memory(items: list[Claimed]) -> Iterator[tuple[Job, Any]]:
    from aigc_saas.jobs.runtime import model_cache

    devices = {item.device.device for item in items}
    log.warning("%d jobs ran out of memory on %s; retrying once in low-memory mode", len(items), sorted(devices))
    for device in devices:
        free_device(device, model_cache())
    low = [Claimed(i.job, i.info, i.config, replace(i.device, low_memory=True), i.params) for i in items]
    loaded = []
    for item, target in _load(low):
        if isinstance(target, Served):
            loaded.append((item, target))
        else:
            yield item.job, target
    for item, outcome in _serve(loaded):
        yield item.job, outcome


def _serve(loaded: list[tuple[Claimed, Served]]) -> Iterator[tuple[Claimed, Any]]:
    """Submit the jobs to their engines and wait for them, keeping their leases; yields (item, outcome)."""
    running: dict[str, tuple[Claimed, Served, Sequence]] = {}
    for item, target in loaded:
        seq = Sequence(
            id=str(item.job.pk),
            params=item.params,
            tenant=str(item.job.tenant_id),
            deadline=time.monotonic() + settings.AIGC_JOB_TIME_LIMIT,
            steps=item.job.steps,
        )
        running[seq.id] = (item, target, seq)
        _live[seq.id] = seq
    try:
        for job_id in services.cancel_requested_among(list(running)):
            running[str(job_id)][2].cancel()
        for job_id, (item, target, seq) in list(running.items()):
            try:
                if target.engine.stopped:
                    # Evicted since `_load` found it idle: load it again. The load may wait for room (busy engines
                    # drain first), so this claim's leases are kept meanwhile.
                    with renewing([i.job for i, _, _ in running.values()]):
                        target = served(item.info, item.config, item.device)
                    running[job_id] = (item, target, seq)
                target.engine.submit(seq)
            except Exception as exc:  # noqa: BLE001 - an engine that stopped meanwhile fails its job alone
                del running[job_id]
                _forget(job_id)
                yield item, exc
        _handed_over(running)
        release_connection()  # do not sit on a database connection while the engines work
        yield from _await(running)
    finally:
        for job_id in list(running):
            _forget(job_id)


def _handed_over(running: dict[str, tuple[Claimed, Served, Sequence]]) -> None:
    """Tell the worker's claims that the engines hold these jobs now (their rows count in `snapshot`), and whether
    an engine took its first ones: it has just loaded, and the jobs claims left queued for it may fit now."""
    from aigc_saas.jobs.runtime import handed_over

    new_engine = False
    for _, target, _ in running.values():
        new_engine = new_engine or not target.took_jobs
        target.took_jobs = True
    handed_over(list(running), new_engine)


def _await(running: dict[str, tuple[Claimed, Served, Sequence]]) -> Iterator[tuple[Claimed, Any]]:
    written: dict[str, tuple[float, str]] = {}
    last_renewal = time.monotonic()
    while running:
        futures = {seq.future: job_id for job_id, (_, _, seq) in running.items()}
        timeout = min(TICK_SECONDS, settings.AIGC_LEASE_SECONDS / 3)
        done, _ = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        if done:
            publisher.flush()  # their last tokens are out before their outcomes are recorded
        for future in done:
            item, _, seq = running.pop(futures[future])
            _forget(seq.id)
            yield item, future.result()
        now = time.monotonic()
        for job_id, (item, _, seq) in list(running.items()):
            if seq.deadline is not None and now > seq.deadline + 60:  # the engine itself is stuck
                seq.cancel()
                del running[job_id]
                _forget(job_id)
                yield (
                    item,
                    GeneratorError("the job ran past its time limit and its engine did not stop it", code="timeout"),
                )
        if running and now - last_renewal >= settings.AIGC_LEASE_SECONDS / 3:
            last_renewal = now
            for job_id, (item, _, seq) in list(running.items()):
                if not services.renew_lease(item.job):
                    log.warning("job %s was taken over by another attempt; this one stops", job_id)
                    seq.cancel()
                    del running[job_id]
                    _forget(job_id)
                    yield item, None
            for job_id in services.cancel_requested_among(list(running)):  # a broadcast may have been missed
                _, target, seq = running[str(job_id)]
                seq.cancel()
                target.engine.wake()
        for job_id, (item, _, _) in running.items():
            current = _progress.get(job_id)
            if current is not None and current != written.get(job_id):
                written[job_id] = current
                services.report_progress(item.job, *current)


def _forget(job_id: str) -> None:
    _live.pop(job_id, None)
    _progress.pop(job_id, None)
    publisher.forget(job_id)


@contextmanager
def renewing(jobs: list[Job]) -> Iterator[None]:
    """Keep the jobs' leases while the block runs (a model load can take longer than a lease)."""
    done = threading.Event()

    def renew() -> None:
        try:
            while not done.wait(settings.AIGC_LEASE_SECONDS / 3):
                for job in list(jobs):
                    services.renew_lease(job)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=renew, name=f"lease:{jobs[0].pk if jobs else '-'}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
