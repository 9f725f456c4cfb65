"""Schemathesis against the whole API over real HTTP: every operation with bounded examples, then stateful
sequences along the schema's links. 0 server errors and 0 mismatches with the documented schema."""

from __future__ import annotations

import io
import time

import hypothesis
import pytest
import requests
import schemathesis
from django.core.files.base import ContentFile
from django.utils import timezone
from hypothesis import HealthCheck, given
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 15
BUDGET_SECONDS = 60


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def seed(tenant, base_url: str, headers: dict[str, str]) -> None:  # noqa: ANN001
    """Something for every link to reach: jobs in each state (one with an image), and a recipe of runs."""
    from aigc_saas.jobs.models import Artifact, Job

    now = timezone.now()
    done = Job.objects.create(
        tenant=tenant,
        generator="diffusers-image",
        params={"prompt": "a mug"},
        state="succeeded",
        result={"metadata": {"model_id": "nota-ai/bk-sdm-tiny"}},
        started_at=now,
        finished_at=now,
        progress=1.0,
    )
    png = _png()
    artifact = Artifact(job=done, filename="mug.png", content_type="image/png", size=len(png), sha256="0" * 64)
    artifact.file.save("mug.png", ContentFile(png), save=True)
    Job.objects.create(
        tenant=tenant,
        generator="transformers-text",
        params={"prompt": "x"},
        state="failed",
        error_code="oops",
        error_message="it failed",
        finished_at=now,
    )
    Job.objects.create(tenant=tenant, generator="transformers-text", params={"prompt": "y"})
    listing = requests.get(f"{base_url}/api/v1/scenarios/marketing/templates", headers=headers, timeout=10).json()
    detail = requests.get(listing["results"][0]["url"], headers=headers, timeout=10).json()
    started = requests.post(
        f"{detail['url']}/runs", json={"variables": detail["sample_variables"]}, headers=headers, timeout=10
    )
    assert started.status_code in (201, 202), started.text


@pytest.fixture
def loaded(live_server, tenant_key, settings, catalogue):  # noqa: ANN001, ANN201
    # Limits of the fairness half would answer most of these requests 429 (documented, but it hides the rest).
    settings.AIGC_RATE_LIMIT_PER_SECOND = 10_000
    settings.AIGC_RATE_LIMIT_BURST = 10_000
    settings.AIGC_SUBMISSIONS_PER_MINUTE = 10_000
    tenant_key[0].tenant.__class__.objects.filter(pk=tenant_key[0].tenant_id).update(
        max_jobs_per_day=None, max_active_jobs=None
    )
    headers = {"Authorization": f"Bearer {tenant_key[1]}"}
    seed(tenant_key[0].tenant, live_server.url, headers)
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema")
    # The platform API. The OpenAI-compatible /v1 routes wait for a worker to finish each job, so they are
    # exercised with one in their own tests, not here.
    return schema.include(path_regex="^/api/v1/"), headers, live_server.url


def _settings(examples: int) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )


def test_every_operation_answers_as_documented(loaded) -> None:  # noqa: ANN001
    schema, headers, base_url = loaded
    failures: list[str] = []
    calls = 0
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    for operation, mode in [(op, mode) for op in operations for mode in modes]:

        @given(case=operation.as_strategy(generation_mode=mode))
        @_settings(EXAMPLES_PER_OPERATION)
        def run(case) -> None:  # noqa: ANN001
            nonlocal calls
            calls += 1
            response = case.call(base_url=base_url, headers=headers, timeout=10)
            try:
                case.validate_response(response, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected: one run reports them all
                failures.append(f"{case.operation.label}: {str(exc)[:600]}")

        run()
    elapsed = time.monotonic() - started
    print(f"schemathesis: {len(operations)} operations, {calls} requests, {len(failures)} failures, {elapsed:.1f} s")
    assert failures == [], "\n".join(sorted(set(failures))[:30])
    assert elapsed < BUDGET_SECONDS * 1.5


def test_stateful_sequences_along_the_links(loaded) -> None:  # noqa: ANN001
    schema, headers, base_url = loaded
    # The event stream of a live job stays open until the job ends (no worker here), and it is served by an async
    # view only the ASGI server streams: its own tests run it on the `web` fixture. Everything else is linked.
    machine = schema.exclude(path_regex="/events$").as_state_machine()
    seen: list[tuple[str, int]] = []

    class Machine(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case):  # noqa: ANN001, ANN202
            return {"base_url": base_url, "headers": headers, "timeout": 10}

        def validate_response(self, response, case, additional_checks=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
            seen.append((case.operation.label, response.status_code))
            case.validate_response(response, checks=CHECKS)

    Machine.run(
        settings=hypothesis.settings(
            max_examples=25,
            stateful_step_count=8,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
    ok = sorted({label for label, status in seen if status < 300})
    print(f"schemathesis stateful: {len(seen)} calls, 2xx on {len(ok)} operations: {ok}")
    assert len(machine.bundles) >= 1 and len(seen) >= 30
    assert any("_id}" in label for label in ok)  # a link was followed to an object the run created or listed
