"""No server paths in API output; plugin problems' detail only for staff; revoked keys seen within 2 s."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from aigc_saas.accounts.services import create_api_key, key_is_active, revoke_api_key
from aigc_saas.jobs.models import Job
from aigc_saas.plugins.models import PluginProblemRecord, PluginRecord
from aigc_saas.validation import public_model_id, scrub_paths

pytestmark = pytest.mark.django_db
SECRET_PATH = "/srv/private/aigc-models/secret-text-model"


def test_local_model_folders_show_only_their_name(acme) -> None:  # noqa: ANN001
    PluginRecord.objects.filter(name="transformers-text").update(model_id=SECRET_PATH)

    listing = acme.get("/api/v1/generators")
    detail = acme.get("/api/v1/generators/transformers-text")

    assert listing.status_code == 200 and detail.status_code == 200
    assert "/srv/private" not in listing.content.decode() + detail.content.decode()
    text = next(g for g in listing.json() if g["name"] == "transformers-text")
    assert text["default_model"] == detail.json()["default_model"] == "local:secret-text-model"


def test_hub_ids_are_shown_as_they_are(acme) -> None:  # noqa: ANN001
    PluginRecord.objects.filter(name="transformers-text").update(model_id="HuggingFaceTB/SmolLM2-135M-Instruct")
    text = acme.get("/api/v1/generators/transformers-text").json()
    assert text["default_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_job_results_and_errors_carry_no_server_paths(acme, tenant) -> None:  # noqa: ANN001
    ok = Job.objects.create(
        tenant=tenant,
        generator="transformers-text",
        params={"prompt": "x"},
        model_id=SECRET_PATH,
        state="succeeded",
        result={"text": "hi", "metadata": {"model_id": SECRET_PATH, "device": "cpu"}},
    )
    failed = Job.objects.create(
        tenant=tenant,
        generator="transformers-text",
        params={"prompt": "x"},
        state="failed",
        error_code="model_load_failed",
        error_message=f"could not load text model '{SECRET_PATH}': no file {SECRET_PATH}/config.json",
    )

    shown = acme.get(f"/api/v1/jobs/{ok.pk}").json()
    error = acme.get(f"/api/v1/jobs/{failed.pk}").json()["error"]
    listing = acme.get("/api/v1/jobs").content.decode()

    assert shown["model_id"] == "local:secret-text-model"
    assert shown["result"]["metadata"] == {"model_id": "local:secret-text-model", "device": "cpu"}
    assert error["message"] == "could not load text model '…/secret-text-model': no file …/config.json"
    assert "/srv/private" not in listing


@pytest.mark.parametrize(
    "value, shown",
    [
        ("org/name", "org/name"),
        ("/abs/dir/model/", "local:model"),
        ("~/models/m", "local:m"),
        ("./m", "local:m"),
        ("C:\\models\\m", "local:m"),
        ("a/b/c", "local:c"),
    ],
)
def test_public_model_id(value: str, shown: str) -> None:
    assert public_model_id(value) == shown


def test_urls_survive_path_scrubbing() -> None:
    assert (
        scrub_paths("see https://hf.co/org/model/tree/main and/or x")
        == "see https://hf.co/org/model/tree/main and/or x"
    )


def test_plugin_problems_show_tenants_only_name_and_code(acme) -> None:  # noqa: ANN001
    PluginProblemRecord.objects.create(
        entry_point="broken = broken_pkg.plugin:Broken",
        distribution="broken-pkg 1.0",
        code="import_failed",
        message=f"Traceback: File '{SECRET_PATH}/site-packages/broken_pkg/plugin.py', line 3",
    )
    problems = acme.get("/api/v1/generators/problems")
    assert problems.status_code == 200
    assert problems.json() == [{"entry_point": "broken = broken_pkg.plugin:Broken", "code": "import_failed"}]


def test_plugin_problems_keep_their_detail_for_staff(admin_user, rf) -> None:  # noqa: ANN001
    from aigc_saas.api.serializers import PluginProblemSerializer

    record = PluginProblemRecord.objects.create(entry_point="x = y:Z", code="import_failed", message="detail")
    request = rf.get("/")
    request.user = admin_user
    assert PluginProblemSerializer(record, context={"request": request}).data["message"] == "detail"


def test_key_is_active_sees_a_revocation_within_two_seconds(tenant) -> None:  # noqa: ANN001
    key, _ = create_api_key(tenant, "stream")
    assert key_is_active(key.pk) is True
    revoke_api_key(key)
    deadline = time.monotonic() + 2.5
    while key_is_active(key.pk) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert key_is_active(key.pk) is False
    assert time.monotonic() < deadline


def test_key_is_active_is_false_for_expired_keys_inactive_tenants_and_unknown_ids(tenant, other_tenant) -> None:  # noqa: ANN001
    expired, _ = create_api_key(tenant, "old")
    type(expired).objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert key_is_active(expired.pk) is False
    other, _ = create_api_key(other_tenant, "k")
    type(other_tenant).objects.filter(pk=other_tenant.pk).update(is_active=False)
    assert key_is_active(other.pk) is False
    assert key_is_active(987_654_321) is False
