from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from aigc_saas.admin_login import ThrottledAdminLoginForm
from aigc_saas.api.errors import json_error
from aigc_saas.observability import health
from aigc_saas.observability.metrics import metrics_view

admin.site.login_form = ThrottledAdminLoginForm  # failed logins are counted in Redis and locked out

urlpatterns = [
    # Probes and metrics (ProbeMiddleware answers these paths first, before host validation).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("aigc_saas.api.urls")),
    path("v1/", include("aigc_saas.openai_compat.urls")),  # OpenAI-compatible: SDKs set base_url=.../v1
    # Apps on top of the core (the scenario apps) add their API here without the core importing them.
    *[path("api/v1/", include(module)) for module in settings.AIGC_API_MOUNTS],
]


def handler404(request, exception=None):  # noqa: ANN001, ANN201
    if request.path.startswith("/api/"):
        return json_error(404, "not_found", f"`path`: nothing at {request.path}")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):  # noqa: ANN001, ANN201
    if request.path.startswith("/api/"):
        return json_error(500, "internal_error", "The server failed; the error was logged.")
    from django.views.defaults import server_error

    return server_error(request)
