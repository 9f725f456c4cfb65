"""The /v1 endpoints as async views: authenticate through DRF, submit ordinary jobs, wait on the event channel.

A non-streaming call waits for its job(s) with `events.wait_until_terminal`; a streaming one relays `token`
events from `events.follow`. Either way, a client that goes away cancels what it asked for.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from rest_framework.views import APIView

from aigc_saas.accounts.streams import TooManyStreams, close_stream, open_stream
from aigc_saas.api.batches import idempotency_key
from aigc_saas.errors import ServiceError
from aigc_saas.jobs import events, services
from aigc_saas.jobs.models import Artifact, Job
from aigc_saas.openai_compat import catalog, schema
from aigc_saas.openai_compat.errors import OpenAIError, from_drf, from_service
from aigc_saas.openai_compat.results import cancel, finish_reason, job_failure, usage
from aigc_saas.openai_compat.serializers import (
    CHAT_PARAMS,
    COMPLETION_PARAMS,
    IMAGE_PARAMS,
    SPEECH_PARAMS,
    ChatCompletionRequest,
    CompletionRequest,
    ImageRequest,
    SpeechRequest,
    parse,
)
from aigc_saas.openai_compat.streaming import relay
from aigc_saas.validation import MAX_JSON_DEPTH, json_depth
from aigc_saas.web_threads import in_thread

URL_SALT = "aigc_saas.openai_compat.artifact"


# ---- plumbing --------------------------------------------------------------------------------------------------


def _authorize(request: HttpRequest, documented: type[APIView]) -> Any:
    """DRF's authentication, scopes and throttles of the documenting view; the caller (tenant and key) or raises."""
    view = documented()
    view.args, view.kwargs, view.format_kwarg = (), {}, None
    drf_request = view.initialize_request(request)
    view.request, view.headers = drf_request, {}
    try:
        view.initial(drf_request)
    except Exception as exc:  # noqa: BLE001 - each DRF refusal becomes OpenAI's shape
        raise from_drf(exc) from None
    return drf_request.user


def _body(request: HttpRequest) -> Any:
    """The JSON body, with the API's limits on size and nesting answered in OpenAI's shape."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise OpenAIError(400, "`Content-Length`: must be an integer", code="invalid_content_length") from None
    if limit is not None and length > limit:
        raise OpenAIError(
            413, f"`body`: {length} bytes is over this server's limit of {limit} bytes", code="payload_too_large"
        )
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, RecursionError) as exc:
        raise OpenAIError(400, f"The request body is not valid JSON: {str(exc)[:200]}", code="invalid_json") from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise OpenAIError(400, f"`body`: JSON nested deeper than {MAX_JSON_DEPTH} levels", code="too_deep")
    return body


def _submit(
    caller: Any, target: catalog.Target, params: dict[str, Any], n: int, origin: dict, names: dict, key: str = ""
) -> list:
    """n ordinary jobs of the caller's tenant, all or none (a quota refusal on the third undoes the first two).

    With an `Idempotency-Key`, a retry of the same call returns the same jobs (choice i keeps the key `key#i`).
    """
    try:
        with transaction.atomic():
            return [
                services.submit_job(
                    caller.tenant,
                    target.generator,
                    params,
                    model=target.model_id,
                    api_key=caller.api_key,
                    origin={**origin, "choice": index} if n > 1 else origin,
                    idempotency_key=f"{key}#{index}" if key and n > 1 else key,
                )
                for index in range(n)
            ]
    except ServiceError as exc:
        raise from_service(exc, names) from None


async def _submit_for(caller: Any, stream: bool, *submit: Any) -> list:
    """`_submit`; a streaming call first takes one of its tenant's stream slots, which its relay gives back."""
    if not stream:
        return await in_thread(_submit)(caller, *submit)
    try:
        await open_stream(caller.tenant.pk)
    except TooManyStreams as exc:
        raise from_service(exc) from None
    try:
        return await in_thread(_submit)(caller, *submit)
    except BaseException:
        await close_stream(caller.tenant.pk)
        raise


def _idempotency_key(request: HttpRequest) -> str:
    try:
        return idempotency_key(request)
    except ServiceError as exc:
        raise from_service(exc, {}) from None


