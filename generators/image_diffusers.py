"""Built-in image generator: a diffusers text-to-image pipeline, with the generation record inside each PNG."""

from __future__ import annotations

import io
import json
import os
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from generators.base import GenerationContext, GenerationResult, Generator, GeneratorConfig, Modality, OutputFile
from generators.errors import JobCancelled, ModelLoadFailed, OutOfMemory
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


class ImageParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        min_length=1, max_length=2000, description="What to draw. CLIP-based models read the first 77 tokens."
    )
    negative_prompt: str | None = Field(default=None, max_length=2000, description="What to steer away from.")
    width: int = Field(default=512, ge=64, le=2048, multiple_of=8, description="Image width in pixels (multiple of 8).")
    height: int = Field(
        default=512, ge=64, le=2048, multiple_of=8, description="Image height in pixels (multiple of 8)."
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

    @field_validator("height")
    @classmethod
    def _pixel_cap(cls, height: int, info: ValidationInfo) -> int:
        width = info.data.get("width")
        if width is not None and width * height > MAX_PIXELS:
            raise ValueError(
                f"`width` x `height` is {width}x{height} = {width * height} pixels, over the limit of {MAX_PIXELS}"
            )
        return height


class ImageConfig(GeneratorConfig):
    model_id: str = Field(
        default_factory=lambda: os.environ.get("AIGC_MODEL_DIFFUSERS_IMAGE", DEFAULT_MODEL),
        description="Diffusers text-to-image pipeline id or path (env AIGC_MODEL_DIFFUSERS_IMAGE).",
    )
    variant: str | None = Field(
        default=None, description="Weights variant to load, e.g. `fp16`, where the model has one."
    )


class ImageGenerator(Generator):
    """Images from a prompt with a diffusers text-to-image pipeline, as PNG with the generation record embedded."""

    name = "diffusers-image"
    modality = Modality.IMAGE
    Params = ImageParams
    Config = ImageConfig
    needs = HardwareNeeds(devices=("cuda", "mps", "cpu"), dtypes=("float16", "bfloat16", "float32"), memory_mb=3000)
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
            if device.low_memory:
                # The library's own memory savers: attention and VAE in slices, and on CUDA one component
                # on the GPU at a time instead of the whole pipeline.
                pipe.enable_attention_slicing()
                vae = getattr(pipe, "vae", None)
                if vae is not None and hasattr(vae, "enable_slicing"):
                    vae.enable_slicing()
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

    def scheduler_for(self, name: str) -> Any:
        """The pipeline's scheduler for `name`, built once from the model's own scheduler config."""
        if name not in self.schedulers:
            import diffusers

            class_name, overrides = SCHEDULERS[name]
            base = self.schedulers["default"].config
            self.schedulers[name] = getattr(diffusers, class_name).from_config(base, **overrides)
        return self.schedulers[name]

    def generate(self, params: ImageParams, ctx: GenerationContext) -> GenerationResult:
        import torch

        ctx.raise_if_cancelled()
        pipe = self.pipe
        pipe.scheduler = self.scheduler_for(params.scheduler)
        seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
        seeds = [(seed + i) % 2**32 for i in range(params.num_images)]
        # CPU generators give the same noise on every device, so a seed reproduces across workers.
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]

        def on_step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            total = getattr(pipeline, "num_timesteps", None) or params.steps
            ctx.progress(0.95 * (step + 1) / total, f"step {step + 1}/{total}")
            if ctx.cancelled():
                pipeline._interrupt = True  # diffusers skips the remaining steps
            return callback_kwargs

        try:
            with torch.inference_mode():
                output = pipe(
                    prompt=params.prompt,
                    negative_prompt=params.negative_prompt,
                    width=params.width,
                    height=params.height,
                    num_inference_steps=params.steps,
                    guidance_scale=params.guidance_scale,
                    num_images_per_prompt=params.num_images,
                    generator=generators,
                    callback_on_step_end=on_step_end,
                )
        except Exception as exc:
            if is_oom(exc):
                raise OutOfMemory(
                    f"`{ctx.device.device}` ran out of memory making {params.num_images} image(s) of "
                    f"{params.width}x{params.height}; lower `num_images`, `width` or `height`"
                ) from exc
            raise
        if ctx.cancelled():
            raise JobCancelled("the job was cancelled during denoising")
        record = {
            "generator": self.name,
            "model_id": self.config.model_id,
            "revision": self.config.revision,
            "prompt": params.prompt,
            "negative_prompt": params.negative_prompt,
            "width": params.width,
            "height": params.height,
            "steps": params.steps,
            "guidance_scale": params.guidance_scale,
            "scheduler": params.scheduler,
            "scheduler_class": type(pipe.scheduler).__name__,
            "device": ctx.device.device,
            "dtype": ctx.device.dtype,
            "low_memory": ctx.device.low_memory,
        }
        nsfw = getattr(output, "nsfw_content_detected", None) or [None] * len(output.images)
        files = []
        for index, (image, image_seed, flagged) in enumerate(zip(output.images, seeds, nsfw, strict=False)):
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
