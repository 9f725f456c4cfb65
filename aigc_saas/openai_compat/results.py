"""What a finished job means in OpenAI's terms: its failure as an error, its usage, its finish reason."""

from __future__ import annotations

import contextlib
from typing import Any

from aigc_saas.errors import Conflict
from aigc_saas.jobs import services
from aigc_saas.jobs.models import Job, JobState
from aigc_saas.openai_compat.errors import OpenAIError

# Failures that are the request's fault (a prompt too long for the model, a schema it cannot compile, a budget too
# small for the schema): 400, so the SDK raises BadRequestError. Other failures are the server's: 500.
CLIENT_FAULTS = {
    "prompt_too_long": "messages",
    "invalid_params": None,
    "invalid_response_format": "response_format",
    "structured_output_truncated": "max_completion_tokens",
    "structured_output_unsupported": "response_format",
}


def cancel(job_ids: list[Any]) -> None:
    for job in Job.objects.filter(pk__in=job_ids):
        if not job.is_terminal:
            with contextlib.suppress(Conflict):  # it finished meanwhile
                services.cancel_job(job)


def job_failure(job: Job) -> OpenAIError | None:
    """The OpenAI error for a job that did not succeed, or None."""
    if job.state == JobState.SUCCEEDED:
        return None
    message = f"job {job.pk} {job.state}: {job.error_message or job.error_code}"
    if job.error_code in CLIENT_FAULTS:
        param = CLIENT_FAULTS[job.error_code]
        if param == "messages" and (job.params or {}).get("prompt"):
            param = "prompt"  # a text completion's prompt
        elif param == "max_completion_tokens" and (job.origin or {}).get("openai") == "completions":
            param = "max_tokens"
        return OpenAIError(400, message, param=param, code=job.error_code)
    return OpenAIError(500, message, code=job.error_code or job.state)


def usage(jobs: list[Job]) -> dict[str, int]:
    """Real counts from the engine: the prompt once (every choice shares it), completions summed."""
    prompt = int((jobs[0].result or {}).get("metadata", {}).get("prompt_tokens", 0)) if jobs else 0
    completion = sum(int((j.result or {}).get("metadata", {}).get("completion_tokens", 0)) for j in jobs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(job: Job) -> str:
    return (job.result or {}).get("metadata", {}).get("finish_reason") or "stop"
