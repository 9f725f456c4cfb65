"""Discover generator plugins through the `aigc_saas.generators` entry-point group."""

from __future__ import annotations

import inspect
import logging
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from pydantic import BaseModel, SecretBytes, SecretStr

from generators.base import Generator, GeneratorConfig, Modality
from generators.errors import GeneratorError
from hardware import HardwareNeeds

ENTRY_POINT_GROUP = "aigc_saas.generators"
# Plugins shipped with the platform load first, so an installed package can never take a built-in's name.
CORE_DISTRIBUTION = "aigc-saas"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")

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
    """A plugin that was skipped, and why (`code`: import_failed, invalid_contract, name_clash, blocked)."""

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


def contract_problems(cls: object) -> list[str]:
    """Every way `cls` breaks the plugin contract, as sentences; empty when it is sound."""
    if not (inspect.isclass(cls) and issubclass(cls, Generator)):
        return [f"{cls!r} is not a subclass of generators.base.Generator"]
    problems = []
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
