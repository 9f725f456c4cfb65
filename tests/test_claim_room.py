"""A worker claims only what its engines can start: a full engine leaves jobs queued in the database (where a
worker with room can take them) and rings their queue when its rows free, free rows of one engine (a generator's
model) take no jobs of another, and a doorbell answered while a model loads waits for it instead of claiming
more."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from aigc_saas.jobs import candidates, doorbell, engine_host, events, runtime, services
from aigc_saas.jobs.models import Job
from aigc_saas.observability.metrics import broker_queue_lengths
from aigc_saas.plugins.models import PluginRecord
from aigc_saas.plugins.services import effective_config, enabled_plugin
from generators.base import GenerationResult, Generator, GeneratorConfig, Modality

TEXT, IMAGE = "transformers-text", "diffusers-image"


@pytest.fixture
def queue(django_db_blocker) -> Iterator[str]:  # noqa: ANN001
    """A queue of its own (no worker consumes it) for the text and image plugins' jobs."""
    name = f"claim-room-{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock():
        PluginRecord.objects.filter(name__in=[TEXT, IMAGE]).update(queue=name)
    yield name
    with django_db_blocker.unblock():
        PluginRecord.objects.filter(name__in=[TEXT, IMAGE]).update(queue="")
    events.client().delete(name, doorbell.key(name))
    getattr(runtime, "_owed", set()).discard(name)  # a queue this test left owed rings nowhere later


def engine_of(generator: str, model: str = "") -> tuple[str, str]:
    """The key of a claim's room: a generator and the model its engine runs (by default the plugin's)."""
    if not model:
        record, info = enabled_plugin(generator)
        model = effective_config(record, info.cls).model_id
    return generator, model


def messages(queue: str) -> int:
    """Doorbells waiting in the broker for `queue`."""
    return dict(broker_queue_lengths([queue]))[queue]


def forget_rings(queue: str) -> None:
    """Drop the submissions' own doorbells: what the broker holds from now on, the worker rang."""
    events.client().delete(queue, doorbell.key(queue))


def states(jobs: list[Job]) -> list[str]:
    by_pk = dict(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("pk", "state"))
    return [by_pk[j.pk] for j in jobs]


class Engines:
    """This process's engines as a claim sees them (`engine_host.snapshot`), and a `run_many` that takes a row of
    its generator's engine for each job it is handed, holds them until `release` is set, then frees them."""

    def __init__(self) -> None:
        self.rows: dict[str, list[int]] = {}  # generator -> [max_rows, running]
        self.ran: list[Any] = []
        self.release = threading.Event()
        self.release.set()
        self.running = threading.Event()
        self.lock = threading.Lock()

    def engine(self, generator: str, max_rows: int, running: int) -> None:
        self.rows[generator] = [max_rows, running]

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"generator": g, "model_id": engine_of(g)[1], "max_rows": m, "running": r, "waiting": 0}
                for g, (m, r) in self.rows.items()
            ]

    def run_many(self, ready: list[engine_host.Claimed]) -> Iterator[tuple[Job, Any]]:
        with self.lock:
            for item in ready:
                self.rows.setdefault(item.job.generator, [1, 0])[1] += 1
                self.ran.append(item.job.pk)
        self.running.set()
        assert self.release.wait(30)
        for item in ready:
            with self.lock:
                self.rows[item.job.generator][1] -= 1  # its row is free before its outcome is recorded
            yield item.job, GenerationResult(text="done")


@pytest.fixture
def engines(monkeypatch) -> Engines:  # noqa: ANN001
    fake = Engines()
    monkeypatch.setattr(engine_host, "snapshot", fake.snapshot)
    monkeypatch.setattr(engine_host, "run_many", fake.run_many)
    return fake


def submit(tenant, generator: str, n: int) -> list[Job]:  # noqa: ANN001
    params = {"prompt": "a mug", "max_new_tokens": 4} if generator == TEXT else {"prompt": "a mug", "steps": 1}
    return [services.submit_job(tenant, generator, params) for _ in range(n)]


@pytest.mark.django_db
def test_a_doorbell_to_a_worker_whose_engine_is_full_claims_nothing_and_rings_no_one(tenant, queue, engines) -> None:  # noqa: ANN001
    engines.engine(TEXT, max_rows=4, running=4)
    jobs = submit(tenant, TEXT, 3)
    forget_rings(queue)

    assert runtime.execute_job(str(jobs[0].pk)) == "skipped"

    assert states(jobs) == ["queued"] * 3  # not running here, leased to a worker that cannot start them
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], attempts=0, worker="").count() == 3
    assert engines.ran == []
    assert messages(queue) == 0  # no ring for another thread of this full worker to claim one more


