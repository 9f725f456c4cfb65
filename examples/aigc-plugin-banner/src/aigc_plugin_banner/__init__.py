"""Marketing banners and placeholder images drawn with Pillow: an aigc-saas generator plugin with no weights."""

from __future__ import annotations

import hashlib
import hmac
import io
import random
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from generators.base import GenerationContext, GenerationResult, Generator, GeneratorConfig, Modality, OutputFile
from generators.errors import JobCancelled, ModelLoadFailed
from hardware import DeviceChoice, HardwareNeeds

__version__ = "1.2.0"

PALETTES: dict[str, tuple[str, str, str]] = {  # top colour, bottom colour, accent
    "sunrise": ("#ff7e5f", "#feb47b", "#fff3e0"),
    "ocean": ("#0f2027", "#2c5364", "#8fd3fe"),
    "forest": ("#134e5e", "#71b280", "#e8f5e9"),
    "slate": ("#232526", "#414345", "#f5f5f5"),
    "candy": ("#d53369", "#daae51", "#fffde7"),
}
FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}


class BannerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    headline: str = Field(min_length=1, max_length=80, description="The large line of text.")
    subtitle: str | None = Field(default=None, max_length=160, description="A smaller line under the headline.")
    width: int = Field(default=1200, ge=64, le=2048, description="Banner width in pixels.")
    height: int = Field(default=628, ge=64, le=2048, description="Banner height in pixels.")
    palette: Literal["sunrise", "ocean", "forest", "slate", "candy"] = Field(
        default="sunrise", description="Background gradient and text colours."
    )
    format: Literal["png", "jpeg", "webp"] = Field(default="png", description="Image file format.")
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**32 - 1,
        description="Places the decorative shapes; the same seed gives the same banner.",
    )


class BannerConfig(GeneratorConfig):
    model_id: str = Field(
        default="pillow-banner/v1", description="Drawing style recorded with each job (no weights are loaded)."
    )
    font_path: str | None = Field(default=None, max_length=500, description="A TTF/OTF brand font; blank: Pillow's.")
    watermark: str | None = Field(default=None, max_length=40, description="Small text in the bottom-right corner.")
    signing_key: SecretStr | None = Field(
        default=None, description="When set, each file's HMAC-SHA256 is recorded as its `signature`."
    )


class BannerGenerator(Generator):
    """Marketing banners and placeholder images with a headline, drawn with Pillow (no model weights)."""

    name = "pillow-banner"
    modality = Modality.IMAGE
    Params = BannerParams
    Config = BannerConfig
    needs = HardwareNeeds(devices=("cpu",), dtypes=("float32",), memory_mb=64)
    config: BannerConfig

    def setup(self, device: DeviceChoice) -> None:
        from PIL import ImageFont  # Pillow is light, but the habit is the same: load in setup

        super().setup(device)
        self.image_font = ImageFont
        if self.config.font_path:
            try:
                ImageFont.truetype(self.config.font_path, 12)
            except OSError as exc:
                raise ModelLoadFailed(f"`font_path`: cannot load font {self.config.font_path!r}: {exc}") from exc

    def font(self, size: int):  # noqa: ANN201
        if self.config.font_path:
            return self.image_font.truetype(self.config.font_path, size)
        return self.image_font.load_default(size=size)

    def fitted_font(self, draw, text: str, size: int, max_width: int):  # noqa: ANN001, ANN201
        """The largest font up to `size` at which `text` fits in `max_width` pixels."""
        while size > 8:
            font = self.font(size)
            left, _, right, _ = draw.textbbox((0, 0), text, font=font)
            if right - left <= max_width:
                return font
            size = int(size * 0.9)
        return self.font(8)

    def generate(self, params: BannerParams, ctx: GenerationContext) -> GenerationResult:
        from PIL import Image, ImageColor, ImageDraw

        seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
        top, bottom, accent = (ImageColor.getrgb(c) for c in PALETTES[params.palette])
        image = Image.new("RGB", (params.width, params.height))
        draw = ImageDraw.Draw(image, "RGBA")

        bands = 16
        for band in range(bands):  # the gradient, a band at a time, so progress and cancel are timely
            for y in range(band * params.height // bands, (band + 1) * params.height // bands):
                t = y / max(params.height - 1, 1)
                draw.line(
                    [(0, y), (params.width, y)],
                    fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
                )
            ctx.progress(0.7 * (band + 1) / bands, f"background {band + 1}/{bands}")
            if ctx.cancelled():
                raise JobCancelled("the job was cancelled while drawing the background")

        rng = random.Random(seed)
        for _ in range(6):
            radius = rng.randint(params.height // 10, params.height // 3)
            x, y = rng.randint(0, params.width), rng.randint(0, params.height)
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(*accent, 40))
        ctx.progress(0.8, "shapes")
        ctx.raise_if_cancelled()

        margin = params.width // 12
        headline_font = self.fitted_font(draw, params.headline, params.height // 5, params.width - 2 * margin)
        center_y = params.height // 2 if not params.subtitle else int(params.height * 0.42)
        draw.text((params.width // 2, center_y), params.headline, font=headline_font, fill=accent, anchor="mm")
        if params.subtitle:
            font = self.fitted_font(draw, params.subtitle, params.height // 12, params.width - 2 * margin)
            draw.text(
                (params.width // 2, int(params.height * 0.66)), params.subtitle, font=font, fill=accent, anchor="mm"
            )
        if self.config.watermark:
            font = self.font(max(params.height // 30, 8))
            corner = (params.width - margin // 2, params.height - margin // 4)
            draw.text(corner, self.config.watermark, font=font, fill=(*accent, 160), anchor="rd")
        ctx.progress(0.9, "text")

        pil_format, content_type = FORMATS[params.format]
        buffer = io.BytesIO()
        image.save(buffer, format=pil_format)
        data = buffer.getvalue()
        metadata = {
            "model_id": self.config.model_id,
            "device": ctx.device.device,
            "dtype": ctx.device.dtype,
            "seed": seed,
            "width": params.width,
            "height": params.height,
            "palette": params.palette,
            "plugin_version": __version__,
        }
        if self.config.signing_key is not None:
            key = self.config.signing_key.get_secret_value().encode()
            metadata["signature"] = hmac.new(key, data, hashlib.sha256).hexdigest()
        ctx.progress(1.0, f"encoded as {params.format}")
        filename = f"banner-{seed}.{params.format}"
        return GenerationResult(
            files=[OutputFile(filename=filename, content_type=content_type, data=data, metadata=metadata)],
            metadata=metadata,
        )
