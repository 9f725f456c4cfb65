"""Built-in speech-to-text generator: a transformers Whisper model, with timestamped segments, long audio in windows."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from generators.assets import AudioData, asset_id_of, audio_input
from generators.base import GenerationContext, GenerationResult, Generator, GeneratorConfig, Modality
from generators.errors import GeneratorError, JobCancelled, ModelLoadFailed, OutOfMemory
from hardware import DeviceChoice, HardwareNeeds
from hardware.oom import is_oom

DEFAULT_MODEL = "openai/whisper-tiny"
SAMPLE_RATE = 16_000  # what every Whisper feature extractor expects
WINDOW_SECONDS = 30  # Whisper's input is a fixed 30 s of audio
MAX_SECONDS = 4 * 3600

Recording = audio_input(max_seconds=MAX_SECONDS, sample_rate=SAMPLE_RATE, mono=True)


class TranscribeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audio: Recording = Field(description="The recording: an uploaded audio asset's id, or a speech job artifact's id.")
    language: str | None = Field(
        default=None,
        min_length=2,
        max_length=8,
        pattern=r"^[a-z]{2,3}(-[a-zA-Z]{2,4})?$",
        description="Spoken language as an ISO 639-1 code (`en`, `de`…); unset lets the model detect it.",
    )
    task: Literal["transcribe", "translate"] = Field(
        default="transcribe", description="`transcribe` in the spoken language, or `translate` into English."
    )
    max_new_tokens: int = Field(
        default=220, ge=1, le=440, description="Tokens decoded at most per 30-second window (Whisper's limit is 448)."
    )


class TranscribeConfig(GeneratorConfig):
    model_id: str = Field(
        default_factory=lambda: os.environ.get("AIGC_MODEL_TRANSFORMERS_TRANSCRIBE", DEFAULT_MODEL),
        description="Whisper speech-recognition model id or path (env AIGC_MODEL_TRANSFORMERS_TRANSCRIBE).",
    )


class TranscribeGenerator(Generator):
    """Text from speech with a transformers Whisper model: the transcript and its timestamped segments."""

    name = "transformers-transcribe"
    modality = Modality.TEXT
    Params = TranscribeParams
    Config = TranscribeConfig
    needs = HardwareNeeds(devices=("cuda", "mps", "cpu"), dtypes=("float16", "float32"), memory_mb=1000)
    config: TranscribeConfig

    def setup(self, device: DeviceChoice) -> None:
        import torch  # noqa: F401 - heavy imports live here, never at module level
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        super().setup(device)
        try:
            self.processor = WhisperProcessor.from_pretrained(self.config.model_id, revision=self.config.revision)
            self.model = WhisperForConditionalGeneration.from_pretrained(
                self.config.model_id, revision=self.config.revision, dtype=device.torch_dtype()
            )
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadFailed(f"could not load transcription model {self.config.model_id!r}: {exc}") from exc
        try:
            self.model.to(device.device)
        except Exception as exc:
            if is_oom(exc):
                raise OutOfMemory(f"`{device.device}` ran out of memory loading {self.config.model_id!r}") from exc
            raise
        self.model.eval()

    def generate(self, params: TranscribeParams, ctx: GenerationContext) -> GenerationResult:
        ctx.raise_if_cancelled()
        audio = params.audio
        if not isinstance(audio, AudioData):
            raise GeneratorError(
                "`params.audio` was not decoded: run the job through the platform", code="asset_missing"
            )
        if params.language and f"<|{params.language}|>" not in self.processor.tokenizer.get_vocab():
            raise GeneratorError(
                f"`params.language`: {params.language!r} is not a language of {self.config.model_id!r}",
                code="unsupported_language",
            )
        window = WINDOW_SECONDS * audio.sample_rate
        starts = list(range(0, max(len(audio.waveform), 1), window))
        segments: list[dict[str, Any]] = []
        for number, start in enumerate(starts, 1):
            if ctx.cancelled():
                raise JobCancelled(f"the job was cancelled after {number - 1} of {len(starts)} windows")
            chunk = audio.waveform[start : start + window]
            offset = start / audio.sample_rate
            span = (0.99 * (number - 1) / len(starts), 0.99 / len(starts))
            try:
                segments += self._window_segments(chunk, offset, params, ctx, span)
            except Exception as exc:
                if is_oom(exc):
                    raise OutOfMemory(f"`{ctx.device.device}` ran out of memory transcribing") from exc
                raise
            if ctx.cancelled():
                raise JobCancelled(f"the job was cancelled during window {number} of {len(starts)}")
            ctx.progress(0.99 * number / len(starts), f"window {number}/{len(starts)}")
        text = " ".join(s["text"] for s in segments if s["text"]).strip()
        metadata = {
            "model_id": self.config.model_id,
            "device": ctx.device.device,
            "dtype": ctx.device.dtype,
            "language": params.language,
            "task": params.task,
            "duration": round(audio.duration, 3),
            "windows": len(starts),
            "input": asset_id_of(audio),
        }
        ctx.progress(1.0, f"{len(segments)} segment(s)")
        return GenerationResult(text=text, data={"text": text, "segments": segments}, metadata=metadata)

    def _window_segments(
        self, chunk: Any, offset: float, params: TranscribeParams, ctx: GenerationContext, span: tuple[float, float]
    ) -> list[dict[str, Any]]:
        """Whisper on one window (at most 30 s), its segments moved to the recording's timeline."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class ReportAndWatch(StoppingCriteria):
            """Progress per decoded token, and a cancel request stops decoding at the next token."""

            steps = 0

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                self.steps += 1
                done = min(1.0, self.steps / params.max_new_tokens)
                ctx.progress(span[0] + span[1] * done, f"token {self.steps}")
                return torch.full((input_ids.shape[0],), ctx.cancelled(), dtype=torch.bool, device=input_ids.device)

        features = self.processor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        features = features.to(ctx.device.device, dtype=self.model.dtype)
        with torch.inference_mode():
            tokens = self.model.generate(
                features,
                return_timestamps=True,
                language=params.language,
                task=params.task,
                max_new_tokens=params.max_new_tokens,
                stopping_criteria=StoppingCriteriaList([ReportAndWatch()]),
            )
        decoded = self.processor.tokenizer.decode(tokens[0], output_offsets=True, skip_special_tokens=True)
        length = len(chunk) / SAMPLE_RATE
        segments = []
        for item in decoded.get("offsets", []):
            text = item["text"].strip()
            begin, end = item["timestamp"]
            # A model may close a segment past the window; the window's audio is all it heard.
            begin, end = min(begin or 0.0, length), min(end if end is not None else length, length)
            if text:
                segments.append({"start": round(offset + begin, 2), "end": round(offset + end, 2), "text": text})
        if not segments and decoded.get("text", "").strip():
            segments.append(
                {"start": round(offset, 2), "end": round(offset + length, 2), "text": decoded["text"].strip()}
            )
        return segments