@pytest.mark.django_db(transaction=True)  # the worker thread sees committed rows
def test_the_queue_a_full_engine_left_waiting_is_rung_when_a_job_ends_and_its_job_claimed(
    tenant, queue, engines
) -> None:  # noqa: ANN001
    engines.engine(TEXT, max_rows=1, running=0)
    first, *waiting = submit(tenant, TEXT, 3)
    forget_rings(queue)
    engines.release.clear()
    worker = threading.Thread(target=runtime.execute_job, args=(str(first.pk),))
    worker.start()
    try:
        assert engines.running.wait(30)  # the first job holds the engine's one row
        assert states([first, *waiting]) == ["running", "queued", "queued"]
        assert messages(queue) == 0  # the claim stopped for want of room: no ring to another thread

        assert runtime.execute_job("", queue) == "skipped"  # a doorbell meanwhile: still no room
        assert states(waiting) == ["queued", "queued"]
        assert messages(queue) == 0
    finally:
        engines.release.set()
        worker.join(30)

    assert states([first]) == ["succeeded"]
    assert messages(queue) == 1  # its row is free: the queue it owed is rung, once

    assert runtime.execute_job("", queue) == "succeeded"  # a worker thread answers that doorbell
    assert sorted(states(waiting)) == ["queued", "succeeded"]  # the engine has one row: one job, the other waits
    assert len(engines.ran) == 2


@pytest.mark.django_db
def test_free_text_rows_take_no_more_image_jobs_than_the_image_engine_has_room_for(tenant, queue, engines) -> None:  # noqa: ANN001
    engines.engine(TEXT, max_rows=8, running=0)
    engines.engine(IMAGE, max_rows=4, running=3)
    images = submit(tenant, IMAGE, 3)  # older: first in line
    texts = submit(tenant, TEXT, 3)

    assert runtime.execute_job("", queue) == "succeeded"

    assert states(texts) == ["succeeded"] * 3
    assert sorted(states(images)) == ["queued", "queued", "succeeded"]  # the image engine had one free row
    assert len(engines.ran) == 4


@pytest.mark.django_db
def test_a_claim_takes_at_most_each_generators_room_and_one_of_a_generator_not_loaded(tenant, queue) -> None:  # noqa: ANN001
    texts = submit(tenant, TEXT, 4)
    images = submit(tenant, IMAGE, 3)

    taken = services.claim_batch(queue, "w", limit=32, room={engine_of(TEXT): 2})

    assert sorted(j.generator for j in taken) == [IMAGE, TEXT, TEXT]
    assert sorted(states(texts)) == ["queued", "queued", "running", "running"]
    assert sorted(states(images)) == ["queued", "queued", "running"]
    assert services.claim_batch(queue, "w", limit=32, room={engine_of(TEXT): 0, engine_of(IMAGE): 0}) == []


@pytest.mark.django_db
def test_a_full_generators_backlog_longer_than_a_claims_read_hides_no_other_generators_job(
    tenant, queue, monkeypatch
) -> None:  # noqa: ANN001
    monkeypatch.setattr(candidates, "CLAIM_CANDIDATES", 4)  # a claim reads the 4 oldest, as it reads 200
    texts = submit(tenant, TEXT, 6)  # older than the image job, and more than one read holds
    image = submit(tenant, IMAGE, 1)

    claim = services.claim_fitting(queue, "w", limit=32, room={engine_of(TEXT): 0, engine_of(IMAGE): 1})

    assert [j.pk for j in claim.jobs] == [image[0].pk]  # the image engine's free row is not left idle
    assert claim.held  # the text jobs wait for rows, and the queue is owed a ring when they free
    assert states(texts) == ["queued"] * 6

    more = submit(tenant, IMAGE, 2)
    claim = services.claim_fitting(queue, "w", limit=32, room={engine_of(TEXT): 2, engine_of(IMAGE): 1})
    assert sorted(j.generator for j in claim.jobs) == [IMAGE, TEXT, TEXT]
    assert [j.pk for j in claim.jobs if j.generator == TEXT] == [texts[0].pk, texts[1].pk]  # oldest first
    assert sorted(states(more)) == ["queued", "running"]


