from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from aigc_saas.api import batches, streams, views
from aigc_saas.assets import views as assets
from aigc_saas.usage import views as usage

app_name = "api"

urlpatterns = [
    path("account", views.Account.as_view(), name="account"),
    path(
        "jobs",
        streams.as_documented(streams.job_create, views.JobListCreate, waits=lambda query: "wait" in query),
        name="job-list",
    ),
    path("jobs/batch", batches.JobBatchCreate.as_view(), name="job-batch"),
    path(
        "jobs/<uuid:job_id>",
        streams.as_documented(streams.job_detail, views.JobDetail, waits=lambda query: "wait" in query),
        name="job-detail",
    ),
    path("jobs/<uuid:job_id>/cancel", views.JobCancel.as_view(), name="job-cancel"),
    path("jobs/<uuid:job_id>/events", streams.as_documented(streams.job_events, views.JobEvents), name="job-events"),
    path(
        "jobs/<uuid:job_id>/artifacts/<uuid:artifact_id>/content",
        views.ArtifactContent.as_view(),
        name="artifact-content",
    ),
    path("assets", assets.AssetListCreate.as_view(), name="asset-list"),
    path("assets/<uuid:asset_id>", assets.AssetDetail.as_view(), name="asset-detail"),
    path("assets/<uuid:asset_id>/content", assets.AssetContent.as_view(), name="asset-content"),
    path("usage", usage.Usage.as_view(), name="usage"),
    path("generators", views.GeneratorList.as_view(), name="generator-list"),
    path("generators/problems", views.PluginProblemList.as_view(), name="generator-problems"),
    path("generators/<str:name>", views.GeneratorDetail.as_view(), name="generator-detail"),
    path("schema", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    path(
        "docs",
        SpectacularSwaggerView.as_view(url_name="api:schema", authentication_classes=[], permission_classes=[]),
        name="docs",
    ),
]
