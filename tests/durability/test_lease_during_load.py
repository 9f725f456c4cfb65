"""A job keeps its lease while its worker loads the model: a load longer than the lease (a first download, a
big checkpoint) must not let the sweep hand the job to another attempt."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

from aigc_saas.jobs import runtime, services
from aigc_saas.plugins.models import PluginRecord
from generators.base import GenerationResult, Generator, GeneratorConfig, Modality
from generators.registry import PluginInfo
from hardware import DeviceChoice
from hardware.cache import ModelCache

pytestmark = pytest.mark.django_db(transaction=True)  # the worker thread and the sweep see committed rows

# Renewals run every third of the lease: with a lease of a few seconds a loaded 2-core machine can miss one,
# which is what a deployment's default (30 s) never does; 6 s keeps the test honest and short.
LEASE_SECONDS = 6
LOAD_SECONDS = 2 * LEASE_SECONDS + 1


class SlowParams(BaseModel):
    prompt: str = ""


class SlowToLoad(Generator):
    name = "slow-to-load"
    modality = Modality.TEXT
    Params = SlowParams
    Config = GeneratorConfig

    def setup(self, device: DeviceChoice) -> None:
        super().setup(device)
        time.sleep(LOAD_SECONDS)

    def generate(self, params: Any, ctx: Any) -> GenerationResult:
        return GenerationResult(text="loaded and ran")


def test_a_model_load_longer_than_the_lease_keeps_the_job(tenant, settings, monkeypatch) -> None:  # noqa: ANN001
    settings.AIGC_LEASE_SECONDS = LEASE_SECONDS
    monkeypatch.setattr(runtime, "_cache", ModelCache({}))
    info = PluginInfo(name="slow-to-load", cls=SlowToLoad, distribution="tests", version="1", entry_point="t:S")
    monkeypatch.setattr(
        runtime,
        "resolve",
        lambda job: (info, GeneratorConfig(model_id="tests/slow"), DeviceChoice(device="cpu", dtype="float32")),
    )
    # A queue no worker consumes: the session's real worker (if an earlier test started it) must not take the job.
    PluginRecord.objects.filter(name="transformers-text").update(queue="lease-during-load")
    job = services.submit_job(tenant, "transformers-text", {"prompt": "x"})
    worker = threading.Thread(target=runtime.execute_job, args=(str(job.pk),))

    worker.start()
    while worker.is_alive():  # the sweep, as beat runs it
        services.requeue_stale_jobs()
        time.sleep(0.5)

    job.refresh_from_db()
    assert (job.state, job.attempts, job.result and job.result["text"]) == ("succeeded", 1, "loaded and ran")
