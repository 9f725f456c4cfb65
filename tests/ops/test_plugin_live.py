"""Installing, upgrading, removing or editable-installing a plugin reaches running web and worker processes
without a restart: a re-scan anywhere bumps a registry stamp that every process checks (at most once a second)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from aigc_saas.plugins.models import PluginProblemRecord, PluginRecord
from aigc_saas.plugins.services import reload_registry, sync_plugins
from tests.ops.conftest import QUEUE, wait_for
from tests.plugins import packaging

pytestmark = pytest.mark.django_db(transaction=True)
DIST = "aigc-plugin-live-echo"


def write_plugin(root: Path, version: str) -> Path:
    """A small outside package whose output names its version, so a test sees which code ran."""
    package = root / f"live-echo-{version}"
    module = package / "src" / "aigc_plugin_live_echo"
    module.mkdir(parents=True)
    (package / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=69"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{DIST}"
            version = "{version}"

            [project.entry-points."aigc_saas.generators"]
            live-echo = "aigc_plugin_live_echo:Echo"

            [tool.setuptools.packages.find]
            where = ["src"]
            """
        )
    )
    (module / "__init__.py").write_text(
        textwrap.dedent(
            f'''
            """Echo the text back, prefixed with this release's version."""
            from pydantic import BaseModel, ConfigDict, Field

            from generators.base import GenerationResult, Generator, GeneratorConfig, Modality
            from hardware import HardwareNeeds


            class EchoParams(BaseModel):
                model_config = ConfigDict(extra="forbid")
                text: str = Field(max_length=100, description="What to echo.")


            class EchoConfig(GeneratorConfig):
                model_id: str = Field(default="echo", description="Unused.")


            class Echo(Generator):
                """Echo the text back, prefixed with this release's version."""

                name = "live-echo"
                modality = Modality.TEXT
                api_version = "1.0"
                Params = EchoParams
                Config = EchoConfig
                needs = HardwareNeeds(devices=("cpu",), dtypes=("float32",), memory_mb=1)

                def generate(self, params, ctx):
                    ctx.progress(1.0, "echoed")
                    meta = {{"model_id": "echo", "device": ctx.device.device, "dtype": ctx.device.dtype}}
                    return GenerationResult(text="{version}: " + params.text, metadata=meta)
            '''
        )
    )
    return package


def rescan_here() -> None:
    """What `manage.py sync_plugins` and the admin's re-scan do: scan this process, record, bump the stamp."""
    reload_registry()
    sync_plugins()
    PluginRecord.objects.filter(name="live-echo").update(queue=QUEUE)


class Web:
    def __init__(self, url: str, key: str) -> None:
        self.base = f"{url}/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def versions(self) -> dict[str, str]:
        response = self.session.get(f"{self.base}/generators", timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        return {g["name"]: g["version"] for g in (body["results"] if isinstance(body, dict) else body)}

    def problems(self) -> list[dict[str, Any]]:
        return self.session.get(f"{self.base}/generators/problems", timeout=30).json()

    def run(self, text: str) -> dict[str, Any]:
        response = self.session.post(
            f"{self.base}/jobs", json={"generator": "live-echo", "params": {"text": text}}, timeout=30
        )
        assert response.status_code == 202, response.text
        job = response.json()

        def done() -> dict[str, Any] | None:
            current = self.session.get(f"{self.base}/jobs/{job['id']}", timeout=30).json()
            return current if current["state"] in ("succeeded", "failed", "cancelled") else None

        return wait_for(done, 180, f"live-echo job {job['id']} did not finish")


@pytest.fixture
def web(ops_web, ops_worker, tenant_key) -> Iterator[Web]:  # noqa: ANN001
    """The web subprocess and the ops worker, both started before any install below."""
    yield Web(ops_web.url, tenant_key[1])
    subprocess.run([*packaging.PIP, "uninstall", "--yes", DIST], capture_output=True, timeout=300)
    reload_registry()
    sync_plugins()


def test_install_upgrade_and_removal_reach_the_running_web_and_worker(web, tmp_path) -> None:  # noqa: ANN001
    assert "live-echo" not in web.versions()

    packaging.install(packaging.build_wheel(write_plugin(tmp_path, "0.1.0"), tmp_path / "dist1"))
    rescan_here()
    wait_for(lambda: web.versions().get("live-echo") == "0.1.0", 30, "the web never listed the installed plugin")
    first = web.run("hello")
    assert (first["state"], first["result"]["text"], first["plugin_version"]) == ("succeeded", "0.1.0: hello", "0.1.0")

    packaging.install(packaging.build_wheel(write_plugin(tmp_path, "0.2.0"), tmp_path / "dist2"))
    rescan_here()
    wait_for(lambda: web.versions().get("live-echo") == "0.2.0", 30, "the web kept the old version")
    second = web.run("hello")
    assert (second["result"]["text"], second["plugin_version"]) == ("0.2.0: hello", "0.2.0")  # the new code ran

    packaging.uninstall(DIST)
    rescan_here()
    wait_for(lambda: "live-echo" not in web.versions(), 30, "the web still lists the removed plugin")


def test_an_editable_install_is_found_by_the_admin_rescan_and_served(web, tmp_path, admin_client) -> None:  # noqa: ANN001
    source = write_plugin(tmp_path, "0.3.0")
    packaging.pip("install", "--no-deps", "--no-build-isolation", "-e", str(source))
    any_record = PluginRecord.objects.first()

    response = admin_client.post(
        "/admin/plugins/pluginrecord/",
        {"action": "sync_from_registry", "_selected_action": [any_record.pk]},
        follow=True,
    )

    assert response.status_code == 200
    record = PluginRecord.objects.get(name="live-echo")
    assert (record.installed, record.version) == (True, "0.3.0")
    assert not PluginProblemRecord.objects.filter(distribution=DIST).exists()
    PluginRecord.objects.filter(name="live-echo").update(queue=QUEUE)
    wait_for(
        lambda: web.versions().get("live-echo") == "0.3.0",
        30,
        f"the web never listed the editable install: {web.versions()}; problems: {web.problems()}",
    )
    assert web.run("from source")["result"]["text"] == "0.3.0: from source"
    assert sys.modules.get("aigc_plugin_live_echo") is not None  # imported here too, through the editable finder


def test_disabling_and_enabling_in_the_admin_reaches_the_running_web_at_once(web, admin_client) -> None:  # noqa: ANN001
    record = PluginRecord.objects.get(name="transformers-text")
    change = f"/admin/plugins/pluginrecord/{record.pk}/change/"
    form = {"model_id": "", "config": "{}", "default_params": "{}", "queue": QUEUE}
    body = {"generator": "transformers-text", "params": {"prompt": "hi", "max_new_tokens": 2}}

    assert admin_client.post(change, form).status_code == 302  # no `enabled`: the box unticked
    refused = web.session.post(f"{web.base}/jobs", json=body, timeout=30)
    assert admin_client.post(change, {**form, "enabled": "on"}).status_code == 302
    accepted = web.session.post(f"{web.base}/jobs", json=body, timeout=30)

    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "generator_disabled")
    assert accepted.status_code == 202, accepted.text
