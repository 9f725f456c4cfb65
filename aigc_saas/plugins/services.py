"""Plugin records synced from the registry; the effective config and queue of each plugin."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pydantic import SecretBytes, SecretStr, TypeAdapter, ValidationError

from aigc_saas import rows
from aigc_saas.errors import InvalidInput, ServiceError
from aigc_saas.plugins.models import PluginProblemRecord, PluginRecord
from generators.base import Generator, GeneratorConfig
from generators.errors import ParamsInvalid
from generators.registry import (
    PluginInfo,
    Registry,
    discover,
    prepare_rescan,
    refresh_import_paths,
    secret_config_fields,
)

DEVICE_QUEUES = {"cuda": "gpu", "mps": "gpu", "cpu": "cpu"}
log = logging.getLogger(__name__)


# Every process keeps the registry it loaded; a re-scan anywhere (admin, `sync_plugins`, migrate) bumps this
# Redis counter, and each process compares it with its own at most once per STAMP_CHECK_SECONDS and re-scans
# when it moved: an installed, upgraded or removed plugin reaches every web and worker process, no restart.
STAMP_KEY = "aigc:plugins:registry-stamp"
STAMP_CHECK_SECONDS = 1.0
STAMP_RETRY_SECONDS = 5.0  # after the broker failed to answer: do not pay its timeout on every call


@dataclass
class _Loaded:
    registry: Registry | None = None
    stamp: bytes | None = None
    next_check: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


_loaded = _Loaded()


def registry() -> Registry:
    """The plugins installed, as this process last scanned them (re-scanned when another process re-scanned)."""
    now = time.monotonic()
    if _loaded.registry is not None and now < _loaded.next_check:
        return _loaded.registry
    with _loaded.lock:
        if _loaded.registry is None or now >= _loaded.next_check:
            stamp, ok = read_stamp()
            _loaded.next_check = now + (STAMP_CHECK_SECONDS if ok else STAMP_RETRY_SECONDS)
            if _loaded.registry is None:
                # A process may first look long after it started: packages installed since must import too.
                refresh_import_paths()
                _loaded.registry, _loaded.stamp = discover(blocked=settings.AIGC_BLOCKED_PLUGINS), stamp
            elif ok and stamp != _loaded.stamp:
                log.info("plugin registry stamp moved (%s -> %s): re-scanning plugins", _loaded.stamp, stamp)
                _loaded.registry = _rescan(_loaded.registry)
                _loaded.stamp = stamp
        return _loaded.registry


def reload_registry() -> Registry:
    """Re-scan in this process now (after `pip install`); `sync_plugins` then tells the other processes."""
    with _loaded.lock:
        _loaded.registry = _rescan(_loaded.registry)
        _loaded.stamp, ok = read_stamp()
        _loaded.next_check = time.monotonic() + (STAMP_CHECK_SECONDS if ok else STAMP_RETRY_SECONDS)
        return _loaded.registry


def _rescan(previous: Registry | None) -> Registry:
    prepare_rescan(previous)
    return discover(blocked=settings.AIGC_BLOCKED_PLUGINS)


def _redis() -> redis.Redis:
    return _client_for(settings.CELERY_BROKER_URL)


@functools.cache
def _client_for(url: str) -> redis.Redis:
    # One pooled client per process (redis-py resets its pool after a fork): a check is one GET, no new connection.
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def read_stamp() -> tuple[bytes | None, bool]:
    """The shared registry stamp and whether Redis answered (None: no re-scan recorded yet)."""
    try:
        return _redis().get(STAMP_KEY), True
    except redis.RedisError as exc:
        log.debug("plugin registry stamp unreadable: %s", exc)
        return None, False


def bump_stamp() -> None:
    """Tell every process to re-scan; this one already has, so it takes the new stamp without re-scanning."""
    try:
        stamp = str(_redis().incr(STAMP_KEY)).encode()
    except redis.RedisError as exc:
        # Before Redis first answered here (e.g. `migrate` ahead of the embedded Redis), no process can be waiting.
        level = logging.WARNING if _loaded.stamp is not None else logging.INFO
        log.log(level, "could not tell other processes to re-scan plugins (Redis: %s); they keep their list", exc)
        return
    with _loaded.lock:
        _loaded.stamp = stamp


def plugin_class(name: str) -> type[Generator]:
    return registry().get(name).cls


@transaction.atomic
def sync_plugins() -> list[PluginRecord]:
    """Create or refresh one record per installed plugin; mark vanished ones; record the problems."""
    reg = registry()
    now = timezone.now()
    records = []
    for info in reg.plugins.values():
        record, _ = PluginRecord.objects.update_or_create(
            name=info.name,
            defaults={
                "modality": str(info.modality),
                "description": info.cls.describe(),
                "distribution": info.distribution,
                "version": info.version,
                "entry_point": info.entry_point,
                "installed": True,
                "params_schema": info.cls.Params.model_json_schema(),
                "config_schema": info.cls.Config.model_json_schema(),
                "synced_at": now,
            },
        )
        records.append(record)
    PluginRecord.objects.exclude(name__in=reg.plugins).update(installed=False, synced_at=now)
    PluginProblemRecord.objects.all().delete()
    PluginProblemRecord.objects.bulk_create(
        PluginProblemRecord(entry_point=p.entry_point, distribution=p.distribution, code=p.code, message=p.message)
        for p in reg.problems
    )
    transaction.on_commit(bump_stamp)
    return records


def sync_plugins_after_migrate(**kwargs: Any) -> None:
    sync_plugins()


def effective_config(record: PluginRecord, cls: type[Generator]) -> GeneratorConfig:
    """Plugin defaults (and their env overrides) < the admin's stored config and secrets < the admin's model id."""
    secrets = {k: v for k, v in (record.secrets or {}).items() if k in secret_config_fields(cls.Config)}
    raw = {**(record.config or {}), **secrets}
    if record.model_id:
        raw["model_id"] = record.model_id
    try:
        return cls.validate_config(raw)
    except ParamsInvalid as exc:
        raise ServiceError(
            f"plugin {record.name!r} has an invalid configuration: {exc.message}", code="plugin_misconfigured"
        ) from None


def config_fingerprint(config: GeneratorConfig) -> str:
    """A digest of every config value, secrets included, for cache keys (`model_dump` masks secrets)."""

    def reveal(value: Any) -> Any:
        if isinstance(value, SecretStr | SecretBytes):
            raw = value.get_secret_value()
            return raw.decode("latin-1") if isinstance(raw, bytes) else raw
        raise TypeError(f"cannot fingerprint {type(value).__name__}")

    values = {name: getattr(config, name) for name in type(config).model_fields}
    dumped = json.dumps(
        config.model_dump(mode="json") | {k: v for k, v in values.items() if k in secret_config_fields(type(config))},
        default=reveal,
        sort_keys=True,
    )
    return hashlib.sha256(dumped.encode()).hexdigest()


def secrets_with(record: PluginRecord, changes: dict[str, str | None]) -> dict[str, str]:
    """The record's secrets after `changes` (a value sets a secret, None clears it); unknown names are refused."""
    allowed = secret_config_fields(plugin_class(record.name).Config)
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise InvalidInput(f"`secrets`: {unknown} are not secret fields of {record.name!r}; it declares {allowed}")
    secrets = dict(record.secrets or {})
    for name, value in changes.items():
        if value is None:
            secrets.pop(name, None)
        else:
            secrets[name] = value
    return secrets