async def _wait(job_ids: list[Any]) -> list[Job]:
    """Wait for every job to end; a client that disconnects meanwhile (the task is cancelled) cancels them."""
    try:
        done = await asyncio.gather(
            *(events.wait_until_terminal(job_id, settings.AIGC_OPENAI_WAIT_SECONDS) for job_id in job_ids)
        )
    except asyncio.CancelledError:
        await in_thread(cancel)(job_ids)
        raise
    if not all(done):
        await in_thread(cancel)(job_ids)
        raise OpenAIError(
            504,
            f"the job did not finish within {settings.AIGC_OPENAI_WAIT_SECONDS}s and was cancelled",
            code="timeout",
        )
    return await in_thread(_load)(job_ids)


def _load(job_ids: list[Any]) -> list[Job]:
    jobs = {job.pk: job for job in Job.objects.filter(pk__in=job_ids).prefetch_related("artifacts")}
    return [jobs[pk] for pk in job_ids]


def _origin(endpoint: str, user: str | None) -> dict[str, Any]:
    return {"openai": endpoint, **({"user": user} if user else {})}


def _answer(view: Any) -> Any:
    """Turn an OpenAIError raised anywhere in the view into its response."""

    async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return await view(request, *args, **kwargs)
        except OpenAIError as exc:
            return exc.response()

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


# ---- endpoints -------------------------------------------------------------------------------------------------


@_answer
async def models(request: HttpRequest) -> HttpResponse:
    """GET /v1/models: each enabled generator's models (and the generator's own name for its default)."""
    await in_thread(_authorize)(request, schema.Models)
    entries = await in_thread(catalog.available)()
    return JsonResponse({"object": "list", "data": [_model(e) for e in entries]})


@_answer
async def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    await in_thread(_authorize)(request, schema.ModelDetail)
    entries = await in_thread(catalog.available)()
    for entry in entries:
        if entry["id"] == model:
            return JsonResponse(_model(entry))
    raise OpenAIError(
        404,
        f"`model`: the model {model!r} does not exist or is not enabled here",
        param="model",
        code="model_not_found",
    )


def _model(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": entry["id"],
        "object": "model",
        "created": entry["created"],
        "owned_by": "aigc-saas",
        "generator": entry["generator"],
        "modality": entry["modality"],
        "endpoints": entry["endpoints"],
    }


@_answer
async def chat_completions(request: HttpRequest) -> HttpResponse:
    """POST /v1/chat/completions."""
    caller = await in_thread(_authorize)(request, schema.ChatCompletions)
    body: ChatCompletionRequest = parse(ChatCompletionRequest, _body(request))
    target = await in_thread(catalog.resolve)(body.model, "chat")
    names = {
        **CHAT_PARAMS,
        "max_new_tokens": "max_tokens" if body.max_completion_tokens is None else "max_completion_tokens",
    }
    jobs = await _submit_for(
        caller,
        body.stream,
        target,
        body.job_params(),
        body.n,
        _origin("chat.completions", body.user),
        names,
        _idempotency_key(request),
    )
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.stream:
        return _sse(relay("chat", jobs, target.requested, include_usage))
    finished = await _wait([job.pk for job in jobs])
    for job in finished:
        if (failure := job_failure(job)) is not None:
            raise failure
    return JsonResponse(
        {
            "id": f"chatcmpl-{finished[0].pk.hex}",
            "object": "chat.completion",
            "created": int(finished[0].created_at.timestamp()),
            "model": target.requested,
            "choices": [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": (job.result or {}).get("text", ""), "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason(job),
                }
                for index, job in enumerate(finished)
            ],
            "usage": usage(finished),
            "system_fingerprint": None,
        }
    )


@_answer
async def completions(request: HttpRequest) -> HttpResponse:
    """POST /v1/completions (the legacy text completion)."""
    caller = await in_thread(_authorize)(request, schema.Completions)
    body: CompletionRequest = parse(CompletionRequest, _body(request))
    target = await in_thread(catalog.resolve)(body.model, "completion")
    jobs = await _submit_for(
        caller,
        body.stream,
        target,
        body.job_params(),
        body.n,
        _origin("completions", body.user),
        COMPLETION_PARAMS,
        _idempotency_key(request),
    )
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.stream:
        return _sse(relay("completion", jobs, target.requested, include_usage))
    finished = await _wait([job.pk for job in jobs])
    for job in finished:
        if (failure := job_failure(job)) is not None:
            raise failure
    return JsonResponse(
        {
            "id": f"cmpl-{finished[0].pk.hex}",
            "object": "text_completion",
            "created": int(finished[0].created_at.timestamp()),
            "model": target.requested,
            "choices": [
                {
                    "index": index,
                    "text": (job.result or {}).get("text", ""),
                    "logprobs": None,
                    "finish_reason": finish_reason(job),
                }
                for index, job in enumerate(finished)
            ],
            "usage": usage(finished),
        }
    )