@pytest.mark.django_db
def test_free_rows_of_one_model_take_no_job_of_another_model_of_the_same_generator(tenant, queue, engines) -> None:  # noqa: ANN001
    engines.engine(TEXT, max_rows=8, running=0)  # the plugin's default model: 8 free rows
    others = submit(tenant, TEXT, 3)  # older: first in line
    Job.objects.filter(pk__in=[j.pk for j in others]).update(model_id="acme/other-model")
    defaults = submit(tenant, TEXT, 2)

    assert runtime.claim_room(engines.snapshot()) == {engine_of(TEXT): 8}
    claim = services.claim_fitting(queue, "w", limit=32, room=runtime.claim_room(engines.snapshot()))

    # One job of the model with no engine here (it loads one), both of the loaded model's; two wait for the load.
    assert sorted(j.pk for j in claim.jobs) == sorted([others[0].pk, *(j.pk for j in defaults)])
    assert claim.held
    assert states(others) == ["running", "queued", "queued"]


@pytest.mark.django_db
def test_a_claim_capped_by_the_claim_batch_rings_again_and_one_capped_by_room_does_not(
    tenant, queue, engines, settings, monkeypatch
) -> None:  # noqa: ANN001
    rung: list[int] = []  # doorbells in the broker when the claimed jobs reach the engines (before any outcome)

    def run_many(ready):  # noqa: ANN001, ANN202
        rung.append(messages(queue))
        yield from engines.run_many(ready)

    monkeypatch.setattr(engine_host, "run_many", run_many)
    jobs = submit(tenant, TEXT, 4)

    settings.AIGC_CLAIM_BATCH = 2
    engines.engine(TEXT, max_rows=8, running=0)
    forget_rings(queue)
    assert runtime.execute_job("", queue) == "succeeded"
    assert sorted(states(jobs)) == ["queued", "queued", "succeeded", "succeeded"]
    assert rung == [1]  # it stopped at AIGC_CLAIM_BATCH with room left: the rest are rung for at once

    settings.AIGC_CLAIM_BATCH = 32
    engines.engine(TEXT, max_rows=1, running=0)
    forget_rings(queue)
    assert runtime.execute_job("", queue) == "succeeded"
    assert rung == [1, 0]  # it took all the room there was: no ring while its job holds the row
    assert messages(queue) == 1  # and one when the row freed, for the job still queued
    assert sorted(states(jobs)) == ["queued", "succeeded", "succeeded", "succeeded"]


class Blocking(Generator):
    """A plugin whose load and run wait for the test."""

    name = "blocking"
    modality = Modality.TEXT
    Params = BaseModel
    Config = GeneratorConfig
    loading = threading.Event()
    loaded = threading.Event()
    running = threading.Event()
    finish = threading.Event()

    def generate(self, params, ctx):  # noqa: ANN001, ANN201
        Blocking.running.set()
        assert Blocking.finish.wait(30)
        return GenerationResult(text="ran")


@pytest.mark.django_db(transaction=True)
def test_a_doorbell_answered_while_a_model_loads_waits_for_it_and_the_loaded_engine_rings(
    tenant, queue, monkeypatch
) -> None:  # noqa: ANN001
    served: list[engine_host.Served] = []

    def load(info, config, device):  # noqa: ANN001, ANN202
        Blocking.loading.set()
        assert Blocking.loaded.wait(30)
        fake = Blocking(config)
        fake.device = device
        served.append(engine_host.Served(info, config, device, fake))
        return served[-1]

    for event in (Blocking.loading, Blocking.loaded, Blocking.running, Blocking.finish):
        event.clear()
    monkeypatch.setattr(engine_host, "served", load)
    monkeypatch.setattr(engine_host, "snapshot", list)  # no engine loaded in this process
    first, *waiting = submit(tenant, TEXT, 3)
    forget_rings(queue)
    worker = threading.Thread(target=runtime.execute_job, args=(str(first.pk),))
    worker.start()
    try:
        assert Blocking.loading.wait(30)  # the first job loads its plugin
        assert runtime.execute_job("", queue) == "skipped"  # a doorbell meanwhile takes none to wait for it
        assert states(waiting) == ["queued", "queued"]
        assert messages(queue) == 0

        Blocking.loaded.set()
        assert Blocking.running.wait(30)
        deadline = time.monotonic() + 10
        while messages(queue) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert messages(queue) == 1  # the engine took its first job: the jobs left waiting for it are rung
        assert states([first, *waiting]) == ["running", "queued", "queued"]
    finally:
        Blocking.loaded.set()
        Blocking.finish.set()
        worker.join(30)
        for s in served:
            s.teardown()
    assert states([first]) == ["succeeded"]
