"""API routes of the scenario apps, mounted under /api/v1/ by the project's AIGC_API_MOUNTS setting."""

from django.urls import path

from scenarios.core import views

app_name = "scenarios"

urlpatterns = [
    path("scenarios", views.ScenarioList.as_view(), name="scenario-list"),
    path("scenarios/<slug:scenario>/templates", views.ScenarioTemplateList.as_view(), name="scenario-templates"),
    path("scenarios/<slug:scenario>/recipes", views.ScenarioRecipeList.as_view(), name="scenario-recipes"),
    path("templates", views.TemplateCreate.as_view(), name="template-create"),
    path("templates/<uuid:template_id>", views.TemplateDetail.as_view(), name="template-detail"),
    path("templates/<uuid:template_id>/runs", views.TemplateRunCreate.as_view(), name="template-runs"),
    path("recipes/<slug:slug>", views.RecipeDetail.as_view(), name="recipe-detail"),
    path("recipes/<slug:slug>/runs", views.RecipeRunCreate.as_view(), name="recipe-runs"),
    path("runs", views.RunList.as_view(), name="run-list"),
    path("runs/<uuid:run_id>", views.RunDetail.as_view(), name="run-detail"),
    path("runs/<uuid:run_id>/cancel", views.RunCancel.as_view(), name="run-cancel"),
]