def _sse(chunks: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _first_image_model() -> str:
    for entry in catalog.available():
        if "image" in entry["endpoints"]:
            return entry["id"]
    raise OpenAIError(404, "`model`: no image model is enabled here", param="model", code="model_not_found")


@_answer
async def images_generations(request: HttpRequest) -> HttpResponse:
    """POST /v1/images/generations: one job making `n` images; base64 or signed, expiring URLs."""
    caller = await in_thread(_authorize)(request, schema.ImagesGenerations)
    body: ImageRequest = parse(ImageRequest, _body(request))
    model = body.model or await in_thread(_first_image_model)()
    target = await in_thread(catalog.resolve)(model, "image")
    (job,) = await in_thread(_submit)(
        caller,
        target,
        body.job_params(),
        1,
        _origin("images.generations", body.user),
        IMAGE_PARAMS,
        _idempotency_key(request),
    )
    (finished,) = await _wait([job.pk])
    if (failure := job_failure(finished)) is not None:
        raise failure
    images = [a for a in finished.artifacts.all() if a.content_type.startswith("image/")]
    data = await in_thread(_image_data)(request, images, body.response_format)
    return JsonResponse({"created": int(finished.created_at.timestamp()), "data": data})


def _image_data(request: HttpRequest, images: list[Artifact], response_format: str) -> list[dict[str, Any]]:
    if response_format == "b64_json":
        out = []
        for artifact in images:
            with artifact.file.open("rb") as handle:
                out.append({"b64_json": base64.b64encode(handle.read()).decode(), "revised_prompt": None})
        return out
    return [{"url": signed_url(request, artifact), "revised_prompt": None} for artifact in images]


def signed_url(request: HttpRequest, artifact: Artifact) -> str:
    """A link to the artifact that needs no API key (OpenAI clients fetch `url` without one) and expires."""
    token = signing.TimestampSigner(salt=URL_SALT).sign(str(artifact.pk))
    return request.build_absolute_uri(reverse("openai:artifact", kwargs={"token": token}))


def signed_artifact(request: HttpRequest, token: str) -> HttpResponse:
    """GET /v1/files/{token}: an artifact behind a signed, time-limited link (from `url` responses)."""
    try:
        artifact_id = signing.TimestampSigner(salt=URL_SALT).unsign(token, max_age=settings.AIGC_OPENAI_URL_SECONDS)
    except signing.SignatureExpired:
        return OpenAIError(403, "`url`: this link has expired; ask for the image again", code="url_expired").response()
    except signing.BadSignature:
        return OpenAIError(404, "`url`: no such file", code="not_found").response()
    artifact = Artifact.objects.filter(pk=artifact_id).first()
    if artifact is None:
        return OpenAIError(404, "`url`: the file no longer exists", code="not_found").response()
    response = FileResponse(artifact.file.open("rb"), content_type=artifact.content_type, filename=artifact.filename)
    response["Content-Length"] = str(artifact.size)
    response["Cache-Control"] = f"private, max-age={settings.AIGC_OPENAI_URL_SECONDS}"
    return response


@_answer
async def audio_speech(request: HttpRequest) -> HttpResponse:
    """POST /v1/audio/speech: the audio bytes themselves (wav or flac)."""
    caller = await in_thread(_authorize)(request, schema.AudioSpeech)
    body: SpeechRequest = parse(SpeechRequest, _body(request))
    target = await in_thread(catalog.resolve)(body.model, "speech")
    speaker = await in_thread(catalog.speaker_for)(body.voice, target.model_id)
    params: dict[str, Any] = {"text": body.input, "speaking_rate": body.speed, "format": body.response_format}
    if speaker is not None:
        params["speaker_id"] = speaker
    (job,) = await in_thread(_submit)(
        caller, target, params, 1, _origin("audio.speech", None), SPEECH_PARAMS, _idempotency_key(request)
    )
    (finished,) = await _wait([job.pk])
    if (failure := job_failure(finished)) is not None:
        raise failure
    audio = next((a for a in finished.artifacts.all() if a.content_type.startswith("audio/")), None)
    if audio is None:
        raise OpenAIError(500, f"job {finished.pk} made no audio", code="no_output")
    content = await in_thread(_read)(audio)
    response = HttpResponse(content, content_type=audio.content_type)
    response["Content-Disposition"] = f'inline; filename="{audio.filename}"'
    response["X-Job-Id"] = str(finished.pk)
    return response


def _read(artifact: Artifact) -> bytes:
    with artifact.file.open("rb") as handle:
        return handle.read()
