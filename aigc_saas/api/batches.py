"""Many jobs in one request, and what every submission endpoint shares: the `Idempotency-Key` header and the
warning that no live worker consumes a job's queue."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from aigc_saas.accounts.throttling import check_submission
from aigc_saas.api.errors import exception_handler
from aigc_saas.api.serializers import ErrorBodySerializer, JobCreateSerializer, JobSerializer
from aigc_saas.errors import InvalidInput, ServiceError
from aigc_saas.jobs import capacity, services
from aigc_saas.jobs.models import Job, JobState
from generators.errors import GeneratorError

# The model keeps 200 characters; a batch item's key is `<key>#<index>`, so a client's key stays under that.
MAX_KEY_LENGTH = 150
KEY_PATTERN = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")  # printable ASCII, no edge spaces
KEY_RULE = f"1 to {MAX_KEY_LENGTH} printable ASCII characters"

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": f"^{KEY_PATTERN.pattern}$"},
    OpenApiParameter.HEADER,
    description=(
        f"A unique key ({KEY_RULE}, e.g. a UUID) that makes a retry safe: the same key with the same body "
        f"returns the job first made with it (no second job) for at least {settings.AIGC_IDEMPOTENCY_HOURS} h; "
        "the same key with another body answers 409 `idempotency_key_reused`. A batch gives item `i` the key "
        "`<key>#<i>`."
    ),
)
WARNING_HEADER = OpenApiParameter(
    "Warning",
    str,
    OpenApiParameter.HEADER,
    response=[202],
    description='`199 aigc-saas "<message>"` for each entry of `warnings` (e.g. no live worker consumes the queue).',
)


def idempotency_key(request: Request) -> str:
    """The request's `Idempotency-Key`, or "" without one; a bad key is a 400 (never silently ignored)."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return ""
    problem = ""
    if not raw.strip():
        problem = "is empty"
    elif len(raw) > MAX_KEY_LENGTH:
        problem = f"has {len(raw)} characters"
    elif not KEY_PATTERN.fullmatch(raw):
        problem = "has characters outside printable ASCII, or spaces at an end"
    if problem:
        message = f"`Idempotency-Key` {problem}; send {KEY_RULE}, or leave the header out"
        raise InvalidInput(
            message,
            code="invalid_idempotency_key",
            fields=[{"field": "Idempotency-Key", "code": "invalid_idempotency_key", "message": message}],
        )
    return raw


class WarningSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="`no_worker_for_queue`: no live worker consumes the job's queue now.")
    queue = serializers.CharField()
    message = serializers.CharField()


def queue_warnings(jobs: Iterable[Job], live: set[str] | None = None) -> list[dict[str, str]]:
    """A warning per queue of these still-queued jobs that no live worker consumes (they wait, then fail)."""
    queues = sorted({job.queue for job in jobs if job.state == JobState.QUEUED})
    if not queues:
        return []
    live = capacity.live_queues() if live is None else live
    return [
        {
            "code": "no_worker_for_queue",
            "queue": queue,
            "message": f"no live worker consumes queue {queue!r} now: the job waits for one and fails with "
            f"`no_worker_for_queue` if none starts within {settings.AIGC_NO_WORKER_FAIL_SECONDS} s",
        }
        for queue in queues
        if queue not in live
    ]


def warning_headers(warnings: list[dict[str, str]]) -> dict[str, str]:
    if not warnings:
        return {}
    quoted = (w["message"].replace("\\", "\\\\").replace('"', '\\"') for w in warnings)
    return {"Warning": ", ".join(f'199 aigc-saas "{text}"' for text in quoted)}


class JobAcceptedSerializer(JobSerializer):
    """A submitted job, with what the client should know about it now."""

    warnings = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "warnings"]

    @extend_schema_field(WarningSerializer(many=True))
    def get_warnings(self, obj: Job) -> list[dict[str, str]]:
        return queue_warnings([obj], self.context.get("live_queues"))


def accepted(job: Job, request: Request) -> Response:
    """The 202 of a single submission: the job, its warnings (also as `Warning` headers) and its `Location`."""
    data = JobAcceptedSerializer(job, context={"request": request}).data
    headers = {"Location": data["url"], **warning_headers(data["warnings"])}
    return Response(data, status=status.HTTP_202_ACCEPTED, headers=headers)


class BatchCreateSerializer(serializers.Serializer):
    """The request body (documentation: items are validated one by one, each accepted or refused on its own)."""

    jobs = serializers.ListField(child=JobCreateSerializer(), min_length=1, max_length=settings.AIGC_BATCH_MAX_JOBS)


class BatchItemSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position in the request's `jobs`.")
    status = serializers.IntegerField(help_text="202 when accepted, else the status a single submission would get.")
    job = JobSerializer(allow_null=True, help_text="The accepted job, else null.")
    error = ErrorBodySerializer.Inner(allow_null=True, help_text="Why this item was refused, else null.")


class BatchResultSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField(help_text="Follow the batch's jobs with `GET /api/v1/jobs?batch=<batch_id>`.")
    jobs_url = serializers.URLField()
    accepted = serializers.IntegerField()
    refused = serializers.IntegerField()
    results = BatchItemSerializer(many=True)
    warnings = WarningSerializer(many=True)


def _envelope(data: Any) -> list[Any]:
    items = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise InvalidInput("`jobs`: send a JSON object with a `jobs` list of job submissions", code="invalid_request")
    if not items:
        raise InvalidInput("`jobs`: the list is empty; send 1 or more jobs", code="batch_empty")
    if len(items) > settings.AIGC_BATCH_MAX_JOBS:
        raise InvalidInput(
            f"`jobs`: {len(items)} jobs, at most {settings.AIGC_BATCH_MAX_JOBS} in one batch", code="batch_too_large"
        )
    return items


def _refusal(exc: Exception, index: int) -> tuple[int, dict[str, Any]]:
    """The error a single submission would answer, with its fields named inside the batch (`jobs.<i>.…`)."""
    response = exception_handler(exc, {})
    assert response is not None  # only errors the handler knows reach here
    error = dict(response.data["error"])
    prefix = f"jobs.{index}"
    fields = []
    for field in error.get("fields", []):
        name = field.get("field", "body")
        fields.append(
            {
                **field,
                "field": f"{prefix}.{name}",
                "message": field["message"].replace(f"`{name}`", f"`{prefix}.{name}`", 1),
            }
        )
    error["fields"] = fields
    error["message"] = f"`{prefix}`: {error['message']}"
    return response.status_code, error


def _batch_id(request: Request, key: str) -> uuid.UUID:
    """A new batch, or the one an earlier request with this key made (its retry joins the same batch)."""
    if key:
        earlier = (
            Job.objects.filter(
                tenant=request.user.tenant, idempotency_key__startswith=f"{key}#", batch_id__isnull=False
            )
            .values_list("batch_id", flat=True)
            .first()
        )
        if earlier:
            return earlier
    return uuid.uuid4()


class JobBatchCreate(APIView):
    """Submit many jobs at once; each is validated and accepted or refused on its own, under one batch id."""

    required_scopes = {"POST": "submit"}
    throttle_scope = "submissions"  # the request counts once; every further item counts one more submission

    @extend_schema(
        request=BatchCreateSerializer,
        parameters=[IDEMPOTENCY_HEADER, WARNING_HEADER],
        responses={
            202: BatchResultSerializer,
            200: BatchResultSerializer,
            **{code: ErrorBodySerializer for code in (400, 401, 404, 409, 413, 429)},
        },
        description=(
            f"Up to {settings.AIGC_BATCH_MAX_JOBS} jobs, each shaped as for `POST /api/v1/jobs`. Answers 202 when "
            "at least one job was accepted and 200 when none was; `results[i]` says for item `i` either the job or "
            "the error a single submission would have got (400, 404, 409 or 429). All accepted jobs share "
            "`batch_id`."
        ),
    )
    def post(self, request: Request) -> Response:
        items = _envelope(request.data)
        key = idempotency_key(request)
        tenant, api_key = request.user.tenant, request.user.api_key
        batch_id = _batch_id(request, key)
        results: list[dict[str, Any]] = []
        jobs: list[Job] = []
        for index, item in enumerate(items):
            try:
                if index:
                    check_submission(request, api_key)  # the throttle counted the first item
                if not isinstance(item, dict):
                    raise InvalidInput("the item is not a JSON object", code="invalid_request")
                body = JobCreateSerializer(data=item)
                body.is_valid(raise_exception=True)
                job = services.submit_job(
                    tenant,
                    api_key=api_key,
                    idempotency_key=f"{key}#{index}" if key else "",
                    batch_id=batch_id,
                    **body.validated_data,
                )
            except (ServiceError, GeneratorError, exceptions.APIException) as exc:
                code, error = _refusal(exc, index)
                results.append({"index": index, "status": code, "job": None, "error": error})
                continue
            jobs.append(job)
            results.append({"index": index, "status": status.HTTP_202_ACCEPTED, "job": job, "error": None})
        batch_id = next((job.batch_id for job in jobs if job.batch_id), batch_id)
        warnings = queue_warnings(jobs)
        data = BatchResultSerializer(
            {
                "batch_id": batch_id,
                "jobs_url": f"{reverse('api:job-list', request=request)}?batch={batch_id}",
                "accepted": len(jobs),
                "refused": len(items) - len(jobs),
                "results": results,
                "warnings": warnings,
            },
            context={"request": request},
        ).data
        code = status.HTTP_202_ACCEPTED if jobs else status.HTTP_200_OK
        return Response(data, status=code, headers=warning_headers(warnings))