@transaction.atomic
def set_plugin_secrets(record: PluginRecord, changes: dict[str, str | None]) -> PluginRecord:
    """Store or clear secret config values after checking the plugin's config accepts them."""
    record = PluginRecord.objects.select_for_update().get(pk=record.pk)
    record.secrets = secrets_with(record, changes)
    effective_config(record, plugin_class(record.name))
    record.save(update_fields=["secrets"])
    return record


def validate_record(record: PluginRecord) -> None:
    """Refuse admin edits that the plugin's own config or params models reject."""
    cls = plugin_class(record.name)
    exposed = sorted(set(record.config or {}) & set(secret_config_fields(cls.Config)))
    if exposed:
        raise InvalidInput(
            f"`config`: {exposed} are secret fields; set them under Secrets, where they are stored but never shown"
        )
    effective_config(record, cls)
    if record.default_params:
        fields = set(cls.Params.model_fields)
        unknown = sorted(set(record.default_params) - fields)
        if unknown:
            raise InvalidInput(f"`default_params`: unknown params {unknown}; the plugin accepts {sorted(fields)}")
        for name, value in record.default_params.items():
            field = cls.Params.model_fields[name]
            try:
                TypeAdapter(Annotated[field.annotation, field]).validate_python(value)
            except ValidationError as exc:
                reason = exc.errors(include_url=False)[0]["msg"]
                raise InvalidInput(f"`default_params.{name}`: {reason} (got {value!r})") from None


def queue_for(record: PluginRecord, info: PluginInfo) -> str:
    """The admin's queue, else the first queue with workers in the plugin's device preference order."""
    if record.queue:
        return record.queue
    for device in info.cls.needs.devices:
        queue = DEVICE_QUEUES[device]
        if queue in settings.AIGC_QUEUES:
            return queue
    raise ServiceError(
        f"`generator`: {record.name!r} needs one of {list(info.cls.needs.devices)} and this deployment has "
        f"workers only for queues {settings.AIGC_QUEUES}",
        code="no_worker_for_generator",
    )


def enabled_plugin(name: str) -> tuple[PluginRecord, PluginInfo]:
    """The record and registry entry of an installed, enabled plugin, or a 4xx naming `generator`."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(
            "`generator`: give the name of a generator (see GET /api/v1/generators)", code="invalid_generator"
        )
    # The schemas are the admin's and the catalogue's to read: parsing their JSON was 7 % of a submission's CPU.
    record = rows.one(PluginRecord, defer=("params_schema", "config_schema", "description"), name=name)
    if record is None or not record.installed or name not in registry():
        raise InvalidInput(f"`generator`: no generator named {name!r} is installed", code="unknown_generator")
    if not record.enabled:
        raise ServiceError(f"`generator`: {name!r} is disabled on this deployment", code="generator_disabled")
    return record, registry().get(name)
