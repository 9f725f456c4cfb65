"""`manage.py startplugin` writes a package that passes the contract kit and installs as it stands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from generators.testing.contract import PluginContract
from tests.plugins import packaging


def run_pytest(package: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q"], cwd=package, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_the_generated_package_passes_the_contract_kit(tmp_path: Path, modality: str) -> None:
    call_command("startplugin", f"shop-{modality}", directory=str(tmp_path), modality=modality)
    package = tmp_path / f"aigc-plugin-shop-{modality}"

    run = run_pytest(package)

    assert run.returncode == 0, run.stdout + run.stderr
    checks = [name for name in dir(PluginContract) if name.startswith("test_")]
    assert f"{len(checks)} passed" in run.stdout  # every check of the kit ran, none skipped


def test_the_generated_package_builds_installs_and_is_discovered(tmp_path: Path) -> None:
    call_command("startplugin", "shop-slogans", directory=str(tmp_path))
    wheel = packaging.build_wheel(tmp_path / "aigc-plugin-shop-slogans", tmp_path / "dist")
    with zipfile.ZipFile(wheel) as built:
        entry_points = next(n for n in built.namelist() if n.endswith("entry_points.txt"))
        assert "shop-slogans = aigc_plugin_shop_slogans:ShopSlogansGenerator" in built.read(entry_points).decode()
    target = tmp_path / "site"
    packaging.pip("install", "--no-deps", "--target", str(target), str(wheel))

    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from generators.registry import discover; info = discover().get('shop-slogans'); "
            "print(json.dumps([info.distribution, info.version, info.cls.__module__]))",
        ],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == ["aigc-plugin-shop-slogans", "0.1.0", "aigc_plugin_shop_slogans"]


def test_it_refuses_a_bad_name_and_an_existing_folder(tmp_path: Path) -> None:
    call_command("startplugin", "taken", directory=str(tmp_path))

    with pytest.raises(CommandError, match="already exists"):
        call_command("startplugin", "taken", directory=str(tmp_path))
    with pytest.raises(CommandError, match="`name`: 'Bad Name' must match"):
        call_command("startplugin", "Bad Name", directory=str(tmp_path))
