"""The worker path in process: out-of-memory on the (simulated) GPU frees the cache, retries once in
low-memory mode, and a second failure fails the job with `out_of_memory` while the worker keeps serving."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from aigc_saas.jobs import engine_host, events, runtime, services
from aigc_saas.jobs.models import Job
from generators.base import GenerationResult, Generator, GeneratorConfig, Modality
from generators.errors import ModelLoadFailed
from hardware import DeviceChoice

pytestmark = pytest.mark.django_db


class FakeCudaOOM(RuntimeError):
    def __init__(self) -> None:
        super().__init__("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.fixture
def on_gpu(monkeypatch):  # noqa: ANN001, ANN201
    """Resolve every job to cuda:0 and record each load's device choice (the torch boundary is simulated)."""
    loads: list[DeviceChoice] = []
    original = runtime.resolve

    def resolve(job):  # noqa: ANN001, ANN202
        info, config, _ = original(job)
        return info, config, DeviceChoice(device="cuda:0", dtype="float16")

    monkeypatch.setattr(runtime, "resolve", resolve)
    return loads


def fake_generator(loads: list[DeviceChoice], fail_when) -> None:  # noqa: ANN001
    class Fake(Generator):
        name = "fake"
        modality = Modality.TEXT
        Params = BaseModel
        Config = GeneratorConfig

        def generate(self, params, ctx):  # noqa: ANN001, ANN202
            if fail_when(ctx.device):
                raise FakeCudaOOM()
            return GenerationResult(text=f"ran with low_memory={ctx.device.low_memory}")

    def served(info, config, device):  # noqa: ANN001, ANN202
        loads.append(device)
        fake = Fake(config)
        fake.device = device
        return engine_host.Served(info, config, device, fake)

    return served


def test_an_oom_retries_once_in_low_memory_mode(tenant, on_gpu, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(engine_host, "served", fake_generator(on_gpu, lambda d: not d.low_memory))
    job = services.submit_job(tenant, "transformers-text", {"prompt": "big"})

    assert runtime.execute_job(str(job.pk)) == "succeeded"

    job.refresh_from_db()
    assert job.result["text"] == "ran with low_memory=True"
    assert [d.low_memory for d in on_gpu] == [False, True]


def test_a_second_oom_fails_the_job_with_a_code_and_the_worker_serves_the_next(tenant, on_gpu, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(engine_host, "served", fake_generator(on_gpu, lambda d: True))
    doomed = services.submit_job(tenant, "transformers-text", {"prompt": "too big"})

    assert runtime.execute_job(str(doomed.pk)) == "failed"
    doomed.refresh_from_db()
    assert doomed.error_code == "out_of_memory"
    assert "out of memory" in doomed.error_message

    monkeypatch.setattr(engine_host, "served", fake_generator(on_gpu, lambda d: False))
    fine = services.submit_job(tenant, "transformers-text", {"prompt": "small"})
    assert runtime.execute_job(str(fine.pk)) == "succeeded"


def test_a_plugin_error_is_recorded_with_its_code(tenant, monkeypatch) -> None:  # noqa: ANN001
    def explode(info, config, device):  # noqa: ANN001, ANN202
        raise ModelLoadFailed("could not load text model 'org/missing': 404")

    monkeypatch.setattr(engine_host, "served", explode)
    job = services.submit_job(tenant, "transformers-text", {"prompt": "x"})
    assert runtime.execute_job(str(job.pk)) == "failed"
    job.refresh_from_db()
    assert (job.error_code, job.error_message) == ("model_load_failed", "could not load text model 'org/missing': 404")


@pytest.mark.parametrize("own_process", [True, False], ids=["engine-process", "engine-thread"])
def test_a_text_job_runs_on_the_engine_and_records_what_a_tenant_may_see(
    tenant, tiny_models, settings, own_process
) -> None:  # noqa: ANN001
    settings.AIGC_ENGINE_PROCESS = own_process
    runtime.model_cache().clear()  # the engine is loaded afresh, where the setting says
    job = services.submit_job(tenant, "transformers-text", {"prompt": "mug", "max_new_tokens": 5, "seed": 3})

    assert runtime.execute_job(str(job.pk)) == "succeeded"
    kinds = {e["kind"] for e in engine_host.snapshot() if e["generator"] == "transformers-text"}
    assert kinds == {"ProcessEngine" if own_process else "StepEngine"}

    job.refresh_from_db()
    meta = job.result["metadata"]
    assert (meta["completion_tokens"], meta["finish_reason"], meta["seed"]) == (5, "length", 3)
    assert "batch_size" not in meta
    assert job.usage["run_seconds"] >= 0 and job.lease_expires_at is None
    tokens = [data["text"] for _, event, data in events.read(job.pk) if event == "token"]
    assert "".join(tokens) == job.result["text"]


def test_one_doorbell_runs_every_queued_job_its_engine_has_room_for_together(tenant, tiny_models) -> None:  # noqa: ANN001
    warm = services.submit_job(tenant, "transformers-text", {"prompt": "load", "max_new_tokens": 2})
    assert runtime.execute_job(str(warm.pk)) == "succeeded"  # the engine is loaded: it reports free rows
    queued = [
        services.submit_job(tenant, "transformers-text", {"prompt": f"p{i}", "max_new_tokens": 4, "seed": i})
        for i in range(6)
    ]

    assert runtime.execute_job(str(queued[2].pk)) == "succeeded"

    rows = list(Job.objects.filter(pk__in=[j.pk for j in queued]))
    assert {(r.state, r.attempts) for r in rows} == {("succeeded", 1)}
    assert len({r.started_at for r in rows}) == 1  # one claim took them all
    assert all(r.result["metadata"]["completion_tokens"] == 4 for r in rows)
    assert [runtime.execute_job(str(j.pk)) for j in queued] == ["skipped"] * 6  # their own doorbells find none
