"""Thin views over the scenario services: parse, call one service, serialise."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aigc_saas.api.batches import IDEMPOTENCY_HEADER, idempotency_key
from aigc_saas.api.serializers import ErrorBodySerializer
from scenarios.core import recipes, runs, templates
from scenarios.core.models import Recipe, Run
from scenarios.core.registry import get_scenario, installed_scenarios
from scenarios.core.serializers import (
    RecipeRunSerializer,
    RecipeSerializer,
    RunSerializer,
    ScenarioSerializer,
    TemplateCreateSerializer,
    TemplateDetailSerializer,
    TemplateEditSerializer,
    TemplateRunSerializer,
    TemplateSummarySerializer,
)

ERRORS = {code: OpenApiResponse(ErrorBodySerializer) for code in (400, 401, 404)}


def _accepted(run: Run, request: Request) -> Response:
    data = RunSerializer(run, context={"request": request}).data
    return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["url"]})


class ScenarioList(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(responses={200: ScenarioSerializer(many=True), 401: ErrorBodySerializer})
    def get(self, request: Request) -> Response:
        visible = templates.visible_templates(request.user.tenant)
        data = [
            {
                "slug": s.slug,
                "title": s.title,
                "description": s.description,
                "templates": visible.filter(scenario=s.slug).count(),
                "recipes": Recipe.objects.filter(scenario=s.slug, is_active=True).count(),
            }
            for s in installed_scenarios().values()
        ]
        return Response(ScenarioSerializer(data, many=True).data)


class ScenarioTemplateList(generics.ListAPIView):
    required_scopes = {"GET": "read"}

    serializer_class = TemplateSummarySerializer

    def get_queryset(self):  # noqa: ANN201
        get_scenario(self.kwargs["scenario"])
        return templates.visible_templates(self.request.user.tenant).filter(scenario=self.kwargs["scenario"])

    @extend_schema(responses={200: TemplateSummarySerializer(many=True), **ERRORS})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class ScenarioRecipeList(generics.ListAPIView):
    required_scopes = {"GET": "read"}

    serializer_class = RecipeSerializer

    def get_queryset(self):  # noqa: ANN201
        get_scenario(self.kwargs["scenario"])
        return Recipe.objects.filter(scenario=self.kwargs["scenario"], is_active=True)

    @extend_schema(responses={200: RecipeSerializer(many=True), **ERRORS})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class TemplateCreate(APIView):
    required_scopes = {"POST": "templates"}

    @extend_schema(request=TemplateCreateSerializer, responses={201: TemplateDetailSerializer, **ERRORS})
    def post(self, request: Request) -> Response:
        body = TemplateCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        content = dict(body.validated_data)
        scenario, slug = content.pop("scenario"), content.pop("slug")
        template = templates.create_template(request.user.tenant, scenario, slug, content, created_by="api")
        data = TemplateDetailSerializer(template, context={"request": request}).data
        return Response(data, status=status.HTTP_201_CREATED, headers={"Location": data["url"]})


class TemplateDetail(APIView):
    required_scopes = {"GET": "read", "PATCH": "templates", "DELETE": "templates"}

    @extend_schema(responses={200: TemplateDetailSerializer, **ERRORS})
    def get(self, request: Request, template_id: str) -> Response:
        template = templates.get_template(request.user.tenant, template_id)
        return Response(TemplateDetailSerializer(template, context={"request": request}).data)

    @extend_schema(
        request=TemplateEditSerializer, responses={200: TemplateDetailSerializer, 403: ErrorBodySerializer, **ERRORS}
    )
    def patch(self, request: Request, template_id: str) -> Response:
        """Edit a private template: a new version when anything changed."""
        template = templates.get_template(request.user.tenant, template_id)
        body = TemplateEditSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        templates.edit_tenant_template(request.user.tenant, template, dict(body.validated_data))
        template.refresh_from_db()
        return Response(TemplateDetailSerializer(template, context={"request": request}).data)


class TemplateRunCreate(APIView):
    required_scopes = {"POST": "submit"}
    throttle_scope = "submissions"

    @extend_schema(
        request=TemplateRunSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={202: RunSerializer, 409: ErrorBodySerializer, **ERRORS},
    )
    def post(self, request: Request, template_id: str) -> Response:
        """Run a template: its job goes through the same submission as every other job."""
        template = templates.get_template(request.user.tenant, template_id)
        body = TemplateRunSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = runs.start_template_run(
            request.user.tenant,
            template,
            api_key=request.user.api_key,
            idempotency_key=idempotency_key(request),
            **body.validated_data,
        )
        return _accepted(run, request)


class RecipeDetail(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(responses={200: RecipeSerializer, **ERRORS})
    def get(self, request: Request, slug: str) -> Response:
        return Response(RecipeSerializer(recipes.get_recipe(slug), context={"request": request}).data)


class RecipeRunCreate(APIView):
    required_scopes = {"POST": "submit"}
    throttle_scope = "submissions"

    @extend_schema(
        request=RecipeRunSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={202: RunSerializer, 409: ErrorBodySerializer, **ERRORS},
    )
    def post(self, request: Request, slug: str) -> Response:
        body = RecipeRunSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        recipe = recipes.get_recipe(slug)
        run = runs.start_recipe_run(
            request.user.tenant,
            recipe,
            api_key=request.user.api_key,
            idempotency_key=idempotency_key(request),
            **body.validated_data,
        )
        return _accepted(run, request)


class RunList(generics.ListAPIView):
    required_scopes = {"GET": "read"}

    serializer_class = RunSerializer

    def get_queryset(self):  # noqa: ANN201
        return Run.objects.filter(tenant=self.request.user.tenant).select_related("recipe")

    @extend_schema(responses={200: RunSerializer(many=True), 401: ErrorBodySerializer})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class RunDetail(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(responses={200: RunSerializer, **ERRORS})
    def get(self, request: Request, run_id: str) -> Response:
        return Response(RunSerializer(runs.get_run(request.user.tenant, run_id), context={"request": request}).data)


class RunCancel(APIView):
    required_scopes = {"POST": "submit"}

    @extend_schema(request=None, responses={200: RunSerializer, 409: ErrorBodySerializer, **ERRORS})
    def post(self, request: Request, run_id: str) -> Response:
        run = runs.cancel_run(runs.get_run(request.user.tenant, run_id))
        return Response(RunSerializer(run, context={"request": request}).data)
