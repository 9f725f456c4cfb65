"""Thin views for input assets: upload (multipart, this view only), list, detail, content, delete."""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aigc_saas.api.renderers import PassthroughRenderer
from aigc_saas.api.serializers import ErrorBodySerializer
from aigc_saas.assets import services
from aigc_saas.assets.models import Asset
from aigc_saas.assets.serializers import AssetSerializer, AssetUploadSerializer
from aigc_saas.errors import InvalidInput

ERRORS = {code: OpenApiResponse(ErrorBodySerializer) for code in (400, 401, 404)}
REFUSALS = {code: OpenApiResponse(ErrorBodySerializer) for code in (413, 415)}


class AssetListCreate(generics.ListAPIView):
    """Upload an input (an image or a recording), or list this tenant's."""

    serializer_class = AssetSerializer
    parser_classes = [MultiPartParser]

    def get_queryset(self):  # noqa: ANN201
        assets = Asset.objects.filter(tenant=self.request.user.tenant)
        if kind := self.request.query_params.get("kind"):
            if kind not in ("image", "audio"):
                raise InvalidInput(f"`kind`: {kind!r} is not one of ['image', 'audio']", code="invalid_filter")
            assets = assets.filter(kind=kind)
        return assets

    @extend_schema(responses={200: AssetSerializer(many=True), **ERRORS})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request={"multipart/form-data": AssetUploadSerializer},
        responses={201: AssetSerializer, **REFUSALS, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        upload = request.FILES.get("file")
        if upload is None:
            raise InvalidInput(
                "`file`: send the file as multipart/form-data in the field `file`",
                code="file_missing",
                fields=[{"field": "file", "code": "required", "message": "`file`: this field is required"}],
            )
        asset = services.store_upload(request.user.tenant, upload)
        data = AssetSerializer(asset, context={"request": request}).data
        return Response(data, status=status.HTTP_201_CREATED, headers={"Location": data["url"]})


class AssetDetail(APIView):
    @extend_schema(responses={200: AssetSerializer, **ERRORS})
    def get(self, request: Request, asset_id: str) -> Response:
        asset = services.get_asset(request.user.tenant, asset_id)
        return Response(AssetSerializer(asset, context={"request": request}).data)

    @extend_schema(responses={204: None, 409: ErrorBodySerializer, **ERRORS})
    def delete(self, request: Request, asset_id: str) -> Response:
        services.delete_asset(services.get_asset(request.user.tenant, asset_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AssetContent(APIView):
    renderer_classes = [JSONRenderer, PassthroughRenderer]

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **ERRORS})
    def get(self, request: Request, asset_id: str) -> FileResponse:
        asset = services.get_asset(request.user.tenant, asset_id)
        response = FileResponse(
            asset.file.open("rb"), content_type=asset.content_type, as_attachment=False, filename=asset.filename or None
        )
        response["Content-Length"] = str(asset.size)
        response["ETag"] = f'"{asset.sha256}"'
        response["X-Content-Type-Options"] = "nosniff"
        return response
