"""OpenAI request bodies as pydantic models (validation and the OpenAPI description), and their job params.

Fields OpenAI defines that this platform cannot honour are accepted only at their neutral value (a non-zero
`presence_penalty`, `logprobs: true`, tools …) and refused otherwise, naming the field: never quietly ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aigc_saas.openai_compat.errors import OpenAIError

Stop = str | Annotated[list[str], Field(max_length=4)] | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="`developer` is treated as `system`; tool messages are not supported."
    )
    content: str | list[TextPart] = Field(description="Text, or a list of text parts (joined).")
    name: str | None = Field(default=None, max_length=64, description="Accepted and not used.")

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(Strict):
    include_usage: bool = Field(default=False, description="Send a last chunk with the usage of the whole request.")


class JsonSchemaSpec(Strict):
    name: str = Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = Field(default=None, description="Output always follows the schema here, strict or not.")


class TextFormat(Strict):
    type: Literal["text"]


class JsonObjectFormat(Strict):
    type: Literal["json_object"]


class JsonSchemaFormat(Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class Sampling(Strict):
    """What chat and completions share."""

    model: str = Field(min_length=1, max_length=300, description="An id from GET /v1/models.")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    stop: Stop = Field(default=None, description="Up to 4 strings; generation ends before the first.")
    n: int = Field(default=1, ge=1, le=8, description="Choices to make; each is one job.")
    user: str | None = Field(default=None, max_length=256, description="Recorded in each job's origin.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, description="Only 0 is supported.")
    frequency_penalty: float | None = Field(default=None, description="Only 0 is supported.")
    logit_bias: dict[str, float] | None = Field(default=None, description="Not supported: only empty.")
    logprobs: bool | int | None = Field(default=None, description="Not supported: only false.")
    metadata: dict[str, str] | None = Field(default=None, description="Accepted and not used.")
    store: bool | None = Field(default=None, description="Accepted: every call is stored as a job anyway.")

    @model_validator(mode="after")
    def _neutral_only(self) -> Sampling:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise ValueError(f"`{name}` is not supported by this server; leave it out or 0")
        if self.logit_bias:
            raise ValueError("`logit_bias` is not supported by this server")
        if self.logprobs:
            raise ValueError("`logprobs` is not supported by this server")
        return self

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def sampling_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name in ("temperature", "top_p", "seed"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.stop:
            params["stop"] = self.stops()
        return params


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(default=None, ge=1, description="Deprecated by OpenAI; max_completion_tokens.")
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = Field(default=None, description="Not supported: only empty.")
    tool_choice: Any = Field(default=None, description="Not supported: only `none`.")
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _no_tools(self) -> ChatCompletionRequest:
        if self.tools:
            raise ValueError("`tools` are not supported by this server")
        if self.tool_choice not in (None, "none"):
            raise ValueError("`tool_choice` is not supported by this server")
        return self

    def job_params(self) -> dict[str, Any]:
        params = self.sampling_params()
        params["messages"] = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages
        ]
        budget = self.max_completion_tokens or self.max_tokens
        if budget is not None:
            params["max_new_tokens"] = budget
        if isinstance(self.response_format, JsonObjectFormat):
            params["response_format"] = {"type": "json_object"}
        elif isinstance(self.response_format, JsonSchemaFormat):
            params["response_format"] = {"type": "json_schema", "schema": self.response_format.json_schema.schema_}
        return params


# Job param → the request field a client knows, to name it in errors.
CHAT_PARAMS = {"messages": "messages", "max_new_tokens": "max_completion_tokens", "response_format": "response_format"}
COMPLETION_PARAMS = {"prompt": "prompt", "max_new_tokens": "max_tokens"}
IMAGE_PARAMS = {"prompt": "prompt", "width": "size", "height": "size", "num_images": "n"}
SPEECH_PARAMS = {"text": "input", "speaking_rate": "speed", "format": "response_format", "speaker_id": "voice"}


class CompletionRequest(Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] = Field(
        description="One prompt (a list of one string is accepted)."
    )
    max_tokens: int = Field(default=16, ge=1, description="OpenAI's default is 16.")
    echo: bool = Field(default=False, description="Not supported: only false.")
    suffix: str | None = Field(default=None, description="Not supported: only null.")
    best_of: int | None = Field(default=None, description="Only 1.")

    @model_validator(mode="after")
    def _plain_only(self) -> CompletionRequest:
        if self.echo:
            raise ValueError("`echo` is not supported by this server")
        if self.suffix:
            raise ValueError("`suffix` is not supported by this server")
        if self.best_of not in (None, 1):
            raise ValueError("`best_of` is not supported by this server; use `n`")
        return self

    def job_params(self) -> dict[str, Any]:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return {**self.sampling_params(), "prompt": prompt, "max_new_tokens": self.max_tokens}


SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")


class ImageRequest(Strict):
    prompt: str = Field(min_length=1, max_length=2000)
    model: str | None = Field(default=None, description="An image model from GET /v1/models; its first if unset.")
    n: int = Field(default=1, ge=1, le=4, description="Images from one job (its `num_images`).")
    size: str | None = Field(default=None, description="`WIDTHxHEIGHT` in pixels (multiples of 8), or `auto`.")
    response_format: Literal["url", "b64_json"] = Field(
        default="url", description="`url`: a signed link that works without the API key until it expires."
    )
    quality: str | None = Field(default=None, description="Accepted and not used (steps set quality here).")
    style: str | None = Field(default=None, description="Accepted and not used.")
    output_format: Literal["png"] | None = Field(default=None, description="Only png.")
    user: str | None = Field(default=None, max_length=256)

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value in (None, "auto") or SIZE.match(value or ""):
            return value
        raise ValueError("must be `WIDTHxHEIGHT`, such as `512x512`, or `auto`")

    def job_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"prompt": self.prompt, "num_images": self.n}
        if self.size not in (None, "auto"):
            width, height = SIZE.match(self.size).groups()  # type: ignore[union-attr]
            params |= {"width": int(width), "height": int(height)}
        return params


class SpeechRequest(Strict):
    model: str = Field(min_length=1, max_length=300)
    input: str = Field(min_length=1, max_length=4096, description="The text to speak (the model may allow less).")
    voice: str = Field(
        default="default",
        max_length=40,
        description="`default`, an OpenAI voice name (mapped onto the model's speakers) or `speaker_N`.",
    )
    response_format: Literal["wav", "flac"] = Field(
        default="wav", description="OpenAI's mp3/opus/aac/pcm are not made."
    )
    speed: float = Field(default=1.0, ge=0.5, le=2.0, description="OpenAI allows 0.25-4; this server 0.5-2.")
    instructions: str | None = Field(default=None, description="Not supported: only empty.")
    stream_format: Literal["audio"] | None = Field(default=None, description="Only `audio` (one response body).")

    @model_validator(mode="after")
    def _no_instructions(self) -> SpeechRequest:
        if self.instructions:
            raise ValueError("`instructions` are not supported by this server's speech models")
        return self


def parse(model: type[BaseModel], body: Any) -> Any:
    """The validated request, or a 400 naming the first bad field."""
    from pydantic import ValidationError

    from aigc_saas.openai_compat.errors import from_validation

    if not isinstance(body, dict):
        raise OpenAIError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise from_validation(exc) from None
