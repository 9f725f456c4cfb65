from __future__ import annotations

from typing import Any

from django.urls import get_script_prefix
from django.urls import reverse as django_reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema_field, extend_schema_serializer
from rest_framework import serializers
from rest_framework.reverse import reverse

from aigc_saas import rows
from aigc_saas.jobs.models import Artifact, Job, JobState
from aigc_saas.plugins.models import PluginProblemRecord, PluginRecord
from aigc_saas.validation import public_model_id, scrub_model_ids, scrub_paths


@extend_schema_field({"type": "object", "additionalProperties": True})
class ParamsField(serializers.JSONField):
    """A JSON object (not null): the schema says so, and the server refuses anything else with a 400."""


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "A short text job",
            value={"generator": "transformers-text", "params": {"prompt": "Name a bakery.", "max_new_tokens": 8}},
            request_only=True,
        )
    ]
)
class JobCreateSerializer(serializers.Serializer):
    generator = serializers.CharField(max_length=64, help_text="Name of an enabled generator (GET /generators).")
    params = ParamsField(default=dict, help_text="Validated against the generator's params JSON Schema.")
    model = serializers.CharField(
        max_length=300, required=False, help_text="Model id to use instead of the default, where the admin allows it."
    )
    webhook_url = serializers.URLField(
        max_length=2000, required=False, default="", help_text="Receives a signed POST when the job finishes."
    )


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class FieldErrorSerializer(ErrorSerializer):
    field = serializers.CharField()


class ErrorBodySerializer(serializers.Serializer):
    class Inner(ErrorSerializer):
        fields = FieldErrorSerializer(many=True)

    error = Inner()


class JobStreamEventSerializer(serializers.Serializer):
    """One server-sent event of `GET /jobs/{id}/events` (the `text/event-stream` schema describes each event;
    `: keep-alive` comment lines come between them while the job is quiet)."""

    event = serializers.ChoiceField(
        choices=["state", "progress", "token", "end", "error"],
        help_text="`state` {state; `running` also has `attempt`: above 1, the job started over and the text so far is void}, `progress` {fraction, message}, `token` {index, text}, `end` (the job, as "
        "`GET /jobs/{id}` answers it) or `error` {code, message} (the key was revoked; nothing follows).",
    )
    data = serializers.CharField(help_text="The event's object as JSON.")
    id = serializers.CharField(
        required=False, help_text="The stream position: send it back as `Last-Event-ID` to resume after it."
    )


class ArtifactSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Artifact
        fields = ["id", "index", "filename", "content_type", "size", "sha256", "metadata", "url", "created_at"]

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: Artifact) -> str:
        return reverse(
            "api:artifact-content",
            kwargs={"job_id": obj.job_id, "artifact_id": obj.id},
            request=self.context.get("request"),
        )


class ProgressSerializer(serializers.Serializer):
    fraction = serializers.FloatField()
    message = serializers.CharField()


class JobSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    artifacts = ArtifactSerializer(many=True, read_only=True)
    state = serializers.ChoiceField(choices=JobState.choices)

    class Meta:
        model = Job
        fields = [
            "id",
            "url",
            "generator",
            "plugin_version",
            "model_id",
            "state",
            "progress",
            "params",
            "result",
            "error",
            "attempts",
            "origin",
            "artifacts",
            "created_at",
            "started_at",
            "finished_at",
        ]

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: Job) -> str:
        request = self.context.get("request")
        if request is None or getattr(request, "version", None):
            return reverse("api:job-detail", kwargs={"job_id": obj.id}, request=request)
        # The route reversed once per script prefix, then the id put in: reversing was 4 % of the web's CPU.
        return request.build_absolute_uri(_job_path().replace(_PLACEHOLDER, str(obj.id)))

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, obj: Job) -> dict[str, Any]:
        return {"fraction": obj.progress, "message": obj.progress_message}

    @extend_schema_field(ErrorSerializer(allow_null=True))
    def get_error(self, obj: Job) -> dict[str, str] | None:
        return {"code": obj.error_code, "message": scrub_paths(obj.error_message)} if obj.error_code else None

    def to_representation(self, instance: Job) -> dict[str, Any]:
        """The job, written out rather than by DRF's walk over its fields: a new serializer built every field from
        the model again, a fifth of the CPU of a submission or a poll. The declared fields still make the schema,
        and tests/api/test_job_representation.py holds this equal to what DRF's walk gives.

        No server paths: a model loaded from a local folder shows as `local:<folder name>`."""
        data = {
            "id": str(instance.id),
            "url": self.get_url(instance),
            "generator": instance.generator,
            "plugin_version": instance.plugin_version,
            "model_id": public_model_id(instance.model_id),
            "state": instance.state,
            "progress": self.get_progress(instance),
            "params": instance.params,
            "result": scrub_model_ids(instance.result),
            "error": self.get_error(instance),
            "attempts": instance.attempts,
            "origin": instance.origin,
            # Artifacts are written only with a job's success (services.finish_job): no query for any other state.
            "artifacts": (
                ArtifactSerializer(_artifacts(instance), many=True, context=self.context).data
                if instance.state == JobState.SUCCEEDED
                else []
            ),
            "created_at": _TIME.to_representation(instance.created_at),
            "started_at": _TIME.to_representation(instance.started_at),
            "finished_at": _TIME.to_representation(instance.finished_at),
        }
        for name in self.Meta.fields[len(data) :]:  # a subclass's method fields (JobAcceptedSerializer's warnings)
            data[name] = getattr(self, f"get_{name}")(instance)
        return data

    def to_representation_by_fields(self, instance: Job) -> dict[str, Any]:
        """DRF's walk over the declared fields: what `to_representation` must equal (the tests compare them)."""
        data = super().to_representation(instance)
        data["model_id"] = public_model_id(data.get("model_id"))
        data["result"] = scrub_model_ids(data.get("result"))
        return data


_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"
_job_paths: dict[str, str] = {}


def _job_path() -> str:
    prefix = get_script_prefix()
    path = _job_paths.get(prefix)
    if path is None:
        path = _job_paths[prefix] = django_reverse("api:job-detail", kwargs={"job_id": _PLACEHOLDER})
    return path


def _artifacts(job: Job) -> list[Artifact]:
    """The job's artifacts: prefetched by a list view, else read without the ORM's compiler (aigc_saas.rows)."""
    if "artifacts" in getattr(job, "_prefetched_objects_cache", {}):
        return list(job.artifacts.all())
    return rows.all(Artifact, order_by=["index"], job_id=job.pk)


_TIME = serializers.DateTimeField(read_only=True)  # DRF's own formatting of the job's times, made once


class GeneratorSerializer(serializers.ModelSerializer):
    default_model = serializers.SerializerMethodField()

    class Meta:
        model = PluginRecord
        fields = [
            "name",
            "modality",
            "description",
            "distribution",
            "version",
            "default_model",
            "queue",
            "params_schema",
        ]

    def get_default_model(self, obj: PluginRecord) -> str:
        return public_model_id(self.context["default_models"].get(obj.name, obj.model_id))


class PluginProblemSerializer(serializers.ModelSerializer):
    """Tenants see which plugin and the code; the distribution, message (tracebacks, paths) and time are for staff."""

    STAFF_ONLY = ("distribution", "message", "seen_at")
    distribution = serializers.CharField(required=False, help_text="Staff only.")
    message = serializers.CharField(required=False, help_text="Staff only.")
    seen_at = serializers.DateTimeField(required=False, help_text="Staff only.")

    class Meta:
        model = PluginProblemRecord
        fields = ["entry_point", "distribution", "code", "message", "seen_at"]

    def to_representation(self, instance: PluginProblemRecord) -> dict[str, Any]:
        data = super().to_representation(instance)
        request = self.context.get("request")
        if not getattr(getattr(request, "user", None), "is_staff", False):  # API keys are tenants, never staff
            for name in self.STAFF_ONLY:
                data.pop(name, None)
        return data


class QuotasSerializer(serializers.Serializer):
    max_jobs_per_day = serializers.IntegerField(allow_null=True)
    max_active_jobs = serializers.IntegerField(allow_null=True)


class UsageSerializer(serializers.Serializer):
    jobs_today = serializers.IntegerField()
    active_jobs = serializers.IntegerField()


class AccountSerializer(serializers.Serializer):
    tenant = serializers.CharField(help_text="The tenant's slug.")
    name = serializers.CharField()
    api_key = serializers.CharField(help_text="Name and prefix of the key this request used.")
    webhook_secret = serializers.CharField(help_text="Verifies the `X-AIGC-Signature` of this tenant's webhooks.")
    quotas = QuotasSerializer()
    usage = UsageSerializer()
