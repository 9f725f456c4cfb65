"""Which generator and model a request's `model` names, for each kind of endpoint, and OpenAI voice names."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigc_saas.openai_compat.errors import OpenAIError
from aigc_saas.plugins.models import PluginRecord
from aigc_saas.plugins.services import effective_config, registry

# What each endpoint needs from a generator's params: a plugin qualifies by its pydantic model, not its name.
ENDPOINT_PARAMS = {
    "chat": ("text", {"messages", "max_new_tokens"}),
    "completion": ("text", {"prompt", "max_new_tokens"}),
    "image": ("image", {"prompt", "width", "height"}),
    "speech": ("audio", {"text", "speaking_rate", "format"}),
}
# OpenAI's voices, in a fixed order: the n-th maps to speaker n (modulo the model's speaker count).
VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)


@dataclass(frozen=True)
class Target:
    generator: str
    model_id: str  # the model the job runs
    requested: str  # the id the client used, echoed back in responses
    params: frozenset[str]


def _serves(record: PluginRecord, cls: Any, endpoint: str) -> bool:
    modality, needed = ENDPOINT_PARAMS[endpoint]
    return str(cls.modality) == modality and needed <= set(cls.Params.model_fields)


def available() -> list[dict[str, Any]]:
    """Every enabled generator's models: its default (also reachable by the generator's name) and allowed ones."""
    reg = registry()
    entries = []
    for record in PluginRecord.objects.filter(enabled=True, installed=True, name__in=list(reg.plugins)).order_by(
        "name"
    ):
        cls = reg.get(record.name).cls
        config = effective_config(record, cls)
        endpoints = [e for e in ENDPOINT_PARAMS if _serves(record, cls, e)]
        created = int(record.synced_at.timestamp()) if record.synced_at else 0
        for model_id in dict.fromkeys([record.name, config.model_id, *config.allowed_models]):
            entries.append(
                {
                    "id": model_id,
                    "generator": record.name,
                    "model_id": config.model_id if model_id == record.name else model_id,
                    "modality": str(cls.modality),
                    "endpoints": endpoints,
                    "created": created,
                }
            )
    return entries


def resolve(model: str, endpoint: str) -> Target:
    """The generator and model for `model` on this endpoint, or a 404 `model_not_found` naming it."""
    reg = registry()
    matches = [e for e in available() if e["id"] == model]
    for entry in matches:
        if endpoint in entry["endpoints"]:
            cls = reg.get(entry["generator"]).cls
            return Target(entry["generator"], entry["model_id"], model, frozenset(cls.Params.model_fields))
    if matches:
        raise OpenAIError(
            400,
            f"`model`: {model!r} cannot serve this endpoint (it is a {matches[0]['modality']} model)",
            param="model",
            code="model_not_supported",
        )
    raise OpenAIError(
        404,
        f"`model`: the model {model!r} does not exist or is not enabled here; GET /v1/models lists them",
        param="model",
        code="model_not_found",
    )


def speaker_count(model_id: str) -> int:
    """Speakers of a VITS-style model from its config.json (a local folder or the Hugging Face cache); 1 if unknown."""
    path = Path(model_id) / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model_id, "config.json")
        except Exception:  # noqa: BLE001 - an id the hub library rejects is simply not cached
            cached = None
        if not isinstance(cached, str):
            return 1
        path = Path(cached)
    try:
        return max(1, int(json.loads(path.read_text()).get("num_speakers") or 1))
    except (OSError, ValueError, TypeError):
        return 1


def speaker_for(voice: str, model_id: str) -> int | None:
    """OpenAI voice → speaker id: `default` (or any voice on a one-voice model) is the model's own voice."""
    speakers = speaker_count(model_id)
    if voice.startswith("speaker_") and voice[8:].isdigit():
        index = int(voice[8:])
        if index >= speakers:
            raise OpenAIError(
                400, f"`voice`: {voice!r} is out of range; this model has speakers 0-{speakers - 1}", param="voice"
            )
        return index if speakers > 1 else None
    if voice == "default":
        return None
    if voice not in VOICES:
        raise OpenAIError(
            400,
            f"`voice`: unknown voice {voice!r}; use `default`, one of {', '.join(VOICES)}, or `speaker_N`",
            param="voice",
            code="invalid_value",
        )
    return VOICES.index(voice) % speakers if speakers > 1 else None
