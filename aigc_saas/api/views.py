"""Thin views: parse, call one service, serialise."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aigc_saas.api.batches import IDEMPOTENCY_HEADER, WARNING_HEADER, JobAcceptedSerializer, accepted, idempotency_key
from aigc_saas.api.renderers import EventStreamRenderer, PassthroughRenderer
from aigc_saas.api.serializers import (
    AccountSerializer,
    ErrorBodySerializer,
    GeneratorSerializer,
    JobCreateSerializer,
    JobSerializer,
    JobStreamEventSerializer,
    PluginProblemSerializer,
)
from aigc_saas.errors import InvalidInput, NotFound
from aigc_saas.jobs import capacity, services
from aigc_saas.jobs.models import Artifact, Job, JobState
from aigc_saas.observability.logging import bind_job
from aigc_saas.plugins.models import PluginProblemRecord, PluginRecord
from aigc_saas.plugins.services import effective_config, registry

ERRORS = {code: OpenApiResponse(ErrorBodySerializer) for code in (400, 401, 404)}
# `?wait=N` (a long poll, a submission that waits): seconds, bounded by this deployment's setting.
WAIT_SECONDS = {"type": "number", "minimum": 0, "maximum": settings.AIGC_MAX_WAIT_SECONDS}


class Account(APIView):
    """Who am I: the caller's tenant, key, quotas and today's usage."""

    required_scopes = {"GET": "read"}

    @extend_schema(responses={200: AccountSerializer, 401: ErrorBodySerializer})
    def get(self, request: Request) -> Response:
        tenant, key = request.user.tenant, request.user.api_key
        return Response(
            {
                "tenant": tenant.slug,
                "name": tenant.name,
                "api_key": f"{key.name} (aigc_{key.prefix}_…)",
                "webhook_secret": tenant.webhook_secret,
                "quotas": {"max_jobs_per_day": tenant.max_jobs_per_day, "max_active_jobs": tenant.max_active_jobs},
                "usage": capacity.usage(tenant),
            }
        )


class JobListCreate(generics.ListAPIView):
    required_scopes = {"GET": "read", "POST": "submit"}
    throttle_scope = "submissions"

    serializer_class = JobSerializer

    def get_queryset(self):  # noqa: ANN201
        jobs = Job.objects.filter(tenant=self.request.user.tenant).prefetch_related("artifacts")
        state = self.request.query_params.get("state")
        if state:
            if state not in JobState.values:
                raise InvalidInput(f"`state`: {state!r} is not one of {JobState.values}", code="invalid_filter")
            jobs = jobs.filter(state=state)
        if generator := self.request.query_params.get("generator"):
            jobs = jobs.filter(generator=generator)
        if (batch := self.request.query_params.get("batch")) is not None:
            try:
                jobs = jobs.filter(batch_id=uuid.UUID(batch))
            except ValueError:
                raise InvalidInput(f"`batch`: {batch!r} is not a batch id (a UUID)", code="invalid_filter") from None
        return jobs

    @extend_schema(
        parameters=[
            OpenApiParameter("state", enum=JobState.values, description="Only jobs in this state."),
            OpenApiParameter("generator", str, description="Only jobs of this generator."),
            OpenApiParameter("batch", OpenApiTypes.UUID, description="Only jobs of this batch (`POST /jobs/batch`)."),
        ],
        responses={200: JobSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=JobCreateSerializer,
        parameters=[
            IDEMPOTENCY_HEADER,
            WARNING_HEADER,
            OpenApiParameter(
                "wait",
                WAIT_SECONDS,
                description="Submit and wait: answer once the job is terminal (200, with its result) or after this "
                "many seconds (202 with the job as it is then), instead of a long poll after the 202.",
            ),
        ],
        responses={
            200: JobAcceptedSerializer,
            202: JobAcceptedSerializer,
            **{code: ErrorBodySerializer for code in (409, 413, 429)},
            **ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        body = JobCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = idempotency_key(request)
        job = services.submit_job(
            request.user.tenant, api_key=request.user.api_key, idempotency_key=key, **body.validated_data
        )
        return accepted(job, request)


class JobDetail(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "wait",
                WAIT_SECONDS,
                description="Long poll: answer once the job is terminal, or after this many seconds.",
            )
        ],
        responses={200: JobSerializer, **ERRORS},
    )
    def get(self, request: Request, job_id: str) -> Response:
        with bind_job(job_id, request.user.tenant.pk):  # log lines of this request name the job and tenant
            job = services.get_job(request.user.tenant, job_id)
            return Response(JobSerializer(job, context={"request": request}).data)


class JobCancel(APIView):
    required_scopes = {"POST": "submit"}

    @extend_schema(request=None, responses={200: JobSerializer, 409: ErrorBodySerializer, **ERRORS})
    def post(self, request: Request, job_id: str) -> Response:
        with bind_job(job_id, request.user.tenant.pk):
            job = services.cancel_job(services.get_job(request.user.tenant, job_id))
            return Response(JobSerializer(job, context={"request": request}).data)


class JobEvents(APIView):
    """Server-sent events of a job, replayed from its start: `state`, `progress` and `token` events (token texts
    concatenate to `result.text`), then one `end` event with the final job. Served by the async view
    `aigc_saas.api.streams.job_events`; this class documents the route and carries its authentication,
    scopes and rate limits."""

    required_scopes = {"GET": "read"}

    renderer_classes = [EventStreamRenderer, JSONRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "Last-Event-ID",
                str,
                OpenApiParameter.HEADER,
                description="Resume after this event (an `id:` the stream sent); anything else is a 400.",
                pattern=r"^\d{1,20}(-\d{1,20})?$",
            )
        ],
        responses={(200, "text/event-stream"): JobStreamEventSerializer, 429: ErrorBodySerializer, **ERRORS},
    )
    def get(self, request: Request, job_id: str) -> StreamingHttpResponse:
        raise NotImplementedError("served by aigc_saas.api.streams.job_events")


class ArtifactContent(APIView):
    required_scopes = {"GET": "read"}

    renderer_classes = [JSONRenderer, PassthroughRenderer]

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **ERRORS})
    def get(self, request: Request, job_id: str, artifact_id: str) -> FileResponse:
        job = services.get_job(request.user.tenant, job_id)
        artifact = Artifact.objects.filter(job=job, pk=artifact_id).first()
        if artifact is None:
            raise NotFound(f"`artifact_id`: no artifact {artifact_id} in job {job_id}")
        response = FileResponse(
            artifact.file.open("rb"),
            content_type=artifact.content_type,
            as_attachment=False,
            filename=artifact.filename,
        )
        response["Content-Length"] = str(artifact.size)
        response["ETag"] = f'"{artifact.sha256}"'
        response["X-Content-SHA256"] = artifact.sha256
        return response


def enabled_generators():  # noqa: ANN201
    return PluginRecord.objects.filter(enabled=True, installed=True, name__in=list(registry().plugins))


def generator_context(request: Request, records) -> dict:  # noqa: ANN001
    reg = registry()
    defaults = {r.name: effective_config(r, reg.get(r.name).cls).model_id for r in records}
    return {"request": request, "default_models": defaults}


class GeneratorList(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(responses={200: GeneratorSerializer(many=True), 401: ErrorBodySerializer})
    def get(self, request: Request) -> Response:
        records = list(enabled_generators())
        return Response(GeneratorSerializer(records, many=True, context=generator_context(request, records)).data)


class GeneratorDetail(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(responses={200: GeneratorSerializer, **ERRORS})
    def get(self, request: Request, name: str) -> Response:
        record = enabled_generators().filter(name=name).first()
        if record is None:
            raise NotFound(f"`name`: no enabled generator named {name!r}", code="unknown_generator")
        return Response(GeneratorSerializer(record, context=generator_context(request, [record])).data)


class PluginProblemList(generics.ListAPIView):
    """Plugins that were found but skipped (import failure, broken contract, name clash, blocked)."""

    required_scopes = {"GET": "read"}

    serializer_class = PluginProblemSerializer
    pagination_class = None
    queryset = PluginProblemRecord.objects.all()
