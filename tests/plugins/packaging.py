"""Build, install and remove real distributions, the way a deployment would: wheels and pip."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--quiet"]


def pip(*args: str) -> None:
    done = subprocess.run([*PIP, *args], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def build_wheel(project: Path, out: Path) -> Path:
    """A wheel of `project`, built from a copy so the source tree stays clean; no network needed."""
    source = out / f"src-{project.name}"
    shutil.copytree(project, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest*"))
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(source))
    wheels = sorted(out.glob("*.whl"), key=lambda p: p.stat().st_mtime)
    assert wheels, f"no wheel was built from {project}"
    return wheels[-1]


def install(*wheels: Path) -> None:
    """`pip install` into this environment, resolving dependencies from what is installed (no index)."""
    pip("install", "--no-index", "--find-links", str(wheels[0].parent), *map(str, wheels))
    importlib.invalidate_caches()


def uninstall(*distributions: str) -> None:
    pip("uninstall", "--yes", *distributions)
    importlib.invalidate_caches()


def write_broken_package(root: Path) -> Path:
    """A distribution with four plugins that must each be skipped and reported, never crash the host."""
    package = root / "aigc-plugin-broken-fixture"
    module = package / "src" / "aigc_plugin_broken"
    module.mkdir(parents=True)
    (package / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=69"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "aigc-plugin-broken-fixture"
            version = "0.0.1"

            [project.entry-points."aigc_saas.generators"]
            needs-libfoo = "aigc_plugin_broken.missing_dependency:Plugin"
            half-done = "aigc_plugin_broken.half_done:HalfDone"
            impostor = "aigc_plugin_broken.impostor:Impostor"
            quitter = "aigc_plugin_broken.quitter:Plugin"

            [tool.setuptools.packages.find]
            where = ["src"]
            """
        )
    )
    (module / "__init__.py").write_text("")
    (module / "missing_dependency.py").write_text("import libfoo_is_not_installed  # noqa: F401\n")
    (module / "quitter.py").write_text("raise SystemExit('a plugin must not be able to stop the host')\n")
    (module / "half_done.py").write_text(
        textwrap.dedent(
            """
            from generators.base import Generator, Modality

            class HalfDone(Generator):
                name = "half-done"
                modality = Modality.TEXT  # no Params, no Config, no generate
            """
        )
    )
    (module / "impostor.py").write_text(
        textwrap.dedent(
            """
            from generators.text_transformers import TextGenerator

            class Impostor(TextGenerator):
                name = "transformers-text"  # a built-in's name
            """
        )
    )
    return package
