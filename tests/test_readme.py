"""The README's configuration table names every environment variable the code reads, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ["aigc_saas", "generators", "hardware", "scenarios", "seeds"]
READ_PATTERNS = [
    r"env_(?:str|int|bool|list)\(\s*\"([A-Z][A-Z0-9_]+)\"",
    r"os\.environ\.get\(\s*f?\"([A-Z][A-Z0-9_]+)\"",
    r"env\.get\(\s*\"([A-Z][A-Z0-9_]+)\"",
    r"\"(AIGC_MODEL_[A-Z_]+)\"",
]
# Not operator settings: Django's own, and what a worker parent passes to its prefork children.
NOT_SETTINGS = {"DJANGO_SETTINGS_MODULE", "AIGC_WORKER_CONSUMES"}


def variables_in_code() -> set[str]:
    found: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for pattern in READ_PATTERNS:
                found |= set(re.findall(pattern, text))
    for name, module in (("AIGC_CACHE_BUDGET_MB_", "hardware/cache.py"), ("AIGC_KV_BUDGET_MB_", "hardware/kv.py")):
        if name in (ROOT / module).read_text():
            found.add(f"{name}<KIND>")
    return found - NOT_SETTINGS


def variables_in_readme() -> set[str]:
    section = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_<>]+)`", row.split("|")[1])}


def test_every_variable_the_code_reads_is_documented() -> None:
    assert variables_in_code() - variables_in_readme() == set()


def test_the_table_documents_no_variable_the_code_ignores() -> None:
    documented = variables_in_readme() - {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert documented - variables_in_code() == set()


def test_the_quickstart_has_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    quickstart = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = quickstart.split("```sh", 1)[1].split("```", 1)[0]
    commands = [
        line.split("#")[0].strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    assert commands == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci/run").read_text()
