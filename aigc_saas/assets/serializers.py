from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from aigc_saas.assets.models import Asset


class AssetUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="An image (PNG, JPEG, WebP) or a recording (WAV, FLAC, MP3, OGG); its type is sniffed from the bytes."
    )


class AssetSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    content_url = serializers.SerializerMethodField()

    class Meta:
        model = Asset
        fields = [
            "id",
            "url",
            "content_url",
            "kind",
            "content_type",
            "filename",
            "size",
            "sha256",
            "width",
            "height",
            "duration",
            "sample_rate",
            "channels",
            "created_at",
            "last_used_at",
        ]

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: Asset) -> str:
        return reverse("api:asset-detail", kwargs={"asset_id": obj.id}, request=self.context.get("request"))

    @extend_schema_field(OpenApiTypes.URI)
    def get_content_url(self, obj: Asset) -> str:
        return reverse("api:asset-content", kwargs={"asset_id": obj.id}, request=self.context.get("request"))
