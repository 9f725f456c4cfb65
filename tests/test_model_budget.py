"""A device's model budget never tears down an engine that holds jobs: a job of another model waits for that
engine to drain (no new jobs are claimed for it meanwhile), then takes its memory; and a job whose engine was
evicted between its claim and its hand-over loads it again. Real engines, tiny models, one worker process's
claims."""

from __future__ import annotations

import shutil
import threading
import time
import uuid

import pytest

from aigc_saas.jobs import doorbell, engine_host, events, runtime, services
from aigc_saas.jobs.models import Job
from aigc_saas.observability import metrics, recording
from aigc_saas.plugins.models import PluginRecord
from generators.text_transformers import TextGenerator
from hardware.cache import ModelCache

pytestmark = pytest.mark.django_db(transaction=True)  # claims in threads see committed rows

TEXT = "transformers-text"


@pytest.fixture
def one_model_at_a_time(monkeypatch, tiny_models, tmp_path):  # noqa: ANN001, ANN201
    """A CPU budget that holds one text model (the plugin's estimate, and less than another beside it), a second
    model (a copy of the tiny one under another id), and a queue of the text plugin's own that no worker of
    another test consumes (this test's claims are its only ones)."""
    other = shutil.copytree(tiny_models[TEXT], tmp_path / "other-tiny-llama")
    estimate = TextGenerator.needs.memory_mb * 1024 * 1024
    monkeypatch.setattr(runtime, "_cache", ModelCache({"cpu": estimate + 1024}))
    queue = f"model-budget-{uuid.uuid4().hex[:8]}"
    PluginRecord.objects.filter(name=TEXT).update(queue=queue)
    yield str(other)
    PluginRecord.objects.filter(name=TEXT).update(queue="")
    events.client().delete(queue, doorbell.key(queue))
    runtime._owed.discard(queue)  # a ring owed to it would go nowhere later
    runtime.model_cache().clear()


def text_job(tenant, model: str = "", tokens: int = 4) -> Job:  # noqa: ANN001
    job = services.submit_job(tenant, TEXT, {"prompt": "a mug for the garden", "max_new_tokens": tokens})
    if model:  # as a job submitted with an allowed `model` records it
        Job.objects.filter(pk=job.pk).update(model_id=model)
    return job


def engine_of(model_id: str) -> dict | None:
    return next((e for e in engine_host.snapshot() if e["model_id"] == model_id), None)


def state(job: Job) -> str:
    job.refresh_from_db()
    return job.state


def test_a_job_of_another_model_waits_for_the_busy_engine_to_drain_instead_of_failing_its_jobs(
    tenant, one_model_at_a_time
) -> None:  # noqa: ANN001
    other = one_model_at_a_time
    long = text_job(tenant, tokens=400)
    default_model = Job.objects.get(pk=long.pk).model_id
    runner = threading.Thread(target=runtime.execute_job, args=(str(long.pk),))
    runner.start()
    deadline = time.monotonic() + 60
    while not ((e := engine_of(default_model)) and e["running"]) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert engine_of(default_model)["running"] == 1  # the long job decodes on the default model's engine

    newcomer = text_job(tenant, model=other)
    waiting = threading.Thread(target=runtime.execute_job, args=(str(newcomer.pk),))
    waiting.start()
    while not engine_of(default_model)["draining"] and time.monotonic() < deadline:
        time.sleep(0.005)
    assert engine_of(default_model)["draining"]  # the newcomer's load waits for it
    recording.sample_worker()
    assert metrics.ENGINE_DRAINING.labels(TEXT, default_model, "cpu")._value.get() == 1  # operators see it too
    assert state(long) == "running"

    late = text_job(tenant)  # a job for the draining engine: no room there while it drains
    assert runtime.execute_job(str(late.pk)) == "skipped"
    assert state(late) == "queued"

    runner.join(60)
    waiting.join(60)
    long.refresh_from_db()
    newcomer.refresh_from_db()
    assert (long.state, long.error_code) == ("succeeded", "")  # not torn down under its job
    assert long.result["metadata"]["completion_tokens"] == 400
    assert newcomer.state == "succeeded" and newcomer.started_at < long.finished_at  # claimed, then it waited
    assert [e["model_id"] for e in engine_host.snapshot()] == [other]  # the drained engine made room

    assert runtime.execute_job(str(late.pk)) == "succeeded"  # its model loads again, in the idle one's room
    assert [e["model_id"] for e in engine_host.snapshot()] == [default_model]


def test_a_job_handed_an_engine_evicted_since_its_claim_loads_it_again(
    tenant, one_model_at_a_time, monkeypatch
) -> None:  # noqa: ANN001
    job = text_job(tenant)
    found = engine_host._load

    def found_then_evicted(items):  # noqa: ANN001, ANN202
        for item, target in found(items):
            runtime.model_cache().clear()  # idle, so another load may evict it before the hand-over
            assert target.engine.stopped
            yield item, target

    monkeypatch.setattr(engine_host, "_load", found_then_evicted)

    assert runtime.execute_job(str(job.pk)) == "succeeded"
    job.refresh_from_db()
    assert job.result["metadata"]["completion_tokens"] == 4
