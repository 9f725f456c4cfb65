"""API routes of the scenario apps, mounted under /api/v1/ by the project's AIGC_API_MOUNTS setting."""

urlpatterns: list = []
