"""Asset params of a job: checked at submission against the tenant's assets, decoded for the plugin on the worker.

An asset param holds one id: an uploaded asset's, or an artifact's of a finished job of the same tenant (so
jobs chain without a download and upload). Both tables use UUIDs, so the id alone says which row it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from aigc_saas.accounts.models import Tenant
from aigc_saas.assets.models import Asset
from aigc_saas.assets.services import touch
from aigc_saas.errors import InvalidInput, NotFound
from aigc_saas.jobs.models import Artifact, Job, JobState
from generators.assets import AssetRejected, AssetSpec, asset_fields, decode, probe
from generators.errors import GeneratorError


@dataclass
class InputSource:
    """An asset or an artifact, as an input: what it is and how to read its bytes."""

    id: str
    content_type: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    asset: Asset | None = None
    artifact: Artifact | None = None

    def read(self) -> bytes:
        row = self.asset or self.artifact
        with row.file.open("rb") as handle:
            return handle.read()


def find_input(tenant: Tenant, value: str) -> InputSource | None:
    """The tenant's asset, or an artifact of one of its succeeded jobs, with this id; None otherwise."""
    try:
        key = uuid.UUID(value)
    except ValueError:
        return None
    asset = Asset.objects.filter(tenant=tenant, pk=key).first()
    if asset is not None:
        return InputSource(str(key), asset.content_type, asset.width, asset.height, asset.duration, asset=asset)
    artifact = Artifact.objects.filter(pk=key, job__tenant=tenant, job__state=JobState.SUCCEEDED).first()
    if artifact is None:
        return None
    source = InputSource(str(key), artifact.content_type, artifact=artifact)
    try:
        info = probe(source.read(), max_pixels=None, max_seconds=None)
    except AssetRejected:
        return source  # a type no input accepts; the type check names it
    source.content_type = info.content_type  # sniffed, as for uploads
    source.width, source.height, source.duration = info.width, info.height, info.duration
    return source


def _field_error(field: str, message: str, code: str) -> InvalidInput:
    text = f"`{field}`: {message}"
    return InvalidInput(text, code=code, fields=[{"field": field, "code": code, "message": text}])


def _check(spec: AssetSpec, source: InputSource, field: str) -> None:
    if source.content_type not in spec.types:
        raise _field_error(
            field,
            f"{source.id} is {source.content_type or 'of an unknown type'}; this input takes {list(spec.types)}",
            "asset_type_refused",
        )
    if spec.kind == "image" and spec.max_pixels and (source.width or 0) * (source.height or 0) > spec.max_pixels:
        raise _field_error(
            field,
            f"{source.id} is {source.width}x{source.height}, over this input's {spec.max_pixels} pixels",
            "image_too_many_pixels",
        )
    if spec.kind == "audio" and spec.max_seconds and (source.duration or 0) > spec.max_seconds:
        raise _field_error(
            field,
            f"{source.id} lasts {source.duration:.1f} s, over this input's {spec.max_seconds:g} s",
            "audio_too_long",
        )


def validate_asset_params(tenant: Tenant, plugin_cls: Any, params: dict[str, Any]) -> None:
    """Every asset param names an input of this tenant of an accepted type and within bounds; touches them."""
    assets = []
    for name, spec in asset_fields(plugin_cls.Params).items():
        value = params.get(name)
        if value is None:
            continue
        field = f"params.{name}"
        source = find_input(tenant, str(value))
        if source is None:
            raise NotFound(
                f"`{field}`: no {spec.kind} asset or job artifact {value} in this tenant",
                code="asset_not_found",
                fields=[{"field": field, "code": "asset_not_found", "message": f"`{field}`: no asset {value}"}],
            )
        _check(spec, source, field)
        if source.asset is not None:
            assets.append(source.asset.pk)
    # The retention sweep skips what was used since its cutoff; an asset it deleted meanwhile is missing now.
    if assets and touch(assets) < len(set(assets)):
        raise NotFound("`params`: an input asset was deleted while the job was submitted", code="asset_not_found")


def attach_inputs(job: Job, params: BaseModel) -> BaseModel:
    """The params the plugin receives: each asset id replaced by the decoded image or waveform."""
    specs = asset_fields(type(params))
    if not specs:
        return params
    decoded = {}
    for name, spec in specs.items():
        value = getattr(params, name)
        if not isinstance(value, str):
            continue
        source = find_input(job.tenant, value)
        if source is None:
            raise GeneratorError(f"`params.{name}`: input {value} no longer exists", code="asset_missing")
        try:
            decoded[name] = decode(spec, source.read(), asset_id=value)
        except AssetRejected as exc:
            raise GeneratorError(f"`params.{name}`: {exc.message}", code=exc.code) from None
    return params.model_copy(update=decoded)


__all__ = ["InputSource", "attach_inputs", "find_input", "validate_asset_params"]
