"""Typed asset inputs for a plugin's `Params`: an asset id in the API, the decoded image or waveform in `generate`.

    class Params(BaseModel):
        photo: ImageInput = Field(description="The product photo.")
        mask: MaskInput | None = Field(default=None, description="White = repaint.")

The JSON Schema shows each as `{"type": "string", "format": "aigc-asset-id", "x-aigc-asset": {...}}`. At
submission the platform checks the id names an asset (or a finished job's artifact) of the tenant with an
accepted type and within the bounds; on the worker it replaces the id with the decoded input: a PIL image
(in `spec.mode`), or `AudioData` (a float32 waveform with its sample rate). Sniffing, probing and decoding
live here, Django-free, so the platform and the contract kit decode alike.
"""

from __future__ import annotations

import io
import uuid
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

if TYPE_CHECKING:
    import numpy as np

ASSET_ID_FORMAT = "aigc-asset-id"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
AUDIO_TYPES = ("audio/wav", "audio/flac", "audio/mpeg", "audio/ogg")
PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
# The default cap for images a plugin receives: decoding is bounded even where the upload limit is raised.
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_SECONDS = 3600.0

AssetKind = Literal["image", "audio"]


class AssetRejected(ValueError):
    """Bytes that are not an accepted asset; `code` says why (unsupported type, too many pixels, too long…)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class AssetSpec:
    """What a plugin accepts for one asset param: its kind, content types and bounds, and how it is decoded."""

    kind: AssetKind
    types: tuple[str, ...]
    max_pixels: int | None = None  # images: width x height
    max_seconds: float | None = None  # audio: duration
    mode: str = "RGB"  # images: the PIL mode `generate` receives (RGB, L for masks)
    sample_rate: int | None = None  # audio: resampled to this rate; None keeps the file's
    mono: bool = True  # audio: channels averaged to one

    def json_schema(self) -> dict[str, Any]:
        bounds = {"max_pixels": self.max_pixels} if self.kind == "image" else {"max_seconds": self.max_seconds}
        decoded = {"mode": self.mode} if self.kind == "image" else {"sample_rate": self.sample_rate, "mono": self.mono}
        return {
            "type": "string",
            "format": ASSET_ID_FORMAT,
            "minLength": 36,
            "maxLength": 36,
            "x-aigc-asset": {"kind": self.kind, "types": list(self.types), **bounds, "decoded": decoded},
        }

    def validate(self, value: Any) -> Any:
        """An id string (canonical UUID form), or an input already decoded for this kind (the worker's, or a test's)."""
        if self.kind == "image" and is_image(value):
            return value
        if self.kind == "audio" and isinstance(value, AudioData):
            return value
        if not isinstance(value, str):
            raise ValueError(f"must be the id of an uploaded {self.kind} asset or a job artifact (a UUID string)")
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"{value[:60]!r} is not an asset id (a UUID string)") from None


@dataclass
class AudioData:
    """A decoded audio input: float32 samples in [-1, 1], shape (frames,) when mono else (frames, channels)."""

    waveform: np.ndarray
    sample_rate: int
    asset_id: str = ""

    @property
    def duration(self) -> float:
        return len(self.waveform) / self.sample_rate


@dataclass
class AssetInfo:
    """What the header says, read without decoding the content."""

    content_type: str
    kind: AssetKind
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def is_image(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "getbbox")


def asset_id_of(value: Any) -> str:
    """The id a (possibly decoded) asset param came from, for storing params as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, AudioData):
        return value.asset_id
    if is_image(value):
        return str(value.info.get("aigc_asset_id", ""))
    return str(value)


def _input_type(spec: AssetSpec) -> Any:
    return Annotated[
        Any,
        spec,
        PlainValidator(spec.validate),
        PlainSerializer(asset_id_of, return_type=str),
        WithJsonSchema(spec.json_schema()),
    ]


def image_input(
    *, types: tuple[str, ...] = IMAGE_TYPES, max_pixels: int | None = DEFAULT_MAX_PIXELS, mode: str = "RGB"
) -> Any:
    """An image param type; `generate` receives a PIL image in `mode`."""
    return _input_type(AssetSpec("image", tuple(types), max_pixels=max_pixels, mode=mode))


def audio_input(
    *,
    types: tuple[str, ...] = AUDIO_TYPES,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    sample_rate: int | None = None,
    mono: bool = True,
) -> Any:
    """An audio param type; `generate` receives `AudioData` (resampled to `sample_rate` where given)."""
    return _input_type(AssetSpec("audio", tuple(types), max_seconds=max_seconds, sample_rate=sample_rate, mono=mono))


ImageInput = image_input()
MaskInput = image_input(mode="L")
AudioInput = audio_input()


def _spec_in(annotation: Any, metadata: list[Any] | tuple[Any, ...] = ()) -> AssetSpec | None:
    for item in metadata:
        if isinstance(item, AssetSpec):
            return item
    origin = get_origin(annotation)
    if origin is Annotated:
        args = get_args(annotation)
        return _spec_in(args[0], args[1:])
    # Optional inputs (`ImageInput | None`) only: an asset inside a list or a model is not looked up.
    if origin is Union or type(annotation).__name__ == "UnionType":
        for arg in get_args(annotation):
            if (found := _spec_in(arg)) is not None:
                return found
    return None


