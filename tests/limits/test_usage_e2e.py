"""End to end: a real worker runs a tiny-model job, the job's usage is stored, and GET /usage reports it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aigc_saas.jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_finished_text_job_is_metered_and_counted_in_the_daily_usage(worker, api) -> None:  # noqa: ANN001
    job = api.wait(api.submit("transformers-text", {"prompt": "Count my tokens", "max_new_tokens": 4, "seed": 2}))
    assert job["state"] == "succeeded", job

    stored = Job.objects.get(pk=job["id"]).usage
    assert stored["tokens_in"] > 0 and 1 <= stored["tokens_out"] <= 4
    assert stored["run_seconds"] > 0

    today = datetime.now(UTC).date().isoformat()
    body = api.get("usage", params={"since": today, "until": today}).json()

    [row] = [d for d in body["days"] if d["generator"] == "transformers-text"]
    assert (row["jobs"], row["succeeded"]) == (1, 1)
    assert (row["tokens_in"], row["tokens_out"]) == (stored["tokens_in"], stored["tokens_out"])
