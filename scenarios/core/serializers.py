from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from aigc_saas.plugins.services import registry
from scenarios.core.models import Recipe, Run, RunStep, Template
from scenarios.core.variables import variables_json_schema


def _url(name: str, request: Any, **kwargs: Any) -> str:
    return reverse(f"scenarios:{name}", kwargs=kwargs, request=request)


class ScenarioSerializer(serializers.Serializer):
    slug = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    templates = serializers.IntegerField(help_text="Templates this tenant can run.")
    recipes = serializers.IntegerField()


class TemplateSummarySerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    visibility = serializers.SerializerMethodField()
    version = serializers.IntegerField(source="latest_version")
    title = serializers.CharField(source="latest.title")
    description = serializers.CharField(source="latest.description")
    generator = serializers.CharField(source="latest.generator")
    modality = serializers.SerializerMethodField()
    structured = serializers.SerializerMethodField()

    class Meta:
        model = Template
        fields = ["id", "url", "scenario", "slug", "title", "description", "generator", "modality"]
        fields += ["structured", "visibility", "version", "updated_at"]

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: Template) -> str:
        return _url("template-detail", self.context.get("request"), template_id=obj.pk)

    @extend_schema_field(serializers.ChoiceField(choices=["global", "private"]))
    def get_visibility(self, obj: Template) -> str:
        return "private" if obj.tenant_id else "global"

    def get_modality(self, obj: Template) -> str:
        generator = obj.latest.generator
        return str(registry().get(generator).cls.modality) if generator in registry() else ""

    def get_structured(self, obj: Template) -> bool:
        return obj.latest.output_schema is not None


class VersionSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField()


class TemplateDetailSerializer(TemplateSummarySerializer):
    variables = serializers.JSONField(source="latest.variables", help_text="The variable specs as declared.")
    variables_schema = serializers.SerializerMethodField(help_text="JSON Schema of the `variables` a run takes.")
    prompts = serializers.JSONField(source="latest.prompts")
    default_params = serializers.JSONField(source="latest.default_params")
    allowed_overrides = serializers.ListField(source="latest.allowed_overrides", child=serializers.CharField())
    output_schema = serializers.JSONField(source="latest.output_schema", allow_null=True)
    sample_variables = serializers.JSONField(source="latest.sample_variables")
    versions = serializers.SerializerMethodField()

    class Meta(TemplateSummarySerializer.Meta):
        fields = [*TemplateSummarySerializer.Meta.fields, "variables", "variables_schema", "prompts"]
        fields += ["default_params", "allowed_overrides", "output_schema", "sample_variables", "versions"]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_variables_schema(self, obj: Template) -> dict[str, Any]:
        return variables_json_schema(obj.latest.variables)

    @extend_schema_field(VersionSerializer(many=True))
    def get_versions(self, obj: Template) -> list[dict[str, Any]]:
        return list(obj.versions.values("version", "created_at", "created_by"))


class TemplateContentSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    generator = serializers.CharField(max_length=64)
    prompts = serializers.JSONField(help_text='Generator param → Jinja template, e.g. {"prompt": "…{{ topic }}…"}.')
    variables = serializers.JSONField(required=False, help_text="Variable specs: name, type, description, bounds…")
    default_params = serializers.JSONField(required=False)
    allowed_overrides = serializers.ListField(child=serializers.CharField(), required=False, allow_null=True)
    output_schema = serializers.JSONField(required=False, allow_null=True)
    sample_variables = serializers.JSONField(required=False)


class TemplateCreateSerializer(TemplateContentSerializer):
    scenario = serializers.CharField(max_length=32)
    slug = serializers.SlugField(max_length=80)


class TemplateEditSerializer(TemplateContentSerializer):
    """Any content field; the others keep the latest version's values."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, partial=True, **kwargs)


class TemplateRunSerializer(serializers.Serializer):
    variables = serializers.JSONField(default=dict, help_text="Values for the template's variables.")
    params = serializers.JSONField(default=dict, help_text="Overrides of the params the template allows.")
    version = serializers.IntegerField(required=False, min_value=1, help_text="Run an earlier version.")
    webhook_url = serializers.URLField(max_length=2000, required=False, default="")


class RecipeRunSerializer(serializers.Serializer):
    variables = serializers.JSONField(default=dict, help_text="Values for the recipe's inputs.")
    params = serializers.JSONField(default=dict, help_text="Step name → param overrides for that step.")


class RecipeSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    variables_schema = serializers.SerializerMethodField()

    class Meta:
        model = Recipe
        fields = ["id", "url", "scenario", "slug", "title", "description", "version", "variables", "variables_schema"]
        fields += ["steps", "sample_variables", "updated_at"]

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: Recipe) -> str:
        return _url("recipe-detail", self.context.get("request"), slug=obj.slug)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_variables_schema(self, obj: Recipe) -> dict[str, Any]:
        return variables_json_schema(obj.variables)


class JobRefSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    state = serializers.CharField()


class StepErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class RunStepSerializer(serializers.ModelSerializer):
    template = serializers.SerializerMethodField()
    version = serializers.IntegerField(source="template_version.version")
    job = serializers.SerializerMethodField()
    repair_job = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()

    class Meta:
        model = RunStep
        fields = ["index", "name", "template", "version", "state", "variables", "job", "repair_job", "output", "error"]

    def get_template(self, obj: RunStep) -> str:
        return f"{obj.template_version.template.scenario}/{obj.template_version.template.slug}"

    def _job(self, job: Any) -> dict[str, Any] | None:
        if job is None:
            return None
        url = reverse("api:job-detail", kwargs={"job_id": job.pk}, request=self.context.get("request"))
        return {"id": str(job.pk), "url": url, "state": job.state}

    @extend_schema_field(JobRefSerializer(allow_null=True))
    def get_job(self, obj: RunStep) -> dict[str, Any] | None:
        return self._job(obj.job)

    @extend_schema_field(JobRefSerializer(allow_null=True))
    def get_repair_job(self, obj: RunStep) -> dict[str, Any] | None:
        return self._job(obj.repair_job)

    @extend_schema_field(StepErrorSerializer(allow_null=True))
    def get_error(self, obj: RunStep) -> dict[str, str] | None:
        return {"code": obj.error_code, "message": obj.error_message} if obj.error_code else None


class RunErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    step = serializers.CharField()


class RunSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    recipe = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    steps = RunStepSerializer(many=True, read_only=True)
    result = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = ["id", "url", "kind", "state", "recipe", "recipe_version", "variables", "steps", "result", "error"]
        fields += ["created_at", "finished_at"]

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: Run) -> str:
        return _url("run-detail", self.context.get("request"), run_id=obj.pk)

    @extend_schema_field({"type": ["object", "null"], "additionalProperties": True})
    def get_result(self, obj: Run) -> dict[str, Any] | None:
        """The last step's output once the run succeeded: {text, data, artifacts}."""
        if obj.state != "succeeded":
            return None
        return obj.steps.order_by("-index").values_list("output", flat=True).first()

    @extend_schema_field(RunErrorSerializer(allow_null=True))
    def get_error(self, obj: Run) -> dict[str, str] | None:
        if not obj.error_code:
            return None
        return {"code": obj.error_code, "message": obj.error_message, "step": obj.failed_step}
