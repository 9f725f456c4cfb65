"""Every sample in docs/plugins.md runs: `# file:` blocks become a package that is tested, built, installed and
discovered; the other Python blocks run in order; console commands are ones the suite exercises."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from generators.testing.contract import PluginContract, check_plugin
from tests.plugins import packaging

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
# Each console command in the guide, and the test that runs its equivalent.
CONSOLE_COMMANDS = {
    "pip install ./aigc-plugin-acrostic": "test_the_guide_package_builds_installs_and_is_discovered",
    "python manage.py sync_plugins": "tests/plugins/test_outside_package.py (sync_plugins)",
    'pip install -e ".[test]"': "test_the_guide_package_passes_its_own_contract_test",
    "pytest": "test_the_guide_package_passes_its_own_contract_test",
}


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(GUIDE.read_text()) if lang == language]


@pytest.fixture(scope="module")
def guide_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guide") / "aigc-plugin-acrostic"
    for code in blocks("python") + blocks("toml"):
        first, _, rest = code.partition("\n")
        if first.startswith("# file: "):
            path = root / first.removeprefix("# file: ").strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rest)
    return root


def test_the_guide_package_passes_its_own_contract_test(guide_package: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=guide_package,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "10 passed" in run.stdout


def test_the_guide_package_builds_installs_and_is_discovered(guide_package: Path, tmp_path: Path) -> None:
    wheel = packaging.build_wheel(guide_package, tmp_path / "dist")
    packaging.pip("install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel))
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from generators.registry import discover; i = discover().get('acrostic'); "
            "print(json.dumps([i.distribution, i.version]))",
        ],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == ["aigc-plugin-acrostic", "0.3.0"]


def test_the_guide_snippets_run_in_order(guide_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(guide_package / "src"))
    import aigc_plugin_acrostic

    namespace = dict(vars(aigc_plugin_acrostic))  # snippets continue the plugin module, as the prose does
    snippets = [code for code in blocks("python") if not code.startswith("# file: ")]
    assert len(snippets) >= 6
    for number, code in enumerate(snippets, 1):
        exec(compile(code, f"docs/plugins.md snippet {number}", "exec", dont_inherit=True), namespace)  # noqa: S102
    contracts = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, PluginContract)]
    for contract in contracts:
        if contract is not PluginContract:  # the kit classes the guide defines, run as pytest would
            report = check_plugin(
                contract.plugin, contract.sample_params, contract.config, sample_inputs=contract.sample_inputs
            )
            report.raise_for_problems()
    sys.modules.pop("aigc_plugin_acrostic", None)


def test_every_console_command_in_the_guide_is_exercised_by_a_test() -> None:
    commands = [line[2:].strip() for code in blocks("console") for line in code.splitlines() if line.startswith("$ ")]

    assert commands and set(commands) <= set(CONSOLE_COMMANDS), set(commands) - set(CONSOLE_COMMANDS)
