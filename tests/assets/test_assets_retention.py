"""Retention: assets unused for the configured period are deleted; one a queued or running job reads never is."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from aigc_saas.assets.models import Asset
from aigc_saas.assets.services import store_upload, sweep_expired_assets
from aigc_saas.assets.tasks import sweep_expired_assets as sweep_task
from aigc_saas.jobs.models import Job, JobState
from tests.assets.conftest import png_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def old_asset(tenant, settings):  # noqa: ANN001, ANN201
    """Make an asset last used longer ago than the retention period."""
    settings.AIGC_ASSET_RETENTION_HOURS = 24

    def make(name: str, hours_ago: float = 48) -> Asset:
        asset = store_upload(tenant, SimpleUploadedFile(name, png_bytes(), "image/png"))
        Asset.objects.filter(pk=asset.pk).update(last_used_at=timezone.now() - timedelta(hours=hours_ago))
        return Asset.objects.get(pk=asset.pk)

    return make


def job_reading(tenant, asset: Asset, state: str) -> Job:  # noqa: ANN001
    params = {"prompt": "x", "image": str(asset.pk), "upscale": 2}
    return Job.objects.create(tenant=tenant, generator="diffusers-image", params=params, queue="cpu", state=state)


def test_an_unused_asset_past_retention_is_deleted_with_its_file(old_asset) -> None:  # noqa: ANN001
    asset = old_asset("old.png")
    storage, name = asset.file.storage, asset.file.name
    assert storage.exists(name)

    assert sweep_expired_assets() == 1

    assert not Asset.objects.filter(pk=asset.pk).exists()
    assert not storage.exists(name)


def test_an_asset_used_within_the_retention_period_is_kept(old_asset) -> None:  # noqa: ANN001
    recent = old_asset("recent.png", hours_ago=23)

    assert sweep_expired_assets() == 0
    assert Asset.objects.filter(pk=recent.pk).exists()


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.RUNNING])
def test_an_asset_a_queued_or_running_job_reads_is_never_deleted(old_asset, tenant, state) -> None:  # noqa: ANN001
    in_use = old_asset("in-use.png", hours_ago=24 * 365)
    job_reading(tenant, in_use, state)

    assert sweep_expired_assets() == 0
    assert Asset.objects.filter(pk=in_use.pk).exists() and in_use.file.storage.exists(in_use.file.name)


def test_an_asset_only_finished_jobs_read_expires_like_any_other(old_asset, tenant) -> None:  # noqa: ANN001
    done = old_asset("done.png")
    job_reading(tenant, done, JobState.SUCCEEDED)
    job_reading(tenant, done, JobState.FAILED)

    assert sweep_expired_assets() == 1
    assert not Asset.objects.filter(pk=done.pk).exists()


def test_the_scheduled_task_runs_the_sweep(old_asset, tenant) -> None:  # noqa: ANN001
    old_asset("a.png")
    kept = old_asset("b.png")
    job_reading(tenant, kept, JobState.QUEUED)

    assert sweep_task() == 1
    assert list(Asset.objects.values_list("pk", flat=True)) == [kept.pk]


def test_the_sweep_is_scheduled(settings) -> None:  # noqa: ANN001
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "aigc.sweep_expired_assets" in tasks
