"""Async views that wait on the event channel: SSE streams and long polls hold no thread while they wait.

Authentication, scopes and rate limits run through the DRF view each route documents (`initial()`), so these
answer exactly as the sync API does; only the waiting is async.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.request import Request
from rest_framework.views import APIView

from aigc_saas import rows
from aigc_saas.accounts.streams import KeyWatch, TooManyStreams, close_stream, open_stream, quiet_seconds
from aigc_saas.api.errors import json_error
from aigc_saas.api.serializers import JobSerializer
from aigc_saas.errors import NotFound
from aigc_saas.jobs import events, services
from aigc_saas.jobs.models import TERMINAL_STATES, Job
from aigc_saas.web_threads import in_thread

HEARTBEAT_SECONDS = 15.0
EVENT_ID = re.compile(r"\d{1,20}(-\d{1,20})?")  # a Redis stream id, as each event's `id:` carries it


def _authorize(request: HttpRequest, view_cls: type[APIView], kwargs: dict[str, Any]) -> tuple[Request | None, Any]:
    """Run the DRF view's authentication, permissions and throttles; (request, None) or (None, error response)."""
    view = view_cls(**getattr(view_cls, "initkwargs", {}))
    view.args, view.kwargs, view.format_kwarg = (), kwargs, None
    drf_request = view.initialize_request(request, **kwargs)
    view.request, view.headers = drf_request, {}
    try:
        view.initial(drf_request, **kwargs)
        return drf_request, None
    except Exception as exc:  # noqa: BLE001 - DRF turns it into the API's error body
        response = view.finalize_response(drf_request, view.handle_exception(exc))
        return None, response.render()


def _job_or_404(drf_request: Request, job_id: Any) -> Job:
    return services.get_job(drf_request.user.tenant, job_id)


def _serialized(job: Job | Any, drf_request: Request) -> dict[str, Any]:
    """The job's JSON: of this row, or of the row read now when given an id (its artifacts are read only if it
    succeeded)."""
    if not isinstance(job, Job):
        job = rows.one(Job, id=job)
    return JobSerializer(job, context={"request": drf_request}).data


def as_documented(
    view: Callable, documented: type[APIView], *, waits: Callable[[QueryDict], bool] | None = None
) -> Callable:
    """Let drf-spectacular describe an async function view through the DRF view that documents the route.

    `waits`: the async view is needed only when this says the request waits; otherwise the documenting DRF view
    answers it on the sync path (aigc_saas/asgi_handler.py), one thread hop instead of an async round trip."""
    view.cls = documented  # type: ignore[attr-defined]
    view.initkwargs = {}  # type: ignore[attr-defined]
    if waits is not None:
        view.waits = waits  # type: ignore[attr-defined]
        view.sync_view = documented.as_view()  # type: ignore[attr-defined]
    return view


async def job_detail(request: HttpRequest, job_id: Any) -> HttpResponse:
    """`GET /jobs/{id}`; with `?wait=N` it answers once the job is terminal or N seconds passed."""
    from aigc_saas.api.views import JobDetail

    raw = request.GET.get("wait")
    if raw is None:
        return await in_thread(JobDetail.as_view())(request, job_id=job_id)
    wait = _wait_seconds(raw)
    if isinstance(wait, HttpResponse):
        return wait
    drf_request, answer, job = await in_thread(_job_for)(request, JobDetail, job_id, True)
    if answer is not None:  # refused, or the job is already over: one thread hop in all
        return answer
    await events.wait_for_end(job.pk, wait)  # False on timeout or without Redis: the row says where it stands
    return JsonResponse(await in_thread(_serialized)(job.pk, drf_request))


def _wait_seconds(raw: str) -> float | HttpResponse:
    """`?wait=N` as seconds, or the 400 that names it."""
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= settings.AIGC_MAX_WAIT_SECONDS:
        return json_error(
            400,
            "invalid_wait",
            f"`wait`: must be a number of seconds from 0 to {settings.AIGC_MAX_WAIT_SECONDS}, got {raw!r}",
        )
    return wait


