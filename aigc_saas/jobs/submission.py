"""What a submission checks before it records a job: its params as the plugin validates and stores them, its
expected engine steps, and an idempotency key's earlier job. Reads and checks only; the job is recorded by
services.submit_job, where every state change of a job is."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from aigc_saas.accounts.models import Tenant
from aigc_saas.errors import Conflict, InvalidInput
from aigc_saas.jobs.models import Job
from aigc_saas.validation import unstorable_paths
from generators.errors import ParamsInvalid

log = logging.getLogger(__name__)


def validated_params(cls: Any, defaults: dict[str, Any], params: Any) -> tuple[dict[str, Any], int]:
    """The params as stored (validated by the plugin's model) and the job's expected engine steps."""
    if not isinstance(params, dict):
        raise InvalidInput(
            "`params` must be a JSON object",
            fields=[{"field": "params", "code": "type", "message": "`params` must be a JSON object"}],
        )
    code, message, bad = unstorable_paths(params, "params")
    if bad:
        fields = [{"field": path, "code": code, "message": f"`{path}`: {message}"} for path in bad]
        raise InvalidInput(fields[0]["message"], fields=fields)
    try:
        model = cls.validate_params({**defaults, **params})
    except ParamsInvalid as exc:
        fields = [{**e, "field": f"params.{e['field']}", "message": f"`params.{e['message'][1:]}"} for e in exc.errors]
        raise InvalidInput("; ".join(f["message"] for f in fields), fields=fields) from None
    return model.model_dump(mode="json", by_alias=True), expected_steps(cls, model)  # aliased fields keep names


def expected_steps(cls: Any, params: Any) -> int:
    try:
        return max(1, int(cls.expected_steps(params)))
    except Exception:  # noqa: BLE001 - a plugin's estimate only orders a full queue: it never refuses a job
        log.warning("%s.expected_steps failed; the job counts as one step", cls.__name__, exc_info=True)
        return 1


def request_hash(generator: str, params: Any, model: str | None, webhook_url: str) -> str:
    body = json.dumps([generator, params, model or "", webhook_url or ""], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def idempotent_replay(tenant: Tenant, key: str, request_hash: str) -> Job | None:
    """The job an earlier request with this key made, if it is still kept; 409 when the body differs."""
    kept_since = timezone.now() - timedelta(hours=settings.AIGC_IDEMPOTENCY_HOURS)
    earlier = Job.objects.filter(tenant=tenant, idempotency_key=key, created_at__gte=kept_since).first()
    if earlier is not None and earlier.request_hash != request_hash:
        raise Conflict(
            f"`Idempotency-Key`: {key!r} was used for a different request; use a new key for a new job",
            code="idempotency_key_reused",
        )
    return earlier