def asset_fields(params_cls: Any) -> dict[str, AssetSpec]:
    """The asset params of a plugin's `Params` model, by field name."""
    found = {}
    for name, info in params_cls.model_fields.items():
        spec = _spec_in(info.annotation, info.metadata)
        if spec is not None:
            found[name] = spec
    return found


def nested_asset_fields(params_cls: Any) -> list[str]:
    """Fields that hide an asset input inside a list, dict or model, where the platform would not find it."""
    hidden = []
    for name, info in params_cls.model_fields.items():
        if name in asset_fields(params_cls):
            continue
        if ASSET_ID_FORMAT in repr(info.annotation):
            hidden.append(name)
    return hidden


# --- sniffing and probing --------------------------------------------------------------------------------------


def sniff(head: bytes) -> str | None:
    """The content type the first bytes show, for the types the platform stores; None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return None


def kind_of(content_type: str) -> AssetKind:
    return "image" if content_type.startswith("image/") else "audio"


def probe(data: bytes, *, max_pixels: int | None, max_seconds: float | None) -> AssetInfo:
    """Sniff and read the header; refuse unsupported bytes, too many pixels or too long a recording, undecoded."""
    content_type = sniff(data[:16])
    if content_type is None:
        raise AssetRejected(
            f"the bytes are not one of the accepted types {list(IMAGE_TYPES + AUDIO_TYPES)}", "asset_type_unsupported"
        )
    if kind_of(content_type) == "image":
        return _probe_image(data, content_type, max_pixels)
    return _probe_audio(data, content_type, max_seconds)


def _probe_image(data: bytes, content_type: str, max_pixels: int | None) -> AssetInfo:
    from PIL import Image

    with warnings.catch_warnings():
        # Pillow only reads the header here; its own bomb check must not decide our limit (we check below).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[PIL_FORMATS[content_type]]) as image:
                width, height = image.size
                frames = getattr(image, "n_frames", 1)
        except Image.DecompressionBombError as exc:
            raise AssetRejected(f"the image has too many pixels ({exc})", "image_too_many_pixels") from None
        except Exception as exc:  # noqa: BLE001 - any parse failure means the bytes are not a valid image
            raise AssetRejected(f"the {content_type} header cannot be read: {exc}", "asset_corrupt") from None
    if max_pixels is not None and width * height > max_pixels:
        raise AssetRejected(
            f"the image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
            "image_too_many_pixels",
        )
    return AssetInfo(content_type, "image", width=width, height=height, extra={"frames": frames})


def _probe_audio(data: bytes, content_type: str, max_seconds: float | None) -> AssetInfo:
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - libsndfile refuses what it cannot parse
        raise AssetRejected(f"the {content_type} header cannot be read: {exc}", "asset_corrupt") from None
    duration = info.frames / info.samplerate if info.samplerate else 0.0
    if info.frames <= 0 or info.samplerate <= 0:
        raise AssetRejected("the recording has no audio frames", "asset_corrupt")
    if max_seconds is not None and duration > max_seconds:
        raise AssetRejected(
            f"the recording lasts {duration:.1f} s, over the limit of {max_seconds:g} s", "audio_too_long"
        )
    return AssetInfo(
        content_type,
        "audio",
        duration=round(duration, 3),
        sample_rate=info.samplerate,
        channels=info.channels,
        extra={"format": info.format, "subtype": info.subtype},
    )


# --- decoding --------------------------------------------------------------------------------------------------


def decode(spec: AssetSpec, data: bytes, *, asset_id: str = "") -> Any:
    """The input `generate` receives: bounds are re-checked from the header before anything is decoded in full."""
    info = probe(data, max_pixels=spec.max_pixels, max_seconds=spec.max_seconds)
    if info.kind != spec.kind or info.content_type not in spec.types:
        raise AssetRejected(f"a {info.content_type} asset, this input takes {list(spec.types)}", "asset_type_refused")
    if spec.kind == "image":
        return _decode_image(spec, data, info, asset_id)
    return _decode_audio(spec, data, asset_id)


def _decode_image(spec: AssetSpec, data: bytes, info: AssetInfo, asset_id: str) -> Any:
    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data), formats=[PIL_FORMATS[info.content_type]])
        image = ImageOps.exif_transpose(image)  # phone photos: the pixels the way the camera meant them
        image = image.convert(spec.mode)
    image.info["aigc_asset_id"] = asset_id
    return image


def _decode_audio(spec: AssetSpec, data: bytes, asset_id: str) -> AudioData:
    import numpy as np
    import soundfile

    waveform, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    if spec.mono:
        waveform = waveform.mean(axis=1)
    if spec.sample_rate and rate != spec.sample_rate:
        from math import gcd

        from scipy.signal import resample_poly

        divisor = gcd(rate, spec.sample_rate)
        waveform = resample_poly(waveform, spec.sample_rate // divisor, rate // divisor, axis=0).astype(np.float32)
        rate = spec.sample_rate
    return AudioData(waveform=np.ascontiguousarray(waveform), sample_rate=int(rate), asset_id=asset_id)


def with_inputs(params: Any, decoded: dict[str, Any]) -> Any:
    """`params` with asset ids replaced by decoded inputs (validated, so a wrong kind is refused)."""
    specs = asset_fields(type(params))
    update = {name: specs[name].validate(value) for name, value in decoded.items()}
    return params.model_copy(update=update)