@csrf_exempt  # as the DRF view it calls is: API keys, not cookies (DRF checks CSRF itself for a session)
async def job_create(request: HttpRequest) -> HttpResponse:
    """`POST /jobs`; with `?wait=N` it answers once the new job is terminal or N seconds passed: 200 with the
    finished job, else the 202 a submission gets, with the job as it is by then. A client that would submit and
    then long-poll makes one request instead of two. Listing (`GET`) and a submission that is refused answer as
    the sync view does."""
    from aigc_saas.api.views import JobListCreate

    raw = request.GET.get("wait")
    if request.method != "POST" or raw is None:
        return await in_thread(JobListCreate.as_view())(request)
    wait = _wait_seconds(raw)
    if isinstance(wait, HttpResponse):
        return wait
    submitted = await in_thread(_rendered(JobListCreate.as_view()))(request)
    if submitted.status_code != 202:
        return submitted
    accepted = submitted.data
    if accepted["state"] not in TERMINAL_STATES:
        await events.wait_for_end(accepted["id"], wait)  # False on timeout or without Redis: the row says
    job = await in_thread(_serialized)(accepted["id"], request)
    answer = JsonResponse(
        {**job, "warnings": accepted["warnings"]}, status=200 if job["state"] in TERMINAL_STATES else 202
    )
    for header in ("Location", "Warning"):
        if header in submitted:
            answer[header] = submitted[header]
    return answer


def _rendered(view: Callable) -> Callable:
    def call(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        return response.render() if hasattr(response, "render") else response

    return call


def _job_for(
    request: HttpRequest, view_cls: type[APIView], job_id: Any, answer_if_over: bool = False
) -> tuple[Request | None, HttpResponse | None, Job | None]:
    """Authorize the request and find the tenant's job in one trip to a thread: (request, None, job), or
    (None, an error response, None). With `answer_if_over`, a terminal job comes back serialized as the answer."""
    drf_request, error = _authorize(request, view_cls, {"job_id": job_id})
    if error is not None:
        return None, error, None
    try:
        job = _job_or_404(drf_request, job_id)
    except NotFound as exc:
        return None, json_error(404, exc.code, exc.message), None
    if answer_if_over and job.state in TERMINAL_STATES:
        return drf_request, JsonResponse(_serialized(job, drf_request)), job
    return drf_request, None, job


async def job_events(request: HttpRequest, job_id: Any) -> HttpResponse:
    """Server-sent events of one job: replayed from its start (or `Last-Event-ID`), then live, then `end`."""
    from aigc_saas.api.views import JobEvents

    drf_request, error, job = await in_thread(_job_for)(request, JobEvents, job_id)
    if error is not None:
        return error
    after = request.headers.get("Last-Event-ID") or "0"
    if not EVENT_ID.fullmatch(after):
        return json_error(
            400, "invalid_last_event_id", "`Last-Event-ID`: not an event id of this stream (an `id:` it sent)"
        )
    try:
        await open_stream(job.tenant_id)
    except TooManyStreams as exc:
        return json_error(exc.status, exc.code, exc.message)
    key_id = drf_request.user.api_key.pk
    response = StreamingHttpResponse(_stream(job.pk, after, key_id, drf_request), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _frame(event: str, data: Any, event_id: str = "") -> str:
    return _frame_text(event, json.dumps(data, separators=(",", ":")), event_id)


def _frame_text(event: str, data: str, event_id: str = "") -> str:
    """One SSE frame whose data is already JSON text (as the event channel stores it)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


async def _stream(job_id: Any, after: str, key_id: Any, drf_request: Request) -> AsyncIterator[bytes]:
    """The job's events as SSE frames: the events of one read of the stream go out as one chunk (one write to the
    client; the data as the channel stored it, the JSON `_frame` would write). Chunks are bytes: Django encodes a
    str chunk by looking its charset up again each time."""
    tenant_id = drf_request.user.tenant.pk
    key = KeyWatch(key_id)
    try:
        timeout = settings.AIGC_JOB_TIME_LIMIT + 600
        async for batch in events.follow_batches(
            job_id,
            after=after,
            timeout=timeout,
            heartbeat=quiet_seconds(HEARTBEAT_SECONDS),
            pace=settings.AIGC_STREAM_INTERVAL_MS / 1000,
        ):
            if await key.revoked():
                yield _frame(
                    "error", {"code": "api_key_revoked", "message": "the API key of this stream was revoked"}
                ).encode()
                return
            frames, lost_end = [], False
            for event_id, event, data in batch:
                if event == "end":
                    frames.append(_frame("end", await in_thread(_serialized)(job_id, drf_request), event_id))
                    yield "".join(frames).encode()
                    return
                if event == "heartbeat":
                    # A job already over whose `end` was lost while Redis was down: its end frame is read below.
                    lost_end = await in_thread(events._is_terminal)(job_id)
                    if not lost_end:
                        frames.append(": keep-alive\n\n")
                    continue
                frames.append(_frame_text(event, data, event_id))
            if frames:
                yield "".join(frames).encode()
            if lost_end:
                break
        yield _frame("end", await in_thread(_serialized)(job_id, drf_request)).encode()
    finally:
        await close_stream(tenant_id)
