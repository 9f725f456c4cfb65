"""Plugin records synced from the registry; the effective config and queue of each plugin."""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Annotated, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pydantic import SecretBytes, SecretStr, TypeAdapter, ValidationError

from aigc_saas.errors import InvalidInput, ServiceError
from aigc_saas.plugins.models import PluginProblemRecord, PluginRecord
from generators.base import Generator, GeneratorConfig
from generators.errors import ParamsInvalid
from generators.registry import PluginInfo, Registry, discover, secret_config_fields

DEVICE_QUEUES = {"cuda": "gpu", "mps": "gpu", "cpu": "cpu"}


@functools.cache
def registry() -> Registry:
    """The plugins installed in this process (loaded once; `reload_registry` after installing one)."""
    return discover(blocked=settings.AIGC_BLOCKED_PLUGINS)


def reload_registry() -> Registry:
    registry.cache_clear()
    return registry()


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
    record = PluginRecord.objects.filter(name=name).first()
    if record is None or not record.installed or name not in registry():
        raise InvalidInput(f"`generator`: no generator named {name!r} is installed", code="unknown_generator")
    if not record.enabled:
        raise ServiceError(f"`generator`: {name!r} is disabled on this deployment", code="generator_disabled")
    return record, registry().get(name)
