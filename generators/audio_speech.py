"""Built-in text-to-speech generator: a transformers VITS model, encoded to WAV, FLAC or Ogg Vorbis."""

from __future__ import annotations

import importlib.util
import io
import os
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from generators.base import GenerationContext, GenerationResult, Generator, GeneratorConfig, Modality, OutputFile
from generators.errors import JobCancelled, ModelLoadFailed, OutOfMemory, ParamsInvalid
from hardware import DeviceChoice, HardwareNeeds
from hardware.oom import is_oom

DEFAULT_MODEL = "kakao-enterprise/vits-ljs"
FORMATS = {
    "wav": ("WAV", "PCM_16", "audio/wav"),
    "flac": ("FLAC", "PCM_16", "audio/flac"),
    "ogg": ("OGG", "VORBIS", "audio/ogg"),
}


class SpeechParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=1000, description="What to say.")
    speaker_id: int | None = Field(
        default=None, ge=0, le=9999, description="Voice of a multi-speaker model; refused by single-voice models."
    )
    speaking_rate: float = Field(default=1.0, ge=0.5, le=2.0, description="Above 1 speaks faster, below 1 slower.")
    seed: int | None = Field(
        default=None, ge=0, le=2**32 - 1, description="Fix for reproducible audio; a random one is recorded if unset."
    )
    format: Literal["wav", "flac", "ogg"] = Field(
        default="wav", description="`wav` (16-bit PCM), `flac` (lossless, smaller) or `ogg` (Vorbis)."
    )


class SpeechConfig(GeneratorConfig):
    model_id: str = Field(
        default_factory=lambda: os.environ.get("AIGC_MODEL_TRANSFORMERS_SPEECH", DEFAULT_MODEL),
        description="VITS text-to-speech model id or path (env AIGC_MODEL_TRANSFORMERS_SPEECH).",
    )


class SpeechGenerator(Generator):
    """Speech from text with a transformers VITS model (MMS, VITS-LJS/VCTK), as WAV, FLAC or Ogg."""

    name = "transformers-speech"
    modality = Modality.AUDIO
    Params = SpeechParams
    Config = SpeechConfig
    # VITS's flows and duration predictor are not reliable in half precision; the models are small anyway.
    needs = HardwareNeeds(devices=("cuda", "mps", "cpu"), dtypes=("float32",), memory_mb=500)
    config: SpeechConfig

    def setup(self, device: DeviceChoice) -> None:
        import torch  # noqa: F401 - heavy imports live here, never at module level
        from transformers import AutoTokenizer, VitsModel

        super().setup(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.config.model_id, revision=self.config.revision)
            self.model = VitsModel.from_pretrained(
                self.config.model_id, revision=self.config.revision, dtype=device.torch_dtype()
            )
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadFailed(f"could not load speech model {self.config.model_id!r}: {exc}") from exc
        if getattr(self.tokenizer, "phonemize", False) and importlib.util.find_spec("phonemizer") is None:
            raise ModelLoadFailed(
                f"speech model {self.config.model_id!r} reads phonemes: install the `phonemizer` package and the "
                "`espeak-ng` system library, or choose a character-level model such as `facebook/mms-tts-eng`"
            )
        try:
            self.model.to(device.device)
        except Exception as exc:
            if is_oom(exc):
                raise OutOfMemory(f"`{device.device}` ran out of memory loading {self.config.model_id!r}") from exc
            raise
        self.model.eval()

    @property
    def num_speakers(self) -> int:
        return int(getattr(self.model.config, "num_speakers", 1) or 1)

    def check_speaker(self, speaker_id: int | None) -> None:
        """Refuse a `speaker_id` the loaded model cannot honour, naming the field."""
        if speaker_id is None:
            return
        if self.num_speakers <= 1:
            message = f"`speaker_id` {speaker_id} cannot be used: {self.config.model_id!r} has a single voice"
        elif speaker_id >= self.num_speakers:
            message = f"`speaker_id` {speaker_id} is out of range: {self.config.model_id!r} has voices 0-{self.num_speakers - 1}"
        else:
            return
        raise ParamsInvalid(message, [{"field": "speaker_id", "code": "unsupported", "message": message}])

    def generate(self, params: SpeechParams, ctx: GenerationContext) -> GenerationResult:
        import numpy as np
        import soundfile
        import torch

        ctx.raise_if_cancelled()
        self.check_speaker(params.speaker_id)
        inputs = self.tokenizer(params.text, return_tensors="pt")
        pad_id = self.tokenizer.pad_token_id
        if not bool((inputs["input_ids"] != pad_id).any()):
            message = f"`text` has no characters that {self.config.model_id!r} can pronounce"
            raise ParamsInvalid(message, [{"field": "text", "code": "unpronounceable", "message": message}])
        inputs = inputs.to(self.model.device)
        seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
        ctx.progress(0.1, f"{int(inputs['input_ids'].shape[-1])} tokens")
        forked = [self.model.device] if self.model.device.type == "cuda" else []
        try:
            # VITS samples from the global RNG; fork it so a job's seed neither leaks nor is disturbed.
            with torch.random.fork_rng(devices=forked), torch.inference_mode():
                torch.manual_seed(seed)
                output = self.model(
                    **inputs,
                    speaker_id=params.speaker_id,
                    speaking_rate=params.speaking_rate,
                )
        except Exception as exc:
            if is_oom(exc):
                raise OutOfMemory(
                    f"`{ctx.device.device}` ran out of memory speaking {len(params.text)} characters; shorten `text`"
                ) from exc
            raise
        if ctx.cancelled():
            raise JobCancelled("the job was cancelled during synthesis")
        ctx.progress(0.9, "synthesised")
        waveform = np.clip(output.waveform[0].float().cpu().numpy(), -1.0, 1.0)
        sample_rate = int(self.model.config.sampling_rate)
        container, subtype, content_type = FORMATS[params.format]
        buffer = io.BytesIO()
        soundfile.write(buffer, waveform, sample_rate, format=container, subtype=subtype)
        frames = int(waveform.shape[0])
        metadata = {
            "generator": self.name,
            "model_id": self.config.model_id,
            "revision": self.config.revision,
            "text": params.text,
            "speaker_id": params.speaker_id,
            "speaking_rate": params.speaking_rate,
            "seed": seed,
            "format": params.format,
            "sample_rate": sample_rate,
            "frames": frames,
            "duration_seconds": round(frames / sample_rate, 4),
            "channels": 1,
            "device": ctx.device.device,
            "dtype": ctx.device.dtype,
        }
        ctx.progress(1.0, f"{metadata['duration_seconds']} s encoded as {params.format}")
        return GenerationResult(
            files=[
                OutputFile(
                    filename=f"speech.{params.format}",
                    content_type=content_type,
                    data=buffer.getvalue(),
                    metadata=metadata,
                )
            ],
            metadata=metadata,
        )
