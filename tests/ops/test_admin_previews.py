"""The admin shows artifacts inline: images as pictures, audio as a player, both served to staff only."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile

from aigc_saas.jobs.models import Artifact, Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def job_with_files(tenant) -> Job:  # noqa: ANN001
    job = Job.objects.create(tenant=tenant, generator="diffusers-image", queue="cpu", params={})
    for index, (name, kind, data) in enumerate(
        [
            ("a.png", "image/png", b"\x89PNG fake"),
            ("b.wav", "audio/wav", b"RIFF fake"),
            ("c.json", "application/json", b"{}"),
        ]
    ):
        artifact = Artifact(job=job, index=index, filename=name, content_type=kind, size=len(data), sha256="0" * 64)
        artifact.file.save(name, ContentFile(data), save=False)
        artifact.save()
    return job


def test_the_job_page_previews_images_and_plays_audio(admin_client, job_with_files: Job) -> None:  # noqa: ANN001
    page = admin_client.get(f"/admin/jobs/job/{job_with_files.pk}/change/").content.decode()

    image, audio, other = job_with_files.artifacts.order_by("index")
    assert f'<img src="/admin/jobs/job/{job_with_files.pk}/artifacts/{image.pk}/content/"' in page
    assert (
        f'<audio controls preload="metadata" src="/admin/jobs/job/{job_with_files.pk}/artifacts/{audio.pk}/content/"'
        in page
    )
    assert f'href="/admin/jobs/job/{job_with_files.pk}/artifacts/{other.pk}/content/">c.json</a>' in page


def test_staff_get_the_file_with_its_type_and_others_are_sent_to_log_in(
    admin_client, client, job_with_files: Job
) -> None:  # noqa: ANN001
    audio = job_with_files.artifacts.get(index=1)
    url = f"/admin/jobs/job/{job_with_files.pk}/artifacts/{audio.pk}/content/"

    response = admin_client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "audio/wav"
    assert b"".join(response.streaming_content) == b"RIFF fake"
    assert client.get(url).status_code == 302  # not logged in: the admin login page
    assert (
        admin_client.get(f"/admin/jobs/job/{job_with_files.pk}/artifacts/{job_with_files.pk}/content/").status_code
        == 404
    )
