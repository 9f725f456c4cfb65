"""An outside package, built and pip-installed as its own distribution, just works: discovered, listed by the
API with its schema, shown in admin, configured with a secret, and run end to end by a real worker. A broken
package installed beside it is reported and skipped, and takes nothing down."""

from __future__ import annotations

import hashlib
import hmac
import io
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from aigc_saas.plugins.models import PluginRecord
from aigc_saas.plugins.services import registry, reload_registry, sync_plugins
from tests.fixtures.stack import Worker
from tests.plugins import packaging
from tests.plugins.conftest import EXAMPLES

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = "plugins-e2e"  # the fresh worker's own queue, so a worker started before the install never gets the job
SIGNING_KEY = "s3cret-signing-key-for-tests"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    out = tmp_path_factory.mktemp("wheels")
    banner = packaging.build_wheel(EXAMPLES / "aigc-plugin-banner", out)
    broken = packaging.build_wheel(packaging.write_broken_package(tmp_path_factory.mktemp("broken")), out)
    packaging.install(banner, broken)
    reload_registry()
    yield
    packaging.uninstall("aigc-plugin-banner", "aigc-plugin-broken-fixture")
    reload_registry()


@pytest.fixture(scope="module")
def plugin_worker(installed, django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Worker]:  # noqa: ANN001
    """A worker started after the install, as a deployment restarts its workers after `pip install`."""
    with django_db_blocker.unblock():
        started = Worker(tmp_path_factory.mktemp("plugin-worker") / "worker.log", queues=QUEUE)
    yield started
    started.stop()


@pytest.fixture
def synced(installed) -> None:  # noqa: ANN001
    sync_plugins()


def test_the_installed_package_is_discovered_with_its_distribution_and_version(synced) -> None:  # noqa: ANN001
    info = registry().get("pillow-banner")

    assert (info.distribution, info.version) == ("aigc-plugin-banner", "1.2.0")
    assert info.entry_point == "aigc_plugin_banner:BannerGenerator"
    installed_at = Path(sys.modules[info.cls.__module__].__file__)
    assert installed_at.is_relative_to(sysconfig.get_paths()["purelib"])  # from site-packages, not the source tree


def test_the_api_lists_it_with_its_params_schema(api, synced) -> None:  # noqa: ANN001
    from aigc_plugin_banner import BannerParams

    response = api.get("generators")
    listed = {g["name"]: g for g in response.json()}
    assert "pillow-banner" in listed, response.text

    banner = listed["pillow-banner"]
    assert banner["modality"] == "image"
    assert (banner["distribution"], banner["version"]) == ("aigc-plugin-banner", "1.2.0")
    assert banner["params_schema"] == BannerParams.model_json_schema()
    assert banner["params_schema"]["properties"]["headline"]["maxLength"] == 80


def test_broken_plugins_are_reported_and_skipped_while_the_rest_keep_working(api, synced) -> None:  # noqa: ANN001
    from aigc_saas.plugins.models import PluginProblemRecord

    # Tenants see which entry point failed and why in a code; the operator's detail stays in the admin.
    problems = {p["entry_point"].split(" = ")[0]: p for p in api.get("generators/problems").json()}
    assert {name: problems[name]["code"] for name in ("needs-libfoo", "half-done", "impostor", "quitter")} == {
        "needs-libfoo": "import_failed",
        "half-done": "invalid_contract",
        "impostor": "name_clash",
        "quitter": "import_failed",
    }
    assert all("message" not in p and "distribution" not in p for p in problems.values())
    detail = {r.entry_point.split(" = ")[0]: r for r in PluginProblemRecord.objects.all()}
    assert all(detail[n].distribution == "aigc-plugin-broken-fixture" for n in ("needs-libfoo", "impostor"))
    assert "libfoo_is_not_installed" in detail["needs-libfoo"].message
    assert "`Params` must be a pydantic BaseModel subclass" in detail["half-done"].message
    assert "already taken by generators.text_transformers:TextGenerator" in detail["impostor"].message
    assert registry().get("transformers-text").distribution == "aigc-saas"  # the built-in keeps its name
    assert {"pillow-banner", "transformers-text"} <= {g["name"] for g in api.get("generators").json()}


def test_admin_shows_the_plugin_with_distribution_and_version_and_the_problems(admin_client, synced) -> None:  # noqa: ANN001
    plugins = admin_client.get("/admin/plugins/pluginrecord/").content.decode()
    problems = admin_client.get("/admin/plugins/pluginproblemrecord/").content.decode()

    assert "pillow-banner" in plugins and "aigc-plugin-banner" in plugins and "1.2.0" in plugins
    assert "aigc-plugin-broken-fixture" in problems and "import_failed" in problems


def test_a_job_runs_end_to_end_on_a_fresh_worker_with_the_admins_secret(
    api,  # noqa: ANN001
    admin_client,  # noqa: ANN001
    plugin_worker: Worker,
    synced,  # noqa: ANN001
) -> None:
    record = PluginRecord.objects.get(name="pillow-banner")
    change_url = f"/admin/plugins/pluginrecord/{record.pk}/change/"
    form = {"enabled": "on", "model_id": "", "config": '{"watermark": "acme.test"}', "default_params": "{}"}
    saved = admin_client.post(change_url, {**form, "queue": QUEUE, "secret__signing_key": SIGNING_KEY})
    assert saved.status_code == 302, saved.content.decode()[-3000:]

    job = api.submit("pillow-banner", {"headline": "Spring sale", "width": 320, "height": 160, "seed": 11})
    done = api.wait(job, timeout=60)

    assert done["state"] == "succeeded", (done, plugin_worker.log())
    assert done["plugin_version"] == "1.2.0"
    artifact = done["artifacts"][0]
    content = api.get(artifact["url"]).content
    assert Image.open(io.BytesIO(content)).size == (320, 160)
    expected = hmac.new(SIGNING_KEY.encode(), content, hashlib.sha256).hexdigest()
    assert artifact["metadata"]["signature"] == expected  # the secret reached the plugin ...
    shown = [
        api.get(job["url"]).text,
        api.get("generators").text,
        admin_client.get(change_url).content.decode(),
        admin_client.get("/admin/plugins/pluginrecord/").content.decode(),
    ]
    assert not [page for page in shown if SIGNING_KEY in page]  # ... and is shown nowhere
    assert "Set. Type a new value to replace it" in shown[2]
