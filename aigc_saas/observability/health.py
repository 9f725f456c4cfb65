"""Probes: `/healthz` (this process answers) and `/readyz` (database, broker, and a live worker for every
queue that enabled plugins send jobs to), both JSON, 200 or 503."""

from __future__ import annotations

import time
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

# Short: a probe must answer well within a load balancer's timeout, even when the broker hangs.
CHECK_TIMEOUT = 1.0


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _timed(check_database), "broker": _timed(check_broker)}
    checks["workers"] = (
        _timed(check_workers)
        if checks["broker"]["ok"]
        else {"ok": False, "error": "the broker does not answer, so no worker can be asked"}
    )
    ready = all(check["ok"] for check in checks.values())
    response = JsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503
    )
    response._has_been_logged = True  # a probe fails every few seconds while starting: its JSON is the report
    return response


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:  # noqa: BLE001 - a failing dependency is the answer, not a 500
        detail = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {**detail, "seconds": round(time.perf_counter() - started, 4)}


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True}


def check_broker() -> dict[str, Any]:
    client = redis.Redis.from_url(
        settings.CELERY_BROKER_URL, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()
    return {"ok": True}


def required_queues() -> tuple[list[str], dict[str, str]]:
    """Queues that must have a worker: the control queue (webhooks, sweeps) and each enabled plugin's queue;
    and enabled plugins no queue of this deployment can serve (reported, not a readiness failure: their
    submissions already answer `no_worker_for_generator`)."""
    from aigc_saas.errors import ServiceError
    from aigc_saas.plugins.models import PluginRecord
    from aigc_saas.plugins.services import queue_for, registry

    queues = {settings.CELERY_TASK_DEFAULT_QUEUE}
    unserved: dict[str, str] = {}
    reg = registry()
    for record in PluginRecord.objects.filter(enabled=True, installed=True):
        if record.name not in reg:
            continue
        try:
            queues.add(queue_for(record, reg.get(record.name)))
        except ServiceError as exc:
            unserved[record.name] = exc.message
    return sorted(queues), unserved


def live_workers() -> dict[str, list[str]]:
    """Workers that answer now, with the queues each consumes (one broadcast, CHECK_TIMEOUT long)."""
    from aigc_saas.celery import app

    replies = app.control.inspect(timeout=CHECK_TIMEOUT).active_queues() or {}
    return {name: sorted(q["name"] for q in queues) for name, queues in replies.items()}


def check_workers() -> dict[str, Any]:
    queues, unserved = required_queues()
    workers = live_workers()
    served = {queue for consumed in workers.values() for queue in consumed}
    missing = [queue for queue in queues if queue not in served]
    detail: dict[str, Any] = {"ok": not missing, "required_queues": queues, "live": workers}
    if missing:
        detail["missing_queues"] = missing
        detail["error"] = f"no live worker consumes {missing}"
    if unserved:
        detail["plugins_without_queue"] = unserved
    return detail
