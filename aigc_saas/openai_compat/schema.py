"""How the /v1 routes are authorized and described: one DRF view per route, never routed itself.

The async views run each one's `initial()` (authentication, scopes, throttles) and drf-spectacular reads its
`extend_schema`, so the OpenAPI document shows the OpenAI-compatible endpoints with their real shapes.
"""

from __future__ import annotations

from typing import Any, Literal

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from pydantic import BaseModel, Field
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from aigc_saas.openai_compat.serializers import ChatCompletionRequest, CompletionRequest, ImageRequest, SpeechRequest


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="`invalid_request_error`, `authentication_error`, `rate_limit_error`, …")
    param: str | None = Field(description="The request field at fault, when one is.")
    code: str | None = Field(description="Machine-readable reason, such as `model_not_found`.")


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage
    system_fingerprint: None = None


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: CompletionUsage


class ModelObject(BaseModel):
    id: str = Field(description="A generator's name (its default model) or a model id it allows.")
    object: Literal["model"]
    created: int
    owned_by: str
    generator: str
    modality: str
    endpoints: list[str] = Field(description="Which of chat, completion, image, speech this model serves.")


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]


class ImageObject(BaseModel):
    url: str | None = Field(default=None, description="Signed link, valid for AIGC_OPENAI_URL_SECONDS, no key needed.")
    b64_json: str | None = None
    revised_prompt: None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageObject]


class StreamEvent(BaseModel):
    """One server-sent event of a streamed completion (the `text/event-stream` schema describes each event)."""

    data: str = Field(
        description="A chunk object as JSON (`chat.completion.chunk` or `text_completion`), an OpenAI-shaped "
        '`{"error": …}` object when the call fails midway (no `[DONE]` follows a revoked key or a timeout), or '
        "`[DONE]`, last."
    )
    event: str | None = Field(default=None, description="Never set by this server: every event is a `message`.")
    id: str | None = Field(default=None, description="Never set by this server.")


STREAM = (
    "With `stream: true`: `text/event-stream` of `chat.completion.chunk` objects (`data: {...}` lines), the "
    "deltas concatenating to the final text, then (with `stream_options.include_usage`) a chunk with `usage` "
    "and no choices, then `data: [DONE]`."
)


def example(name: str, value: dict[str, Any]) -> OpenApiExample:
    """A request that works against the built-in generators (the docs show it; schemathesis sends it as is)."""
    return OpenApiExample(name, value=value, request_only=True)


HELLO = [{"role": "user", "content": "Hello"}]


def errors(*statuses: int) -> dict[int, Any]:
    return {status: OpenApiResponse(OpenAIErrorBody, description="OpenAI-shaped error") for status in statuses}


class OpenAIView(APIView):
    """Authorizes like the rest of the API; the answers themselves are written by the async views."""

    throttle_scope = "submissions"
    required_scopes = {"GET": "read", "POST": "submit"}

    def perform_content_negotiation(self, request: Any, force: bool = False) -> tuple[Any, str]:
        # The async view writes the answer (JSON, SSE or audio), so a client's Accept never makes DRF refuse it.
        return JSONRenderer(), JSONRenderer.media_type


class Models(OpenAIView):
    @extend_schema(
        operation_id="openai_list_models", tags=["openai"], responses={200: ModelList, **errors(401, 403, 429)}
    )
    def get(self, request: Any) -> None:
        """List the models: every enabled generator by name, and each model it allows."""


class ModelDetail(OpenAIView):
    @extend_schema(
        operation_id="openai_retrieve_model",
        tags=["openai"],
        parameters=[OpenApiParameter("model", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={200: ModelObject, **errors(401, 403, 404, 429)},
    )
    def get(self, request: Any, model: str = "") -> None:
        """One model by id."""


class ChatCompletions(OpenAIView):
    @extend_schema(
        operation_id="openai_create_chat_completion",
        tags=["openai"],
        request=ChatCompletionRequest,
        examples=[
            example("Chat", {"model": "transformers-text", "messages": HELLO, "max_tokens": 8}),
            example("Streamed", {"model": "transformers-text", "messages": HELLO, "max_tokens": 8, "stream": True}),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(ChatCompletion, description=STREAM),
            (200, "text/event-stream"): OpenApiResponse(StreamEvent, description=STREAM),
            **errors(400, 401, 403, 404, 429, 500, 504),
        },
    )
    def post(self, request: Any) -> None:
        """A chat completion: one text job per choice, through the model's chat template."""


class Completions(OpenAIView):
    @extend_schema(
        operation_id="openai_create_completion",
        tags=["openai"],
        request=CompletionRequest,
        examples=[
            example("Completion", {"model": "transformers-text", "prompt": "Once upon a time", "max_tokens": 8}),
            example("Streamed", {"model": "transformers-text", "prompt": "Once", "max_tokens": 8, "stream": True}),
        ],
        responses={
            (200, "application/json"): TextCompletion,
            (200, "text/event-stream"): OpenApiResponse(StreamEvent, description="With `stream: true`."),
            **errors(400, 401, 403, 404, 429, 500, 504),
        },
    )
    def post(self, request: Any) -> None:
        """A plain text completion of `prompt`."""


class ImagesGenerations(OpenAIView):
    @extend_schema(
        operation_id="openai_create_image",
        tags=["openai"],
        request=ImageRequest,
        examples=[example("Image", {"prompt": "a red mug", "size": "64x64", "response_format": "b64_json"})],
        responses={200: ImagesResponse, **errors(400, 401, 403, 404, 429, 500, 504)},
    )
    def post(self, request: Any) -> None:
        """Images from a prompt: one image job making `n` images."""


class AudioSpeech(OpenAIView):
    @extend_schema(
        operation_id="openai_create_speech",
        tags=["openai"],
        request=SpeechRequest,
        examples=[example("Speech", {"model": "transformers-speech", "input": "Hello", "response_format": "wav"})],
        responses={
            (200, "audio/wav"): OpenApiTypes.BINARY,
            (200, "audio/flac"): OpenApiTypes.BINARY,
            **errors(400, 401, 403, 404, 429, 500, 504),
        },
    )
    def post(self, request: Any) -> None:
        """Speech from text: the audio file itself."""


class SignedArtifact(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []

    @extend_schema(
        operation_id="openai_signed_file",
        tags=["openai"],
        parameters=[OpenApiParameter("token", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **errors(403, 404)},
    )
    def get(self, request: Any, token: str = "") -> None:
        """A file behind a signed link from an images `url` answer: no key needed, valid for a limited time."""
