"""Asset services: store an upload after every limit passed, look one up per tenant, delete, sweep expired ones."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from aigc_saas.accounts.models import Tenant
from aigc_saas.assets.models import Asset
from aigc_saas.errors import Conflict, NotFound, ServiceError
from aigc_saas.jobs.models import Job, JobState
from generators.assets import AssetRejected, probe

log = logging.getLogger(__name__)

# What a client may call each type we store; anything else it claims about the bytes is a mismatch.
DECLARED_TYPES = {
    "image/png": {"image/png", "image/x-png"},
    "image/jpeg": {"image/jpeg", "image/jpg", "image/pjpeg"},
    "image/webp": {"image/webp"},
    "audio/wav": {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"},
    "audio/flac": {"audio/flac", "audio/x-flac"},
    "audio/mpeg": {"audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg-3"},
    "audio/ogg": {"audio/ogg", "audio/opus", "audio/vorbis", "application/ogg"},
}
FILE_EXTENSIONS = {
    "image/png": {".png"},
    "image/jpeg": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "image/webp": {".webp"},
    "audio/wav": {".wav", ".wave"},
    "audio/flac": {".flac"},
    "audio/mpeg": {".mp3"},
    "audio/ogg": {".ogg", ".oga", ".opus"},
}
NO_CLAIM = {"", "application/octet-stream", "binary/octet-stream"}


class AssetRefused(ServiceError):
    """An upload over a limit or of the wrong type; `status` is the HTTP status its code answers with."""

    def __init__(self, message: str, code: str, status: int) -> None:
        super().__init__(message, code=code, fields=[{"field": "file", "code": code, "message": message}])
        self.status = status


REJECTION_STATUS = {
    "asset_type_unsupported": 415,
    "asset_corrupt": 400,
    "image_too_many_pixels": 413,
    "audio_too_long": 413,
}


def _refuse(message: str, code: str, status: int) -> AssetRefused:
    return AssetRefused(f"`file`: {message}", code, status)


def check_declared_type(sniffed: str, declared: str, filename: str) -> None:
    """The part's Content-Type and the file name's extension, where given, must agree with the bytes."""
    declared = (declared or "").split(";")[0].strip().lower()
    if declared not in NO_CLAIM and declared not in DECLARED_TYPES[sniffed]:
        raise _refuse(f"declared as {declared!r} but the bytes are {sniffed}", "asset_type_mismatch", 400)
    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix and suffix not in FILE_EXTENSIONS[sniffed]:
        raise _refuse(f"named {filename!r} but the bytes are {sniffed}", "asset_type_mismatch", 400)


def tenant_usage_bytes(tenant: Tenant) -> int:
    return Asset.objects.filter(tenant=tenant).aggregate(total=Sum("size"))["total"] or 0


def store_upload(tenant: Tenant, upload: UploadedFile) -> Asset:
    """Check size, type (sniffed), header bounds and the tenant's storage, then store file and row together."""
    limit = settings.AIGC_ASSET_MAX_BYTES
    if upload.size is None or upload.size > limit:
        raise _refuse(f"{upload.size} bytes is over the limit of {limit} bytes", "asset_too_large", 413)
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise _refuse(f"more than {limit} bytes, over the limit", "asset_too_large", 413)
    if not data:
        raise _refuse("the file is empty", "asset_corrupt", 400)
    try:
        info = probe(data, max_pixels=settings.AIGC_ASSET_MAX_PIXELS, max_seconds=settings.AIGC_ASSET_MAX_AUDIO_SECONDS)
    except AssetRejected as exc:
        raise _refuse(exc.message, exc.code, REJECTION_STATUS.get(exc.code, 400)) from None
    filename = PurePosixPath((upload.name or "").replace("\\", "/")).name[:200]
    check_declared_type(info.content_type, upload.content_type or "", filename)
    asset = Asset(
        id=uuid.uuid4(),
        tenant=tenant,
        kind=info.kind,
        content_type=info.content_type,
        filename=filename,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        width=info.width,
        height=info.height,
        duration=info.duration,
        sample_rate=info.sample_rate,
        channels=info.channels,
    )
    with transaction.atomic():
        # The tenant row lock makes concurrent uploads count against the storage limit one by one.
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        used, cap = tenant_usage_bytes(tenant), settings.AIGC_ASSET_TENANT_MAX_BYTES
        if used + len(data) > cap:
            raise _refuse(
                f"this tenant stores {used} bytes of assets; {len(data)} more is over its limit of {cap} bytes; "
                "delete assets it no longer needs",
                "asset_storage_full",
                413,
            )
        asset.file.save(asset.id.hex, ContentFile(data), save=False)
        try:
            asset.save()
        except Exception:
            asset.file.storage.delete(asset.file.name)
            raise
    return asset


