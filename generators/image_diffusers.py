"""Built-in image generator: a diffusers text-to-image pipeline, with the generation record inside each PNG."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from generators.assets import ImageInput, MaskInput, asset_id_of
from generators.base import (
    BatchItem,
    GenerationContext,
    GenerationResult,
    Generator,
    GeneratorConfig,
    Modality,
    OutputFile,
)
from generators.errors import GeneratorError, JobCancelled, ModelLoadFailed, OutOfMemory
from hardware import DeviceChoice, HardwareNeeds
from hardware.oom import is_oom

DEFAULT_MODEL = "nota-ai/bk-sdm-tiny"
MAX_PIXELS = 1024 * 1024

# Our names for the samplers a job may pick, and the diffusers class each one builds from the model's own config.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),
}
SchedulerName = Literal["default", "euler", "euler_a", "dpm++", "ddim"]
Mode = Literal["text-to-image", "image-to-image", "inpainting", "upscaling"]
DEFAULT_UPSCALERS = {2: "stabilityai/sd-x2-latent-upscaler", 4: "stabilityai/stable-diffusion-x4-upscaler"}
# Largest input each upscaler takes: its output is the input times the factor.
UPSCALE_MAX_INPUT_PIXELS = {2: 1024 * 1024, 4: 512 * 512}
DEFAULT_STRENGTH = {"image-to-image": 0.75, "inpainting": 1.0}


class ImageParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        min_length=1,
        max_length=2000,
        description="What to draw (for edits and upscaling: what the result shows). CLIP models read 77 tokens.",
    )
    negative_prompt: str | None = Field(default=None, max_length=2000, description="What to steer away from.")
    width: int | None = Field(
        default=None,
        ge=64,
        le=2048,
        multiple_of=8,
        description="Image width in pixels (multiple of 8). Text-to-image: 512 when unset. Image-to-image and "
        "inpainting: the input's width when unset (scaled down to fit 1 megapixel, keeping its aspect).",
    )
    height: int | None = Field(
        default=None, ge=64, le=2048, multiple_of=8, description="Image height in pixels, as `width`."
    )
    steps: int = Field(default=25, ge=1, le=100, description="Denoising steps: more is slower and usually finer.")
    guidance_scale: float = Field(
        default=7.5, ge=0.0, le=20.0, description="How strictly to follow the prompt; 0 for turbo/distilled models."
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**32 - 1, description="Fix for reproducible images; a random one is recorded if unset."
    )
    num_images: int = Field(default=1, ge=1, le=4, description="Images to make from the prompt (seeds seed, seed+1…).")
    scheduler: SchedulerName = Field(
        default="default", description="Sampler: the model's own (`default`), `euler`, `euler_a`, `dpm++` or `ddim`."
    )
    init_image: ImageInput | None = Field(
        default=None, description="Image-to-image: the asset (or artifact) id of the picture to start from."
    )
    image: ImageInput | None = Field(
        default=None,
        description="Inpainting (with `mask`) or upscaling (with `upscale`): the asset or artifact id of the picture.",
    )
    mask: MaskInput | None = Field(
        default=None, description="Inpainting: id of a mask the size of `image`; white is repainted, black is kept."
    )
    upscale: Literal[2, 4] | None = Field(
        default=None,
        validate_default=True,
        description="Upscale `image` 2x (latent upscaler) or 4x (x4 upscaler), guided by `prompt`.",
    )
    strength: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        validate_default=True,
        description="Image-to-image and inpainting: how much to change (1 = repaint fully). Default 0.75 for "
        "image-to-image, 1.0 for inpainting.",
    )

    @field_validator("height")
    @classmethod
    def _pixel_cap(cls, height: int | None, info: ValidationInfo) -> int | None:
        width = info.data.get("width")
        if width is not None and height is not None and width * height > MAX_PIXELS:
            raise ValueError(
                f"`width` x `height` is {width}x{height} = {width * height} pixels, over the limit of {MAX_PIXELS}"
            )
        return height

    @field_validator("image")
    @classmethod
    def _one_source(cls, image: Any, info: ValidationInfo) -> Any:
        if image is not None and info.data.get("init_image") is not None:
            raise ValueError("give `init_image` (image-to-image) or `image` (inpainting, upscaling), not both")
        return image

    @field_validator("mask")
    @classmethod
    def _mask_needs_image(cls, mask: Any, info: ValidationInfo) -> Any:
        if mask is not None and info.data.get("image") is None:
            raise ValueError("a `mask` needs the `image` it masks")
        return mask

    @field_validator("upscale")
    @classmethod
    def _upscale_alone(cls, upscale: int | None, info: ValidationInfo) -> int | None:
        data = info.data
        if upscale is None:
            if data.get("image") is not None and data.get("mask") is None:
                raise ValueError("with `image` give `mask` (inpainting) or `upscale` (2 or 4)")
            return upscale
        if data.get("image") is None:
            raise ValueError("`upscale` needs the `image` to upscale")
        if data.get("mask") is not None:
            raise ValueError("inpaint (`mask`) or upscale, not both in one job")
        clashing = [name for name in ("width", "height") if data.get(name) is not None]
        if data.get("num_images", 1) != 1:
            clashing.append("num_images")
        if data.get("scheduler", "default") != "default":
            clashing.append("scheduler")
        if clashing:
            raise ValueError(f"upscaling makes one image of the input's size x{upscale}; leave out {clashing}")
        return upscale

    @field_validator("strength")
    @classmethod
    def _strength_needs_an_edit(cls, strength: float | None, info: ValidationInfo) -> float | None:
        if strength is not None and info.data.get("init_image") is None and info.data.get("mask") is None:
            raise ValueError("`strength` applies to image-to-image (`init_image`) and inpainting (`mask`) only")
        return strength

    @property
    def mode(self) -> Mode:
        if self.init_image is not None:
            return "image-to-image"
        if self.mask is not None:
            return "inpainting"
        if self.upscale is not None:
            return "upscaling"
        return "text-to-image"


class ImageConfig(GeneratorConfig):
    model_id: str = Field(
        default_factory=lambda: os.environ.get("AIGC_MODEL_DIFFUSERS_IMAGE", DEFAULT_MODEL),
        description="Diffusers text-to-image pipeline id or path (env AIGC_MODEL_DIFFUSERS_IMAGE).",
    )
    variant: str | None = Field(
        default=None, description="Weights variant to load, e.g. `fp16`, where the model has one."
    )
    upscaler_x2_model_id: str = Field(
        default_factory=lambda: os.environ.get("AIGC_MODEL_DIFFUSERS_UPSCALE_X2", DEFAULT_UPSCALERS[2]),
        description="Latent x2 upscaler pipeline id or path, loaded on the first x2 job (env AIGC_MODEL_DIFFUSERS_UPSCALE_X2).",
    )
    upscaler_x4_model_id: str = Field(
        default_factory=lambda: os.environ.get("AIGC_MODEL_DIFFUSERS_UPSCALE_X4", DEFAULT_UPSCALERS[4]),
        description="x4 upscaler pipeline id or path, loaded on the first x4 job (env AIGC_MODEL_DIFFUSERS_UPSCALE_X4).",
    )


class ImageGenerator(Generator):
    """Images from a prompt with a diffusers text-to-image pipeline, as PNG with the generation record embedded."""

    name = "diffusers-image"
    modality = Modality.IMAGE
    Params = ImageParams
    Config = ImageConfig
    needs = HardwareNeeds(devices=("cuda", "mps", "cpu"), dtypes=("float16", "bfloat16", "float32"), memory_mb=3000)
    # Text-to-image jobs per pass; a pass is further split into pipeline calls of at most
    # image_batch.BATCH_PIXELS output pixels, so 4 jobs of 4 images at 1024x1024 never share one call.
    max_batch_size = 4
    config: ImageConfig

    def setup(self, device: DeviceChoice) -> None:
        import torch  # noqa: F401 - heavy imports live here, never at module level
        from diffusers import AutoPipelineForText2Image

        super().setup(device)
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(
                self.config.model_id,
                revision=self.config.revision,
                variant=self.config.variant,
                dtype=device.torch_dtype(),
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadFailed(f"could not load image model {self.config.model_id!r}: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        try:
            vae = getattr(pipe, "vae", None)
            # On CPU the VAE decodes one image at a time, so a batched image decodes exactly as alone
            # (generators/image_batch.py says why).
            if (device.low_memory or device.kind == "cpu") and hasattr(vae, "enable_slicing"):
                vae.enable_slicing()
            if device.low_memory:
                # The library's own memory savers: attention and VAE in slices, and on CUDA one component
                # on the GPU at a time instead of the whole pipeline.
                pipe.enable_attention_slicing()
            if device.low_memory and device.kind == "cuda":
                pipe.enable_model_cpu_offload(device=device.device)
            else:
                pipe.to(device.device)
        except Exception as exc:
            if is_oom(exc):
                raise OutOfMemory(f"`{device.device}` ran out of memory loading {self.config.model_id!r}") from exc
            raise
        self.pipe = pipe
        self.schedulers: dict[str, Any] = {"default": pipe.scheduler}
        self.editors: dict[str, Any] = {}  # image-to-image and inpainting pipelines sharing `pipe`'s weights
        self.upscalers: dict[int, Any] = {}  # loaded on the first job that asks for each factor

    def scheduler_for(self, name: str) -> Any:
        """The pipeline's scheduler for `name`, built once from the model's own scheduler config."""
        if name not in self.schedulers:
            import diffusers

            class_name, overrides = SCHEDULERS[name]
            base = self.schedulers["default"].config
            self.schedulers[name] = getattr(diffusers, class_name).from_config(base, **overrides)
        return self.schedulers[name]

    def editor(self, mode: Mode) -> Any:
        """The image-to-image or inpainting pipeline built from the loaded model's components (no new weights)."""
        if mode not in self.editors:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            auto = AutoPipelineForImage2Image if mode == "image-to-image" else AutoPipelineForInpainting
            editor = auto.from_pipe(self.pipe)
            editor.set_progress_bar_config(disable=True)
            self.editors[mode] = editor
        return self.editors[mode]

    def upscaler(self, factor: int) -> Any:
        if factor not in self.upscalers:
            from diffusers import StableDiffusionLatentUpscalePipeline, StableDiffusionUpscalePipeline

            model_id = self.config.upscaler_x2_model_id if factor == 2 else self.config.upscaler_x4_model_id
            cls = StableDiffusionLatentUpscalePipeline if factor == 2 else StableDiffusionUpscalePipeline
            device = self.device or DeviceChoice(device="cpu", dtype="float32")
            try:
                pipe = cls.from_pretrained(model_id, dtype=device.torch_dtype())
            except (OSError, ValueError) as exc:
                raise ModelLoadFailed(f"could not load the x{factor} upscaler {model_id!r}: {exc}") from exc
            pipe.set_progress_bar_config(disable=True)
            try:
                pipe.to(device.device)
            except Exception as exc:
                if is_oom(exc):
                    raise OutOfMemory(f"`{device.device}` ran out of memory loading {model_id!r}") from exc
                raise
            self.upscalers[factor] = pipe
        return self.upscalers[factor]

    def batch_key(self, params: ImageParams) -> tuple | None:
        from generators.image_batch import batch_key  # compatible text-to-image jobs share one pipeline call

        return batch_key(params, self.device)

    def generate_batch(self, items: Sequence[BatchItem]) -> list[GenerationResult | GeneratorError]:
        from generators.image_batch import generate_batch

        return generate_batch(self, items)

    def generate(self, params: ImageParams, ctx: GenerationContext) -> GenerationResult:
        import torch

        from generators.image_batch import job_seeds

        ctx.raise_if_cancelled()
        seed, seeds, generators = job_seeds(params)
        run = {
            "text-to-image": self._text_to_image,
            "image-to-image": self._edit,
            "inpainting": self._edit,
            "upscaling": self._upscale,
        }[params.mode]
        try:
            with torch.inference_mode():
                images, details = run(params, generators, ctx)
        except Exception as exc:
            if is_oom(exc):
                raise OutOfMemory(
                    f"`{ctx.device.device}` ran out of memory making {params.num_images} image(s) "
                    f"({params.mode}); lower `num_images` or the image size"
                ) from exc
            raise
        return self.finish(params, ctx, images, details, seed, seeds)

    def finish(
        self, params: ImageParams, ctx: GenerationContext, images: list, details: dict, seed: int, seeds: list[int]
    ) -> GenerationResult:
        """One job's PNGs and record from its images; the same whether the job ran alone or in a batch."""
        if ctx.cancelled():
            raise JobCancelled("the job was cancelled during denoising")
        nsfw = details.pop("nsfw")
        record = self._record(params, ctx) | details
        files = []
        for index, (image, image_seed, flagged) in enumerate(zip(images, seeds, nsfw, strict=False)):
            metadata = record | {"seed": image_seed, "index": index, "nsfw_content_detected": flagged}
            files.append(
                OutputFile(
                    filename=f"image-{index + 1}.png",
                    content_type="image/png",
                    data=png_with_record(image, metadata),
                    metadata=metadata,
                )
            )
        ctx.progress(1.0, f"{len(files)} image(s) encoded")
        return GenerationResult(files=files, metadata=record | {"seed": seed, "seeds": seeds})

    def _record(self, params: ImageParams, ctx: GenerationContext) -> dict[str, Any]:
        return {
            "generator": self.name,
            "mode": params.mode,
            "model_id": self.config.model_id,
            "revision": self.config.revision,
            "prompt": params.prompt,
            "negative_prompt": params.negative_prompt,
            "steps": params.steps,
            "guidance_scale": params.guidance_scale,
            "scheduler": params.scheduler,
            "device": ctx.device.device,
            "dtype": ctx.device.dtype,
            "low_memory": ctx.device.low_memory,
        }

    @staticmethod
    def _step_reporter(params: ImageParams, ctx: GenerationContext) -> Any:
        def on_step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            total = getattr(pipeline, "num_timesteps", None) or params.steps
            ctx.progress(0.95 * (step + 1) / total, f"step {step + 1}/{total}")
            if ctx.cancelled():
                pipeline._interrupt = True  # diffusers skips the remaining steps
            return callback_kwargs

        return on_step_end

    def _text_to_image(self, params: ImageParams, generators: list[Any], ctx: GenerationContext) -> tuple[list, dict]:
        pipe = self.pipe
        pipe.scheduler = self.scheduler_for(params.scheduler)
        width, height = params.width or 512, params.height or 512
        output = pipe(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            width=width,
            height=height,
            num_inference_steps=params.steps,
            guidance_scale=params.guidance_scale,
            num_images_per_prompt=params.num_images,
            generator=generators,
            callback_on_step_end=self._step_reporter(params, ctx),
        )
        details = {"width": width, "height": height, "scheduler_class": type(pipe.scheduler).__name__}
        return output.images, details | {"nsfw": nsfw_flags(output)}

    def _edit(self, params: ImageParams, generators: list[Any], ctx: GenerationContext) -> tuple[list, dict]:
        """Image-to-image (`init_image`) or inpainting (`image` + `mask`) at the output size the params ask for."""
        from PIL import Image

        mode = params.mode
        source = params.init_image if mode == "image-to-image" else params.image
        width, height = output_size(source.size, params.width, params.height)
        pipe = self.editor(mode)
        pipe.scheduler = self.scheduler_for(params.scheduler)
        strength = params.strength if params.strength is not None else DEFAULT_STRENGTH[mode]
        kwargs: dict[str, Any] = {"image": source.resize((width, height), Image.Resampling.LANCZOS)}
        if mode == "inpainting":
            kwargs |= {
                "mask_image": params.mask.resize((width, height), Image.Resampling.LANCZOS),
                "width": width,
                "height": height,
            }
        output = pipe(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            strength=strength,
            num_inference_steps=params.steps,
            guidance_scale=params.guidance_scale,
            num_images_per_prompt=params.num_images,
            generator=generators,
            callback_on_step_end=self._step_reporter(params, ctx),
            **kwargs,
        )
        inputs = {"init_image": _asset_id(params.init_image), "image": _asset_id(params.image)}
        details = {
            "width": width,
            "height": height,
            "strength": strength,
            "input_size": list(source.size),
            "inputs": {k: v for k, v in inputs.items() if v}
            | ({"mask": _asset_id(params.mask)} if params.mask else {}),
            "scheduler_class": type(pipe.scheduler).__name__,
        }
        return output.images, details | {"nsfw": nsfw_flags(output)}

    def _upscale(self, params: ImageParams, generators: list[Any], ctx: GenerationContext) -> tuple[list, dict]:
        factor = params.upscale
        source = params.image
        # Both upscalers work on sizes in multiples of 8; cropping at most 7 pixels keeps the output size exact.
        width, height = source.width - source.width % 8, source.height - source.height % 8
        if width < 8 or height < 8:
            raise GeneratorError(
                f"`params.image`: {source.width}x{source.height} is too small to upscale", code="image_too_small"
            )
        if width * height > UPSCALE_MAX_INPUT_PIXELS[factor]:
            raise GeneratorError(
                f"`params.image`: {width}x{height} is over the {UPSCALE_MAX_INPUT_PIXELS[factor]} pixels the x{factor} "
                "upscaler takes; resize it first (image-to-image with `width` and `height`)",
                code="image_too_large",
            )
        pipe = self.upscaler(factor)

        def on_step(step: int, timestep: Any, latents: Any) -> None:
            ctx.progress(0.95 * (step + 1) / params.steps, f"step {step + 1}/{params.steps}")
            if ctx.cancelled():
                raise JobCancelled("the job was cancelled during upscaling")  # these pipelines have no interrupt flag

        output = pipe(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            image=source.crop((0, 0, width, height)),
            num_inference_steps=params.steps,
            guidance_scale=params.guidance_scale,
            generator=generators[0],
            callback=on_step,
            callback_steps=1,
        )
        [image] = output.images
        model_id = self.config.upscaler_x2_model_id if factor == 2 else self.config.upscaler_x4_model_id
        details = {
            "width": image.width,
            "height": image.height,
            "upscale": factor,
            "upscaler_model_id": model_id,
            "input_size": list(source.size),
            "inputs": {"image": _asset_id(source)},
            "scheduler_class": type(pipe.scheduler).__name__,
        }
        return [image], details | {"nsfw": nsfw_flags(output)}


def output_size(source: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
    """The asked size; else the input's aspect kept, fitting MAX_PIXELS, in multiples of 8 (at least 64)."""
    src_w, src_h = source
    if width and height:
        return width, height
    if width:
        height = round(width * src_h / src_w)
    elif height:
        width = round(height * src_w / src_h)
    else:
        width, height = src_w, src_h
    scale = min(1.0, (MAX_PIXELS / (width * height)) ** 0.5, 2048 / width, 2048 / height)
    width, height = int(width * scale), int(height * scale)
    return max(64, width - width % 8), max(64, height - height % 8)


def _asset_id(value: Any) -> str | None:
    return asset_id_of(value) if value is not None else None


def nsfw_flags(output: Any) -> list[Any]:
    return list(getattr(output, "nsfw_content_detected", None) or [None] * len(output.images))


def png_with_record(image: Any, record: dict[str, Any]) -> bytes:
    """PNG bytes with each record field as a text chunk (iTXt where the value is not Latin-1) plus a JSON copy."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in record.items():
        if value is not None:
            info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    info.add_text("aigc_saas:record", json.dumps(record, ensure_ascii=False))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
