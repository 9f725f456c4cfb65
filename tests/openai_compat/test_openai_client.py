"""The official `openai` client, unchanged, against /v1: a real ASGI server, a real worker, the tiny models."""

from __future__ import annotations

import base64
import json
import time
import uuid

import openai
import pytest
import requests

from aigc_saas.accounts.models import Tenant
from aigc_saas.jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = "transformers-text"
SYSTEM = {"role": "system", "content": "You are terse."}


def job_of(response_id: str) -> Job:
    """The job behind an answer: its id is `chatcmpl-<job id hex>` (or `cmpl-`)."""
    return Job.objects.get(pk=uuid.UUID(response_id.split("-", 1)[1]))


def test_models_lists_each_enabled_generator_and_the_models_it_allows(client, tiny_models) -> None:  # noqa: ANN001
    models = {m.id: m for m in client.models.list()}

    assert {TEXT, "diffusers-image", "transformers-speech"} <= set(models)
    assert str(tiny_models[TEXT]) in models  # the generator's default model, by its own id
    assert models[TEXT].object == "model" and models[TEXT].owned_by == "aigc-saas"
    assert client.models.retrieve(TEXT).id == TEXT


def test_chat_completion_is_an_ordinary_job_with_real_usage(client, tenant_key) -> None:  # noqa: ANN001
    answer = client.chat.completions.create(
        model=TEXT, messages=[SYSTEM, {"role": "user", "content": "Say hi"}], max_tokens=6, seed=7, user="u-42"
    )

    job = job_of(answer.id)
    assert job.tenant == tenant_key[0].tenant and job.api_key == tenant_key[0]
    assert job.state == "succeeded" and job.origin == {"openai": "chat.completions", "user": "u-42"}
    assert job.params["messages"][0] == SYSTEM and job.params["max_new_tokens"] == 6 and job.params["seed"] == 7
    assert answer.choices[0].message.content == job.result["text"]
    assert answer.choices[0].finish_reason == "length"  # the random model never stops by itself
    assert answer.usage.completion_tokens == job.result["metadata"]["completion_tokens"] == 6
    assert answer.usage.prompt_tokens == job.result["metadata"]["prompt_tokens"] > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 6


def test_the_job_is_listed_in_the_tenant_jobs_api(client, v1_server, tenant_key) -> None:  # noqa: ANN001
    answer = client.chat.completions.create(model=TEXT, messages=[{"role": "user", "content": "x"}], max_tokens=2)

    listed = requests.get(
        f"{v1_server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {tenant_key[1]}"}, timeout=30
    ).json()

    assert str(job_of(answer.id).pk) in [j["id"] for j in listed["results"]]


def test_n_choices_are_n_jobs(client) -> None:  # noqa: ANN001
    answer = client.chat.completions.create(model=TEXT, messages=[{"role": "user", "content": "x"}], max_tokens=3, n=2)

    assert [c.index for c in answer.choices] == [0, 1]
    assert Job.objects.filter(origin__openai="chat.completions").count() == 2
    assert answer.usage.completion_tokens == 6