def get_asset(tenant: Tenant, asset_id: Any, *, field: str = "asset_id") -> Asset:
    """An asset of this tenant; another tenant's id is indistinguishable from a missing one."""
    try:
        key = uuid.UUID(str(asset_id))
    except ValueError:
        raise NotFound(f"`{field}`: no asset {asset_id} in this tenant", code="asset_not_found") from None
    asset = Asset.objects.filter(tenant=tenant, pk=key).first()
    if asset is None:
        raise NotFound(f"`{field}`: no asset {asset_id} in this tenant", code="asset_not_found")
    return asset


def _uuids_in(value: Any, found: set[str]) -> None:
    if isinstance(value, str) and len(value) == 36:
        with contextlib.suppress(ValueError):
            found.add(str(uuid.UUID(value)))
    elif isinstance(value, dict):
        for item in value.values():
            _uuids_in(item, found)
    elif isinstance(value, list):
        for item in value:
            _uuids_in(item, found)


def referenced_ids(tenant: Tenant | None = None) -> set[str]:
    """Every id in the params of queued or running jobs: an asset named there is in use.

    Computed from the params themselves (any UUID anywhere in them), so it holds for every plugin version and
    needs no second record that could drift from the job.
    """
    jobs = Job.objects.filter(state__in=[JobState.QUEUED, JobState.RUNNING])
    if tenant is not None:
        jobs = jobs.filter(tenant=tenant)
    found: set[str] = set()
    for params in jobs.values_list("params", flat=True).iterator():
        _uuids_in(params, found)
    return found


def delete_asset(asset: Asset) -> None:
    """Delete the row and the file; refused while a queued or running job reads it."""
    if str(asset.pk) in referenced_ids(asset.tenant):
        raise Conflict(
            f"`asset_id`: asset {asset.pk} is an input of a queued or running job; delete it once the job has finished",
            code="asset_in_use",
        )
    _delete(asset)


def _delete(asset: Asset) -> None:
    name = asset.file.name
    storage = asset.file.storage
    asset.delete()
    transaction.on_commit(lambda: storage.delete(name))


def sweep_expired_assets(now: datetime | None = None) -> int:
    """Delete assets unused for the retention period that no queued or running job references; returns how many.

    Submission touches `last_used_at` before it creates the job, so an asset a new job is about to read is never
    past the cutoff here, even when the job row did not exist yet when `referenced_ids` ran.
    """
    cutoff = (now or timezone.now()) - timedelta(hours=settings.AIGC_ASSET_RETENTION_HOURS)
    in_use = referenced_ids()
    deleted = 0
    for asset in Asset.objects.filter(last_used_at__lt=cutoff).exclude(pk__in=in_use).iterator():
        with transaction.atomic():
            # Re-checked in the delete itself: a submission may have touched it since the query.
            if Asset.objects.filter(pk=asset.pk, last_used_at__lt=cutoff).delete()[0]:
                storage, name = asset.file.storage, asset.file.name
                transaction.on_commit(lambda s=storage, n=name: s.delete(n))
                deleted += 1
    if deleted:
        log.info("deleted %d expired assets", deleted)
    return deleted


def touch(asset_ids: list[Any]) -> int:
    """Mark assets as just used; returns how many still exist."""
    return Asset.objects.filter(pk__in=asset_ids).update(last_used_at=timezone.now())
