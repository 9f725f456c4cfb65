"""Discover generator plugins through the `aigc_saas.generators` entry-point group."""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import re
import site
import sys
import time
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points, packages_distributions
from pathlib import Path

from pydantic import BaseModel, SecretBytes, SecretStr

from generators.base import PLUGIN_API_VERSION, Generator, GeneratorConfig, Modality
from generators.errors import GeneratorError
from hardware import HardwareNeeds

ENTRY_POINT_GROUP = "aigc_saas.generators"
# Plugins shipped with the platform load first, so an installed package can never take a built-in's name.
CORE_DISTRIBUTION = "aigc-saas"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
API_VERSION_PATTERN = re.compile(r"^(\d+)\.(\d+)$")
# Earlier plugin API majors still served, with a warning, during their deprecation window (docs/plugins.md).
DEPRECATED_API_MAJORS: frozenset[int] = frozenset()

log = logging.getLogger(__name__)


class UnknownGenerator(GeneratorError):
    code = "unknown_generator"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    cls: type[Generator]
    distribution: str
    version: str
    entry_point: str

    @property
    def modality(self) -> Modality:
        return self.cls.modality


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that was skipped, and why (`code`: import_failed, api_version_mismatch, invalid_contract,
    name_clash, blocked)."""

    entry_point: str
    distribution: str
    code: str
    message: str


@dataclass
class Registry:
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)

    def get(self, name: str) -> PluginInfo:
        try:
            return self.plugins[name]
        except KeyError:
            raise UnknownGenerator(f"`generator`: no generator plugin named {name!r} is installed") from None

    def __contains__(self, name: str) -> bool:
        return name in self.plugins


def api_version_problem(declared: object) -> str | None:
    """Why a plugin targeting plugin API `declared` cannot run here, or None when it can."""
    platform_major, platform_minor = (int(part) for part in PLUGIN_API_VERSION.split("."))
    match = API_VERSION_PATTERN.match(declared) if isinstance(declared, str) else None
    if match is None:
        return f"`api_version` must be a string 'MAJOR.MINOR' such as {PLUGIN_API_VERSION!r}, got {declared!r}"
    major, minor = int(match[1]), int(match[2])
    if major == platform_major and minor > platform_minor:
        return (
            f"targets plugin API {declared}, newer than this platform's {PLUGIN_API_VERSION}: upgrade aigc-saas "
            "or install a plugin release written for it"
        )
    if major != platform_major and major not in DEPRECATED_API_MAJORS:
        return (
            f"targets plugin API {declared}; this platform implements {PLUGIN_API_VERSION}"
            f"{f' and still serves {sorted(DEPRECATED_API_MAJORS)}.x' if DEPRECATED_API_MAJORS else ''}: "
            "install a plugin release written for it"
        )
    return None


def contract_problems(cls: object) -> list[str]:
    """Every way `cls` breaks the plugin contract, as sentences; empty when it is sound."""
    if not (inspect.isclass(cls) and issubclass(cls, Generator)):
        return [f"{cls!r} is not a subclass of generators.base.Generator"]
    problems = []
    if version_problem := api_version_problem(getattr(cls, "api_version", None)):
        problems.append(version_problem)
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"`name` must match {NAME_PATTERN.pattern}, got {name!r}")
    if getattr(cls, "modality", None) not in set(Modality):
        problems.append(
            f"`modality` must be one of {[m.value for m in Modality]}, got {getattr(cls, 'modality', None)!r}"
        )
    params = getattr(cls, "Params", None)
    if not (inspect.isclass(params) and issubclass(params, BaseModel)):
        problems.append("`Params` must be a pydantic BaseModel subclass")
    else:
        try:
            params.model_json_schema()
        except Exception as exc:  # noqa: BLE001 - any failure here is the plugin's to fix
            problems.append(f"`Params` has no valid JSON Schema: {exc}")
    config = getattr(cls, "Config", None)
    if not (inspect.isclass(config) and issubclass(config, GeneratorConfig)):
        problems.append("`Config` must subclass generators.base.GeneratorConfig")
    else:
        try:
            config()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"`Config()` must build from defaults (give `model_id` a default): {exc}")
    if not isinstance(getattr(cls, "needs", None), HardwareNeeds):
        problems.append("`needs` must be a hardware.HardwareNeeds instance")
    if inspect.isabstract(cls):
        problems.append(f"abstract methods left unimplemented: {sorted(cls.__abstractmethods__)}")
    return problems


def secret_config_fields(config: type[BaseModel]) -> list[str]:
    """Config fields typed `SecretStr` / `SecretBytes` (or optional ones): stored, never shown, passed to the plugin."""

    def is_secret(annotation: object) -> bool:
        if annotation in (SecretStr, SecretBytes):
            return True
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType, typing.Annotated):
            return any(is_secret(arg) for arg in typing.get_args(annotation))
        return False

    return [name for name, info in config.model_fields.items() if is_secret(info.annotation)]


def _distribution(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "0"
    return dist.metadata["Name"], dist.version


def discover(blocked: Iterable[str] = (), eps: Iterable[EntryPoint] | None = None) -> Registry:
    """Load every plugin; one that fails to import, breaks the contract or clashes is skipped and reported."""
    blocked = set(blocked)
    registry = Registry()
    found = eps if eps is not None else entry_points(group=ENTRY_POINT_GROUP)
    for ep in sorted(found, key=lambda e: (_distribution(e)[0] != CORE_DISTRIBUTION, _distribution(e)[0], e.value)):
        dist_name, version = _distribution(ep)
        label = f"{ep.name} = {ep.value}"

        def skip(code: str, message: str, label: str = label, dist_name: str = dist_name) -> None:
            registry.problems.append(PluginProblem(label, dist_name, code, message))
            log.warning("generator plugin skipped (%s): %s — %s", code, label, message)

        if ep.name in blocked:
            skip("blocked", f"plugin {ep.name!r} is blocked by the AIGC_BLOCKED_PLUGINS setting")
            continue
        try:
            cls = ep.load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin must not take the process down
            skip("import_failed", f"{type(exc).__name__}: {exc}")
            continue
        declared = getattr(cls, "api_version", None) if inspect.isclass(cls) else None
        if inspect.isclass(cls) and issubclass(cls, Generator) and (version_problem := api_version_problem(declared)):
            skip("api_version_mismatch", version_problem)
            continue
        if isinstance(declared, str) and int(declared.split(".")[0]) in DEPRECATED_API_MAJORS:
            log.warning("generator plugin %s targets deprecated plugin API %s", label, declared)
        try:
            problems = contract_problems(cls)
        except Exception as exc:  # noqa: BLE001 - e.g. a `needs` property that raises
            problems = [f"checking the contract raised {type(exc).__name__}: {exc}"]
        if problems:
            skip("invalid_contract", "; ".join(problems))
            continue
        if cls.name in blocked:
            skip("blocked", f"plugin {cls.name!r} is blocked by the AIGC_BLOCKED_PLUGINS setting")
            continue
        if cls.name in registry.plugins:
            other = registry.plugins[cls.name]
            skip("name_clash", f"name {cls.name!r} is already taken by {other.entry_point} ({other.distribution})")
            continue
        registry.plugins[cls.name] = PluginInfo(cls.name, cls, dist_name, version, ep.value)
    return registry


def refresh_import_paths() -> None:
    """Make packages installed since this process started importable: forget the import system's directory
    listings, and apply `.pth` files of site-packages this process has not read. An editable install is such a
    file: without this a running process cannot import it, and a re-scan reported the plugin `import_failed`."""
    importlib.invalidate_caches()
    known = {os.path.normcase(os.path.abspath(p)) for p in sys.path if p}
    folders = {*site.getsitepackages(), site.getusersitepackages(), *(p for p in sys.path if p.endswith("-packages"))}
    for folder in sorted(Path(f) for f in folders if Path(f).is_dir()):
        for pth in sorted(folder.glob("*.pth")):
            if str(pth) in _pth_applied:
                continue
            _pth_applied.add(str(pth))
            if pth.name.startswith("__editable__") or pth.stat().st_mtime > _process_started_at():
                # Path lines and `import` lines, as at startup; setuptools' editable finders install idempotently.
                site.addpackage(str(folder), pth.name, known)  # type: ignore[attr-defined]
            else:
                # Read at startup already; only re-add path lines (deduplicated), never re-run its imports.
                for line in pth.read_text(errors="replace").splitlines():
                    path = os.path.abspath(os.path.join(folder, line.strip()))
                    fresh = os.path.normcase(path) not in known
                    if fresh and line.strip() and not line.startswith(("#", "import")) and os.path.isdir(path):
                        sys.path.append(path)
                        known.add(os.path.normcase(path))
    importlib.invalidate_caches()


_pth_applied: set[str] = set()


@functools.cache
def _process_started_at() -> float:
    """When this interpreter started (Linux /proc), else when this module was imported."""
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, `starttime`
        with open("/proc/stat") as stat:
            boot = next(int(line.split()[1]) for line in stat if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


def prepare_rescan(previous: Registry | None) -> None:
    """Before discovering again in a running process: new and editable installs become importable, and an
    upgraded plugin's modules are forgotten so the new code is imported (models already loaded keep the old)."""
    refresh_import_paths()
    before = {info.entry_point: info for info in (previous.plugins.values() if previous else [])}
    now = list(entry_points(group=ENTRY_POINT_GROUP))
    owners = packages_distributions()
    for ep in now:
        dist_name, version = _distribution(ep)
        seen = before.get(ep.value)
        if seen is None or seen.version != version:
            _forget_plugin_modules(_top_level(ep.value), dist_name, owners)
    # A removed plugin's modules go too, so a later install (of any version) is imported from its new files.
    for value in set(before) - {ep.value for ep in now}:
        _forget_plugin_modules(_top_level(value), before[value].distribution, owners)


def _top_level(entry_point_value: str) -> str:
    return entry_point_value.split(":", 1)[0].split(".", 1)[0]


def rescan(previous: Registry | None, blocked: Iterable[str] = ()) -> Registry:
    """`discover` again in a running process (see `prepare_rescan`)."""
    prepare_rescan(previous)
    return discover(blocked)


def _forget_plugin_modules(top_level: str, distribution: str, owners: Mapping[str, list[str]]) -> None:
    """Drop a plugin package's modules from sys.modules, only when that package is the plugin distribution's
    own (never the platform's, never a package another installed distribution provides, never an unknown one)."""
    if distribution in (CORE_DISTRIBUTION, "unknown") or top_level in {"generators", "hardware", "aigc_saas"}:
        return
    if any(owner != distribution for owner in owners.get(top_level, [])):
        return
    for name in [n for n in sys.modules if n == top_level or n.startswith(f"{top_level}.")]:
        del sys.modules[name]
