"""Signed webhooks: POST the finished job to the URL given at submission.

Signature header: `X-AIGC-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the tenant's
webhook secret>`. Receivers recompute it and reject stale timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from aigc_saas.errors import InvalidInput
from aigc_saas.jobs.models import Job

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    pass


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def check_webhook_url(url: str) -> str:
    """Refuse non-HTTP(S) URLs and, unless allowed, hosts on private or loopback networks."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"`webhook_url`: must be an http(s) URL, got {url!r}", code="invalid_webhook_url")
    if not settings.AIGC_WEBHOOK_ALLOW_PRIVATE:
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443)}
        except socket.gaierror:
            raise InvalidInput(f"`webhook_url`: host {parts.hostname!r} does not resolve", code="invalid_webhook_url")
        if any(not ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses):
            raise InvalidInput(
                f"`webhook_url`: {parts.hostname!r} is on a private network; set AIGC_WEBHOOK_ALLOW_PRIVATE to allow it",
                code="invalid_webhook_url",
            )
    return url


def job_event(job: Job) -> dict[str, Any]:
    return {
        "type": f"job.{job.state}",
        "job": {
            "id": str(job.pk),
            "generator": job.generator,
            "state": job.state,
            "progress": job.progress,
            "result": job.result,
            "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "url": f"/api/v1/jobs/{job.pk}",
        },
    }


def deliver(job_id: str) -> int | None:
    job = Job.objects.select_related("tenant").filter(pk=job_id).first()
    if job is None or not job.webhook_url:
        return None
    try:
        check_webhook_url(job.webhook_url)  # again: the host may resolve elsewhere now than at submission
    except InvalidInput as exc:
        log.warning("webhook of job %s not sent: %s", job_id, exc.message)
        return None
    body = json.dumps(job_event(job), sort_keys=True).encode()
    request = urllib.request.Request(
        job.webhook_url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "aigc-saas-webhooks/1",
            "X-AIGC-Event": f"job.{job.state}",
            "X-AIGC-Signature": sign(job.tenant.webhook_secret, int(time.time()), body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.AIGC_WEBHOOK_TIMEOUT) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise DeliveryFailed(f"receiver answered {exc.code}") from exc
        return exc.code
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DeliveryFailed(str(exc)) from exc
