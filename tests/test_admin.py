"""Admins manage plugins (validated against the plugin's own models), see jobs with artifacts, and the hardware page."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command

from aigc_saas.errors import ServiceError
from aigc_saas.jobs import services
from aigc_saas.jobs.models import Artifact, WorkerStatus
from aigc_saas.plugins.models import PluginRecord

pytestmark = pytest.mark.django_db

CHANGE = "/admin/plugins/pluginrecord/{}/change/"


def plugin_form(record: PluginRecord, **changes: str) -> dict[str, str]:
    form = {"enabled": "on", "model_id": "", "config": "{}", "default_params": "{}", "queue": ""}
    form.update(changes)
    if changes.get("enabled") == "":
        form.pop("enabled")
    return form


def test_an_admin_sets_the_default_model_and_params_of_a_plugin(admin_client) -> None:  # noqa: ANN001
    record = PluginRecord.objects.get(name="transformers-text")
    response = admin_client.post(
        CHANGE.format(record.pk),
        plugin_form(record, model_id="HuggingFaceTB/SmolLM2-360M-Instruct", default_params='{"max_new_tokens": 64}'),
    )
    assert response.status_code == 302
    record.refresh_from_db()
    assert record.model_id == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert record.default_params == {"max_new_tokens": 64}


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("default_params", '{"max_new_tokens": 999999}', "default_params.max_new_tokens"),
        ("default_params", '{"colour": "red"}', "default_params"),
        ("config", '{"max_input_tokens": 1}', "max_input_tokens"),
        ("config", '{"no_such_setting": true}', "no_such_setting"),
    ],
)
def test_settings_the_plugin_rejects_are_refused_naming_the_field(admin_client, field, value, named) -> None:  # noqa: ANN001
    record = PluginRecord.objects.get(name="transformers-text")
    response = admin_client.post(CHANGE.format(record.pk), plugin_form(record, **{field: value}))
    assert response.status_code == 200  # the form is shown again with the error
    assert named in response.content.decode()
    record.refresh_from_db()
    assert record.default_params == {} and record.config == {}


def test_an_admin_disables_a_plugin_and_it_refuses_jobs(admin_client, tenant) -> None:  # noqa: ANN001
    record = PluginRecord.objects.get(name="transformers-text")
    admin_client.post(CHANGE.format(record.pk), plugin_form(record, enabled=""))
    record.refresh_from_db()
    assert record.enabled is False
    with pytest.raises(ServiceError) as refused:
        services.submit_job(tenant, "transformers-text", {"prompt": "x"})
    assert refused.value.code == "generator_disabled"


def test_a_job_page_shows_its_params_result_and_artifacts(admin_client, tenant) -> None:  # noqa: ANN001
    job = services.submit_job(tenant, "transformers-text", {"prompt": "The admin sees me"})
    artifact = Artifact(job=job, filename="note.txt", content_type="text/plain", size=2, sha256="f" * 64)
    artifact.file.save("note.txt", ContentFile(b"hi"), save=True)
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert "The admin sees me" in page and "note.txt" in page and "f" * 64 in page


def test_the_hardware_page_and_command_show_devices_budget_and_loaded_models(admin_client, capsys) -> None:  # noqa: ANN001
    WorkerStatus.objects.create(
        name="gpu-box:42",
        queues=["gpu"],
        devices=[
            {
                "id": "cuda:0",
                "kind": "cuda",
                "name": "NVIDIA H100",
                "total_memory": 80 * 2**30,
                "free_memory": 60 * 2**30,
                "supports_bf16": True,
            }
        ],
        cache={
            "devices": {"cuda:0": {"budget_bytes": 64 * 2**30, "used_bytes": 3 * 2**30}},
            "entries": [{"key": "('diffusers-image', 'sd')", "device": "cuda:0", "size_bytes": 3 * 2**30, "hits": 4}],
        },
    )
    page = admin_client.get("/admin/jobs/workerstatus/").content.decode()
    assert "gpu-box:42" in page and "3,072 MiB / 65,536 MiB" in page

    call_command("hardware_report")
    out = capsys.readouterr().out
    assert "This machine:" in out and "cpu" in out
    assert "Worker gpu-box:42" in out and "NVIDIA H100" in out and "diffusers-image" in out