def test_streamed_chat_chunks_concatenate_to_the_final_text_and_end_with_usage(client) -> None:  # noqa: ANN001
    stream = client.chat.completions.create(
        model=TEXT,
        messages=[{"role": "user", "content": "Tell a story"}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    job = job_of(chunks[0].id)
    assert text == job.result["text"] and len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24


def test_the_stream_ends_with_done(v1_server, worker, tenant_key) -> None:  # noqa: ANN001
    response = requests.post(
        f"{v1_server.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {tenant_key[1]}"},
        json={"model": TEXT, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "stream": True},
        stream=True,
        timeout=60,
    )

    lines = [line for line in response.iter_lines(decode_unicode=True) if line]

    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    assert all(json.loads(line[6:])["object"] == "chat.completion.chunk" for line in lines[:-1])


def test_a_client_that_disconnects_from_a_stream_cancels_its_job(v1_server, worker, tenant_key) -> None:  # noqa: ANN001
    body = {"model": TEXT, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2000, "stream": True}
    response = requests.post(
        f"{v1_server.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {tenant_key[1]}"},
        json=body,
        stream=True,
        timeout=60,
    )
    first = next(line for line in response.iter_lines(decode_unicode=True) if line.startswith("data: "))
    response.close()  # hang up mid-stream
    job_id = uuid.UUID(json.loads(first[6:])["id"].split("-", 1)[1])

    deadline = time.monotonic() + 30
    while Job.objects.get(pk=job_id).state not in ("cancelled", "succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)

    job = Job.objects.get(pk=job_id)
    assert job.state == "cancelled", (job.state, job.result and job.result["metadata"])


def test_completions_complete_a_prompt(client) -> None:  # noqa: ANN001
    answer = client.completions.create(model=TEXT, prompt="Once upon a time", max_tokens=5, temperature=0)

    job = job_of(answer.id)
    assert answer.object == "text_completion" and answer.choices[0].text == job.result["text"]
    assert job.params["prompt"] == "Once upon a time" and job.params["temperature"] == 0
    assert answer.usage.completion_tokens == 5


def test_images_as_base64(client, media) -> None:  # noqa: ANN001
    answer = client.images.generate(
        model="diffusers-image", prompt="a red square", size="64x64", n=2, response_format="b64_json"
    )

    assert len(answer.data) == 2
    assert all(base64.b64decode(image.b64_json).startswith(b"\x89PNG\r\n") for image in answer.data)


def test_images_as_signed_urls_that_work_without_the_key_and_refuse_tampering(client, media) -> None:  # noqa: ANN001
    answer = client.images.generate(
        model="diffusers-image", prompt="a blue circle", size="64x64", response_format="url"
    )

    url = answer.data[0].url
    fetched = requests.get(url, timeout=30)
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG\r\n")
    assert fetched.headers["content-type"] == "image/png"
    tampered = requests.get(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"), timeout=30)
    assert tampered.status_code == 404 and tampered.json()["error"]["code"] == "not_found"


def test_speech_returns_audio_bytes_in_the_asked_format(client, media) -> None:  # noqa: ANN001
    wav = client.audio.speech.create(
        model="transformers-speech", voice="alloy", input="Hello there", response_format="wav"
    )
    flac = client.audio.speech.create(
        model="transformers-speech", voice="default", input="Hello", response_format="flac", speed=1.5
    )

    assert wav.content[:4] == b"RIFF" and wav.content[8:12] == b"WAVE"
    assert flac.content[:4] == b"fLaC"
    jobs = Job.objects.filter(origin__openai="audio.speech").order_by("created_at")
    assert jobs[0].params["speaker_id"] == 0  # alloy: the first voice, on a two-speaker model
    assert jobs[1].params["speaking_rate"] == 1.5 and jobs[1].params.get("speaker_id") is None


def test_a_wrong_key_is_an_authentication_error(v1_server, worker) -> None:  # noqa: ANN001
    bad = openai.OpenAI(base_url=f"{v1_server.url}/v1", api_key="sk-not-a-key", max_retries=0)

    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()

    assert caught.value.status_code == 401 and caught.value.body["type"] == "authentication_error"


def test_an_unknown_model_is_not_found(client) -> None:  # noqa: ANN001
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])

    assert caught.value.code == "model_not_found" and caught.value.param == "model"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"presence_penalty": 1.0}, "presence_penalty"),
        ({"max_tokens": 100000}, "max_tokens"),
        ({"max_completion_tokens": 100000}, "max_completion_tokens"),
    ],
)
def test_bad_input_is_a_bad_request_naming_the_param(client, extra, param) -> None:  # noqa: ANN001
    body = {"model": TEXT, "messages": [{"role": "user", "content": "x"}], **extra}

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)

    assert caught.value.param == param, caught.value.body
    assert f"`{param}`" in caught.value.message


def test_an_unknown_voice_is_a_bad_request_naming_voice(client, media) -> None:  # noqa: ANN001
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="transformers-speech", voice="dalek", input="x")

    assert caught.value.param == "voice"


def test_over_the_rate_limit_is_a_rate_limit_error_with_retry_after(client, tenant_key) -> None:  # noqa: ANN001
    Tenant.objects.filter(pk=tenant_key[0].tenant_id).update(submissions_per_minute=1)
    client.completions.create(model=TEXT, prompt="a", max_tokens=1)

    with pytest.raises(openai.RateLimitError) as caught:
        client.completions.create(model=TEXT, prompt="b", max_tokens=1)

    assert caught.value.status_code == 429
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_the_openapi_schema_describes_the_v1_endpoints(v1_server) -> None:  # noqa: ANN001
    schema = requests.get(f"{v1_server.url}/api/v1/schema?format=json", timeout=30).json()

    for path, method in [
        ("/v1/models", "get"),
        ("/v1/chat/completions", "post"),
        ("/v1/completions", "post"),
        ("/v1/images/generations", "post"),
        ("/v1/audio/speech", "post"),
    ]:
        operation = schema["paths"][path][method]
        assert operation["responses"]["200"] and operation["responses"]["401"]
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    request = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"model", "messages", "stream", "response_format"} <= set(
        schema["components"]["schemas"][request]["properties"]
    )


