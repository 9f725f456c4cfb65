"""The worker path in process: out-of-memory on the (simulated) GPU frees the cache, retries once in
low-memory mode, and a second failure fails the job with `out_of_memory` while the worker keeps serving."""

from __future__ import annotations

import pytest

from aigc_saas.jobs import runtime, services
from aigc_saas.jobs.models import Job
from generators.base import BatchItem, GenerationResult
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
    class Fake:
        max_batch_size = 1

        def generate(self, params, ctx):  # noqa: ANN001, ANN202
            if fail_when(ctx.device):
                raise FakeCudaOOM()
            return GenerationResult(text=f"ran with low_memory={ctx.device.low_memory}")

    def loaded(info, config, device):  # noqa: ANN001, ANN202
        loads.append(device)
        return Fake()

    return loaded


def test_an_oom_retries_once_in_low_memory_mode(tenant, on_gpu, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(runtime, "loaded_generator", fake_generator(on_gpu, lambda d: not d.low_memory))
    job = services.submit_job(tenant, "transformers-text", {"prompt": "big"})

    assert runtime.execute_job(str(job.pk)) == "succeeded"

    job.refresh_from_db()
    assert job.result["text"] == "ran with low_memory=True"
    assert [d.low_memory for d in on_gpu] == [False, True]


def test_a_second_oom_fails_the_job_with_a_code_and_the_worker_serves_the_next(tenant, on_gpu, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(runtime, "loaded_generator", fake_generator(on_gpu, lambda d: True))
    doomed = services.submit_job(tenant, "transformers-text", {"prompt": "too big"})

    assert runtime.execute_job(str(doomed.pk)) == "failed"
    doomed.refresh_from_db()
    assert doomed.error_code == "out_of_memory"
    assert "cuda:0" in doomed.error_message and "low-memory" in doomed.error_message

    monkeypatch.setattr(runtime, "loaded_generator", fake_generator(on_gpu, lambda d: False))
    fine = services.submit_job(tenant, "transformers-text", {"prompt": "small"})
    assert runtime.execute_job(str(fine.pk)) == "succeeded"


def test_a_plugin_error_is_recorded_with_its_code(tenant, monkeypatch) -> None:  # noqa: ANN001
    def explode(info, config, device):  # noqa: ANN001, ANN202
        raise ModelLoadFailed("could not load text model 'org/missing': 404")

    monkeypatch.setattr(runtime, "loaded_generator", explode)
    job = services.submit_job(tenant, "transformers-text", {"prompt": "x"})
    assert runtime.execute_job(str(job.pk)) == "failed"
    job.refresh_from_db()
    assert (job.error_code, job.error_message) == ("model_load_failed", "could not load text model 'org/missing': 404")


class BatchingFake:
    """A plugin that serves up to 4 jobs with the same prompt in one pass, and records each pass."""

    max_batch_size = 4
    passes: list[list[str]] = []

    def batch_key(self, params):  # noqa: ANN001, ANN201
        return params.prompt

    def generate(self, params, ctx):  # noqa: ANN001, ANN201
        return self.generate_batch([BatchItem(params, ctx)])[0]

    def generate_batch(self, items):  # noqa: ANN001, ANN201
        BatchingFake.passes.append([item.ctx.job_id for item in items])
        return [GenerationResult(text=f"{item.params.prompt} #{i}") for i, item in enumerate(items)]


def test_a_batching_plugin_serves_compatible_queued_jobs_in_one_pass(tenant, monkeypatch) -> None:  # noqa: ANN001
    BatchingFake.passes = []
    monkeypatch.setattr(runtime, "loaded_generator", lambda info, config, device: BatchingFake())
    same = [services.submit_job(tenant, "transformers-text", {"prompt": "same"}) for _ in range(3)]
    other = services.submit_job(tenant, "transformers-text", {"prompt": "other"})

    assert runtime.execute_job(str(same[0].pk)) == "succeeded"

    assert len(BatchingFake.passes) == 1 and set(BatchingFake.passes[0]) == {str(j.pk) for j in same}
    states = {j.pk: j.state for j in [*(Job.objects.get(pk=j.pk) for j in same), Job.objects.get(pk=other.pk)]}
    assert [states[j.pk] for j in same] == ["succeeded"] * 3
    assert states[other.pk] == "queued"  # a different batch key waits for its own delivery
    assert runtime.execute_job(str(same[1].pk)) == "skipped"  # its own message finds it done
    assert Job.objects.get(pk=same[1].pk).attempts == 1


def test_the_text_plugin_serves_compatible_queued_jobs_in_one_real_pass(tenant, tiny_models) -> None:  # noqa: ANN001
    params = {"max_new_tokens": 5, "temperature": 0}
    jobs = [services.submit_job(tenant, "transformers-text", {"prompt": p, **params}) for p in ("mug", "bread", "tea")]
    seeded = services.submit_job(tenant, "transformers-text", {"prompt": "alone", "seed": 1, **params})

    assert runtime.execute_job(str(jobs[0].pk)) == "succeeded"

    done = [Job.objects.get(pk=j.pk) for j in jobs]
    assert [j.state for j in done] == ["succeeded"] * 3
    assert [j.result["metadata"]["batch_size"] for j in done] == [3, 3, 3]
    assert Job.objects.get(pk=seeded.pk).state == "queued"
