"""Relay a text job's `token` events as OpenAI's server-sent chunks, ending with `data: [DONE]`.

Chunks carry exactly the engine's deltas, so they concatenate to the job's final text. With n > 1 the jobs'
streams are merged as they come, each delta tagged with its choice index. When the client goes away the
generator is closed (or its task cancelled) before the end: the jobs are cancelled then, as they are when the
stream's key is revoked or its jobs outlast AIGC_OPENAI_WAIT_SECONDS. Each stream holds one of its tenant's
stream slots (`accounts.streams`), taken by the view and given back here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

from aigc_saas.accounts.streams import KeyWatch, close_stream, quiet_seconds
from aigc_saas.jobs import events
from aigc_saas.jobs.models import Job
from aigc_saas.openai_compat.errors import OpenAIError
from aigc_saas.openai_compat.results import cancel, finish_reason, job_failure, usage
from aigc_saas.web_threads import in_thread

HEARTBEAT_SECONDS = 15.0


def _data(payload: Any) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _error(error: OpenAIError) -> str:
    return _data(
        {"error": {"message": error.message, "type": error.body_type, "param": error.param, "code": error.code}}
    )


async def _merged(job_ids: list[Any]) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
    """(choice index, event, data) from every job's stream, in arrival order, until each has ended."""
    queue: asyncio.Queue[tuple[int, str, dict[str, Any]]] = asyncio.Queue()

    async def pump(index: int, job_id: Any) -> None:
        try:
            async for _id, event, data in events.follow(
                job_id,
                timeout=settings.AIGC_OPENAI_WAIT_SECONDS,
                heartbeat=quiet_seconds(HEARTBEAT_SECONDS),
                pace=settings.AIGC_STREAM_INTERVAL_MS / 1000,
            ):
                await queue.put((index, event, data))
                if event == "end":
                    return
        finally:
            await queue.put((index, "closed", {}))

    tasks = [asyncio.create_task(pump(index, job_id)) for index, job_id in enumerate(job_ids)]
    open_streams = len(tasks)
    try:
        while open_streams:
            index, event, data = await queue.get()
            if event == "closed":
                open_streams -= 1
                continue
            yield index, event, data
    finally:
        for task in tasks:
            task.cancel()


def _load(job_ids: list[Any]) -> list[Job]:
    jobs = {job.pk: job for job in Job.objects.filter(pk__in=job_ids)}
    return [jobs[pk] for pk in job_ids]


async def relay(kind: str, jobs: list[Job], model: str, include_usage: bool) -> AsyncIterator[str]:
    """`kind` is `chat` (chat.completion.chunk) or `completion` (text_completion); the jobs' tenant holds a slot."""
    job_ids = [job.pk for job in jobs]
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    head = {
        "id": f"{prefix}-{jobs[0].pk.hex}",
        "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
        "created": int(jobs[0].created_at.timestamp()),
        "model": model,
    }
    if kind == "chat":
        head["system_fingerprint"] = None

    def choice(index: int, text: str | None, finish_reason: str | None, *, role: bool = False) -> dict[str, Any]:
        if kind == "chat":
            delta: dict[str, Any] = {} if text is None else {"content": text}
            if role:
                delta["role"] = "assistant"
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

    def chunk(*choices: dict[str, Any], **extra: Any) -> str:
        return _data({**head, "choices": list(choices), **extra, **({"usage": None} if include_usage else {})})

    complete = False
    try:
        if kind == "chat":
            yield chunk(*(choice(i, "", None, role=True) for i in range(len(jobs))))
        key = KeyWatch(jobs[0].api_key_id)
        streamed: set[int] = set()  # choices that sent text
        async for index, event, data in _merged(job_ids):
            if await key.revoked():
                yield _error(OpenAIError(400, "The API key of this stream was revoked.", code="api_key_revoked"))
                return  # its jobs are cancelled below, as when a client hangs up
            if event == "token" and data.get("text"):
                streamed.add(index)
                yield chunk(choice(index, data["text"], None))
            elif event == "state" and data.get("attempt", 1) > 1 and index in streamed:
                # Its worker was lost and the job starts over: chunks cannot be taken back, so the stream
                # ends here (the job goes on; `GET /api/v1/jobs/{id}` has its result).
                restarted = OpenAIError(
                    503, "the job restarted after its worker was lost; the streamed text is void", code="job_restarted"
                )
                yield _error(restarted)
                complete = True  # not a hang-up: the job is not cancelled
                return
            elif event == "heartbeat":
                yield ": keep-alive\n\n"  # also how a closed connection is noticed while the job is quiet
        finished = await in_thread(_load)(job_ids)
        if not all(job.is_terminal for job in finished):  # the wait ran out: as a non-streaming call, cancel
            wait = settings.AIGC_OPENAI_WAIT_SECONDS
            yield _error(OpenAIError(504, f"the job did not finish within {wait}s and was cancelled", code="timeout"))
            return
        failures = [f for f in map(job_failure, finished) if f is not None]
        if failures:
            yield _error(failures[0])
        else:
            yield chunk(*(choice(i, None if kind == "chat" else "", finish_reason(j)) for i, j in enumerate(finished)))
            if include_usage:
                yield _data({**head, "choices": [], "usage": usage(finished)})
        yield "data: [DONE]\n\n"
        complete = True
    finally:
        if not complete:
            with contextlib.suppress(Exception):  # best effort: the connection is already gone
                await asyncio.shield(in_thread(cancel)(job_ids))
        await close_stream(jobs[0].tenant_id)