def test_a_stream_of_n_choices_tags_each_delta_with_its_choice(client) -> None:  # noqa: ANN001
    chunks = list(
        client.chat.completions.create(
            model=TEXT, messages=[{"role": "user", "content": "x"}], max_tokens=8, n=2, stream=True
        )
    )

    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    jobs = Job.objects.filter(origin__openai="chat.completions").order_by("origin__choice")
    assert [texts[0], texts[1]] == [job.result["text"] for job in jobs]


def test_a_streamed_text_completion_concatenates_to_the_final_text(client) -> None:  # noqa: ANN001
    chunks = list(client.completions.create(model=TEXT, prompt="Once", max_tokens=10, stream=True))

    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == job_of(chunks[0].id).result["text"]


def test_a_client_that_hangs_up_on_a_waiting_call_cancels_its_job(v1_server, worker, tenant_key) -> None:  # noqa: ANN001
    # Its job waits on a queue no worker consumes, so it is still unfinished when the client gives up (a job the
    # tiny model could finish first would make this a race).
    from aigc_saas.plugins.models import PluginRecord

    assert PluginRecord.objects.filter(name=TEXT).update(queue="hang-up-unserved") == 1
    body = {"model": TEXT, "messages": [{"role": "user", "content": "x"}], "max_tokens": 20}
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            f"{v1_server.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {tenant_key[1]}"},
            json=body,
            timeout=(5, 1.0),  # gives up (and closes the connection) while the call waits for its job
        )

    job = Job.objects.get(origin__openai="chat.completions")
    deadline = time.monotonic() + 30
    while job.state not in ("cancelled", "succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        job.refresh_from_db()
    assert job.state == "cancelled", job.state


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda c: c.images.generate(model="diffusers-image", prompt="x", size="65x65"), "size"),
        (lambda c: c.images.generate(model="diffusers-image", prompt="x", n=9), "n"),
        (
            lambda c: c.audio.speech.create(
                model="transformers-speech", voice="alloy", input="x", response_format="mp3"
            ),
            "response_format",
        ),
        (lambda c: c.audio.speech.create(model="transformers-speech", voice="alloy", input="x", speed=3.0), "speed"),
        (lambda c: c.completions.create(model=TEXT, prompt="x", echo=True), "echo"),
        (
            lambda c: c.chat.completions.create(model="diffusers-image", messages=[{"role": "user", "content": "x"}]),
            "model",
        ),
    ],
)
def test_media_and_completion_params_out_of_range_are_bad_requests_naming_them(client, media, call, param) -> None:  # noqa: ANN001
    with pytest.raises(openai.BadRequestError) as caught:
        call(client)

    assert caught.value.param == param, caught.value.body


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[" * 100000 + b"]" * 100000, 400, "invalid_json"),
        (
            json.dumps({"model": TEXT, "messages": [{"role": "user", "content": "x" * 2_000_000}]}).encode(),
            413,
            "payload_too_large",
        ),
    ],
)
def test_malformed_deep_or_oversized_bodies_are_openai_shaped_4xx(v1_server, tenant_key, body, status, code) -> None:  # noqa: ANN001
    response = requests.post(
        f"{v1_server.url}/v1/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {tenant_key[1]}", "Content-Type": "application/json"},
        timeout=30,
    )

    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_an_idempotency_key_makes_a_retried_call_return_the_same_job(v1_server, worker, tenant_key) -> None:  # noqa: ANN001
    headers = {"Authorization": f"Bearer {tenant_key[1]}", "Idempotency-Key": "retry-7"}
    body = {"model": TEXT, "messages": [{"role": "user", "content": "once"}], "max_tokens": 4}
    url = f"{v1_server.url}/v1/chat/completions"
    first, again = (requests.post(url, headers=headers, json=body, timeout=60) for _ in range(2))
    assert first.status_code == again.status_code == 200, first.text
    assert first.json()["id"] == again.json()["id"]
    assert Job.objects.filter(idempotency_key="retry-7").count() == 1
    other = requests.post(url, headers=headers, json={**body, "max_tokens": 5}, timeout=60)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
