"""An engine process that dies under its jobs (the OOM killer, a crash in native code) loses none of them: each
goes back to its queue for another attempt, as a lost worker's job does, and fails only after AIGC_MAX_ATTEMPTS.
A real engine process, killed with SIGKILL; the worker's claims in this process."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

from aigc_saas.jobs import doorbell, engine_host, events, runtime, services
from aigc_saas.jobs.models import Job
from aigc_saas.plugins.models import PluginRecord

pytestmark = pytest.mark.django_db(transaction=True)  # the claim runs in a thread: it sees committed rows

TEXT = "transformers-text"


@pytest.fixture
def engine_process(settings, tiny_models):  # noqa: ANN001, ANN201
    """Text engines in processes of their own, loaded afresh, on a queue no other test's worker consumes."""
    settings.AIGC_ENGINE_PROCESS = True
    runtime.model_cache().clear()
    queue = f"engine-dies-{uuid.uuid4().hex[:8]}"
    PluginRecord.objects.filter(name=TEXT).update(queue=queue)
    yield
    PluginRecord.objects.filter(name=TEXT).update(queue="")
    events.client().delete(queue, doorbell.key(queue))
    runtime._owed.discard(queue)
    runtime.model_cache().clear()


def run_and_kill_its_engine(job: Job) -> None:
    """Run the job's claim in a thread, kill its engine process once the job decodes there, wait for the claim."""
    claim = threading.Thread(target=runtime.execute_job, args=(str(job.pk),))
    claim.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        engines = [s for s in list(engine_host._served.values()) if s.info.name == TEXT and not s.engine.stopped]
        if engines and engines[0].engine.stats().get("running"):
            os.kill(engines[0].engine._process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    else:
        pytest.fail("the job never ran in an engine process")
    claim.join(60)


def test_a_job_whose_engine_process_dies_goes_back_to_its_queue_and_the_next_attempt_finishes_it(
    tenant, engine_process
) -> None:  # noqa: ANN001
    job = services.submit_job(tenant, TEXT, {"prompt": "a lamp", "max_new_tokens": 2000, "seed": 1})

    run_and_kill_its_engine(job)

    job.refresh_from_db()
    assert (job.state, job.attempts, job.worker, job.error_code) == ("queued", 1, "", "")  # not failed: queued again

    assert runtime.execute_job(str(job.pk)) == "succeeded"  # the next claim loads the engine afresh
    job.refresh_from_db()
    assert job.attempts == 2 and job.result["metadata"]["completion_tokens"] == 2000


def test_a_job_whose_engine_dies_on_every_attempt_fails_after_the_last_one(tenant, engine_process, settings) -> None:  # noqa: ANN001
    settings.AIGC_MAX_ATTEMPTS = 2
    job = services.submit_job(tenant, TEXT, {"prompt": "a lamp", "max_new_tokens": 2000})

    run_and_kill_its_engine(job)
    run_and_kill_its_engine(job)

    job.refresh_from_db()
    assert (job.state, job.attempts, job.error_code) == ("failed", 2, "engine_stopped")
    assert "attempt 2 of at most 2" in job.error_message
