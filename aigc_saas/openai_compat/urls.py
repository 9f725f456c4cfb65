"""Routes of the OpenAI-compatible API, mounted at /v1 (aigc_saas/urls.py)."""

from collections.abc import Callable

from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.views import APIView

from aigc_saas.openai_compat import schema, views

app_name = "openai"


def documented(view: Callable, by: type[APIView]) -> Callable:
    """An async view drf-spectacular describes through `by`; API-key calls carry no CSRF token."""
    view = csrf_exempt(view)
    view.cls = by  # type: ignore[attr-defined]
    view.initkwargs = {}  # type: ignore[attr-defined]
    return view


urlpatterns = [
    path("models", documented(views.models, schema.Models), name="models"),
    path("models/<path:model>", documented(views.model_detail, schema.ModelDetail), name="model"),
    path("chat/completions", documented(views.chat_completions, schema.ChatCompletions), name="chat-completions"),
    path("completions", documented(views.completions, schema.Completions), name="completions"),
    path("images/generations", documented(views.images_generations, schema.ImagesGenerations), name="images"),
    path("audio/speech", documented(views.audio_speech, schema.AudioSpeech), name="speech"),
    path("files/<str:token>", documented(views.signed_artifact, schema.SignedArtifact), name="artifact"),
]
