"""Batched text-to-image for the `diffusers-image` plugin: compatible jobs run as one pipeline call.

Jobs are compatible when their `batch_key` is equal: text-to-image at the same size, steps, sampler and guidance,
all with or all without a negative prompt. Each job keeps its own prompt, negative prompt, seed and number of
images; every image gets its own `torch.Generator` (diffusers takes a list, one per image), so the initial noise
(and the noise of ancestral samplers) of one job never comes from another's stream, seeded or not.

Why a seeded image is bit-identical alone and batched on the CPU — and what that needs. The noise is the easy
part: with one generator per image, diffusers draws each image's latents from its own generator. What broke
identity was arithmetic: PyTorch's CPU kernels split their work across threads differently for a batch of one
than for a larger batch (oneDNN convolutions and MKL matrix products run multi-threaded inside one sample when
there is only one; GroupNorm on the channels-last tensors the VAE's attention leaves switches algorithm by
batch size), so sums are added in another order and pixels move by ~1e-6 — enough to flip a PNG byte now and
then. On one 2-core CPU per-row results were identical for every batch of two or more; on another (an AVX-512
EPYC) a pixel moved between a UNet batch of eight rows and one of two. So, on the CPU:
- the VAE decodes one image at a time (its `enable_slicing`, set in `setup`): alone or batched, each image's
  decode is the same one-image computation;
- the UNet computes each job's rows on their own (`_unet_per_job`), in a lone run's order: the pipeline call,
  its scheduler steps, text encoding and decode are shared, the arithmetic is the lone run's;
- a job that would run the UNet at a batch of one (guidance <= 1 and one image) is not batched on the CPU
  (`batch_key` None): a batch of one takes other kernels than any batch;
- each job's prompt is encoded on its own, exactly as a lone call encodes it (`_prompt_inputs`): the text
  encoder's output for one prompt moved by ~6e-8 with the number of prompts encoded together for about a third
  of the tiny test models we built, enough to flip a pixel now and then.
Identity rests on equal shapes giving equal arithmetic, which PyTorch's CPU kernels do; the tests check it on
each build of the tiny model.
On CUDA and MPS each job keeps its own noise exactly, but cuDNN/cuBLAS pick kernels by batch shape, so a batched
image may differ from the lone run by floating-point rounding (typically a pixel level here and there).

A job cancelled mid-call stops reporting progress and ends as JobCancelled while the others finish. Its rows
leave the running call at the next step where the pipeline allows it (`can_drop_rows`: the plain Stable
Diffusion loop with a sampler that keeps no state across steps); elsewhere (DPM++ keeps past outputs of the
whole batch, other pipelines carry more per-row tensors) they ride along to the end and are not encoded. If
every job of a call is cancelled, the call is interrupted at once.
Nothing of the batch (its size, the other jobs) reaches a job's metadata: each result is built by the same
`ImageGenerator.finish` as a lone run.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from generators.base import BatchItem, GenerationResult
from generators.errors import GeneratorError, JobCancelled
from hardware import DeviceChoice
from hardware.oom import is_oom

if TYPE_CHECKING:
    from generators.image_diffusers import ImageGenerator, ImageParams

# Output pixels one pipeline call may hold: four 512x512 images. A pass of `max_batch_size` jobs that asks for
# more is split into several calls, so a batch never needs much more memory than the largest job alone.
BATCH_PIXELS = 4 * 512 * 512
# Pipelines whose denoising loop this module knows: each job's prompt is encoded on its own, as alone, and the
# rows of a cancelled job may leave the running call.
KNOWN_PIPELINES = {"StableDiffusionPipeline"}
STATELESS_SCHEDULERS = {"EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DDIMScheduler"}


def job_seeds(params: ImageParams) -> tuple[int, list[int], list[Any]]:
    """The job's seed (a fresh random one if unset), one per image, and one CPU generator per image."""
    import torch

    seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
    seeds = [(seed + i) % 2**32 for i in range(params.num_images)]
    # CPU generators give the same noise on every device, so a seed reproduces across workers.
    return seed, seeds, [torch.Generator(device="cpu").manual_seed(s) for s in seeds]


def batch_key(params: ImageParams, device: DeviceChoice | None) -> tuple | None:
    """Equal keys may share a pipeline call; None: this job runs alone."""
    if params.mode != "text-to-image" or device is None or device.low_memory:
        return None  # edits and upscaling run alone; low-memory devices have no room for a batch
    if device.kind == "cpu" and params.guidance_scale <= 1.0 and params.num_images == 1:
        return None  # alone, its UNet batch would be one: not bit-identical to a batched run (module doc)
    width, height = params.width or 512, params.height or 512
    return ("text-to-image", width, height, params.steps, params.scheduler, params.guidance_scale,
            params.negative_prompt is not None)  # fmt: skip


def generate_batch(plugin: ImageGenerator, items: Sequence[BatchItem]) -> list[GenerationResult | GeneratorError]:
    """One result per item, in order. Items with equal keys run together, in calls of at most BATCH_PIXELS."""
    results: dict[int, GenerationResult | GeneratorError] = {}
    groups: dict[Any, list[int]] = {}
    for index, item in enumerate(items):
        key = batch_key(item.params, plugin.device)
        if key is None or item.ctx.cancelled():
            results[index] = _alone(plugin, item)
        else:
            groups.setdefault(key, []).append(index)
    for indices in groups.values():
        for call in _calls(items, indices):
            results.update(zip(call, _run_call(plugin, [items[i] for i in call]), strict=True))
    return [results[i] for i in range(len(items))]


def _alone(plugin: ImageGenerator, item: BatchItem) -> GenerationResult | GeneratorError:
    try:
        return plugin.generate(item.params, item.ctx)
    except GeneratorError as exc:
        return exc


def _calls(items: Sequence[BatchItem], indices: list[int]) -> list[list[int]]:
    """Consecutive runs of items whose output pixels fit BATCH_PIXELS (a bigger job runs in a call of its own)."""
    calls: list[list[int]] = []
    used = 0
    for index in indices:
        params = items[index].params
        pixels = params.num_images * (params.width or 512) * (params.height or 512)
        if calls and used + pixels <= BATCH_PIXELS:
            calls[-1].append(index)
            used += pixels
        else:
            calls.append([index])
            used = pixels
    return calls


def can_drop_rows(pipe: Any) -> bool:
    """Whether rows may leave this pipeline's running call: the plain Stable Diffusion loop keeps per-row state
    only in `latents`, `prompt_embeds` and the generator list, and these samplers keep none of their own (a
    multistep sampler such as DPM++ holds past outputs of the whole batch)."""
    unet_config = getattr(getattr(pipe, "unet", None), "config", None)
    return (
        type(pipe).__name__ in KNOWN_PIPELINES
        and type(pipe.scheduler).__name__ in STATELESS_SCHEDULERS
        and getattr(unet_config, "time_cond_proj_dim", None) is None
    )


def _run_call(plugin: ImageGenerator, items: list[BatchItem]) -> list[GenerationResult | GeneratorError]:
    """One pipeline call for these compatible jobs; each job's images, seeds and record are its own."""
    import torch

    if len(items) == 1:
        return [_alone(plugin, items[0])]
    first: ImageParams = items[0].params
    jobs = [job_seeds(item.params) for item in items]
    prompts = [item.params.prompt for item in items for _ in range(item.params.num_images)]
    negatives = (
        None
        if first.negative_prompt is None
        else [item.params.negative_prompt for item in items for _ in range(item.params.num_images)]
    )
    # The pipeline keeps this very list: rows leave it in place, so the ancestral samplers' noise for each
    # remaining row still comes from that row's own generator.
    generators = [g for _, _, job_generators in jobs for g in job_generators]
    owner = [i for i, item in enumerate(items) for _ in range(item.params.num_images)]  # job of each running row
    stopped = [False] * len(items)
    pipe = plugin.pipe
    pipe.scheduler = plugin.scheduler_for(first.scheduler)
    droppable = can_drop_rows(pipe)

    def on_step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        total = getattr(pipeline, "num_timesteps", None) or first.steps
        for i, item in enumerate(items):
            if not stopped[i] and not item.ctx.cancelled():
                item.ctx.progress(0.95 * (step + 1) / total, f"step {step + 1}/{total}")
            stopped[i] = stopped[i] or item.ctx.cancelled()  # as alone: a cancel seen here ends the job's steps
        if all(stopped):
            pipeline._interrupt = True  # nobody wants the rest: diffusers skips the remaining steps
        elif droppable and any(stopped[job] for job in owner):
            return _drop_rows(pipeline, callback_kwargs, owner, stopped, generators)
        return callback_kwargs

    width, height = first.width or 512, first.height or 512
    per_job = plugin.device is not None and plugin.device.kind == "cpu"
    try:
        with torch.inference_mode(), _unet_per_job(pipe, owner, enabled=per_job):
            inputs = _prompt_inputs(pipe, items, prompts, negatives)
            output = pipe(
                **inputs,
                width=width,
                height=height,
                num_inference_steps=first.steps,
                guidance_scale=first.guidance_scale,
                num_images_per_prompt=1,
                generator=generators,
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"] if droppable else ["latents"],
            )
    except Exception as exc:
        if not is_oom(exc):
            raise
        del exc
        return _one_by_one_after_oom(plugin, items)
    from generators.image_diffusers import nsfw_flags

    flags = nsfw_flags(output)
    results: list[GenerationResult | GeneratorError] = []
    for i, (item, (seed, seeds, _)) in enumerate(zip(items, jobs, strict=True)):
        if stopped[i]:
            results.append(JobCancelled("the job was cancelled during denoising"))
            continue
        rows = [r for r, job in enumerate(owner) if job == i]
        details = {"width": width, "height": height, "scheduler_class": type(pipe.scheduler).__name__}
        details["nsfw"] = [flags[r] for r in rows]
        try:
            results.append(plugin.finish(item.params, item.ctx, [output.images[r] for r in rows], details, seed, seeds))
        except GeneratorError as exc:  # JobCancelled from `finish`: this job alone
            results.append(exc)
    return results


@contextmanager
def _unet_per_job(pipe: Any, owner: list[int], *, enabled: bool) -> Iterator[None]:
    """On the CPU, the UNet's forward over the call's rows computes each job's rows on their own, in the order a
    lone run gives them ([its unconditional rows, its conditional rows] under guidance), so each job's numbers are
    those of its lone run: the CPU kernels add in another order for another batch size (module doc), and across
    CPUs no batch size is safe (on an AVX-512 EPYC a pixel moved between a batch of 8 and one of 2). The module is
    still called once per step with every row (its hooks see the whole batch); a forward whose rows do not map to
    `owner`, or that carries other per-row inputs, runs whole."""
    if not enabled:
        yield
        return
    import torch

    unet = pipe.unet
    whole = unet.forward

    def forward(sample: Any, timestep: Any, encoder_hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        rows = len(owner)
        guided = sample.shape[0] == 2 * rows
        extra = args or any(kwargs.get(k) is not None for k in ("class_labels", "timestep_cond", "attention_mask",
                                                                "added_cond_kwargs", "down_block_additional_residuals",
                                                                "mid_block_additional_residual"))  # fmt: skip
        if extra or not (guided or sample.shape[0] == rows) or len(set(owner)) == 1:
            return whole(sample, timestep, encoder_hidden_states, *args, **kwargs)
        outputs, order = [], []
        for job in dict.fromkeys(owner):
            mine = [r for r, o in enumerate(owner) if o == job]
            picked = mine + [rows + r for r in mine] if guided else mine
            index = torch.tensor(picked, device=sample.device)
            t = timestep.index_select(0, index) if torch.is_tensor(timestep) and timestep.ndim else timestep
            out = whole(sample.index_select(0, index), t, encoder_hidden_states.index_select(0, index), **kwargs)
            outputs.append(out[0] if isinstance(out, tuple) else out.sample)
            order.extend(picked)
        merged = torch.empty_like(torch.cat(outputs))
        merged[torch.tensor(order, device=sample.device)] = torch.cat(outputs)
        if kwargs.get("return_dict", True):
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=merged)
        return (merged,)

    unet.forward = forward
    try:
        yield
    finally:
        del unet.forward  # the class's forward again


def _prompt_inputs(
    pipe: Any, items: list[BatchItem], prompts: list[str], negatives: list[str] | None
) -> dict[str, Any]:
    """The call's prompt arguments. Where the pipeline is one we know, each job's prompt is encoded on its own with
    the pipeline's own `encode_prompt` and the arguments a lone call uses, so its embeddings are the lone ones bit
    for bit (the text encoder's output for a prompt can move by ~1e-7 with the number of prompts encoded
    together); elsewhere the pipeline encodes the list itself."""
    import torch

    if type(pipe).__name__ not in KNOWN_PIPELINES:
        return {"prompt": prompts, "negative_prompt": negatives}
    first = items[0].params
    guided = first.guidance_scale > 1 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None
    device = pipe._execution_device
    pairs = [
        pipe.encode_prompt(item.params.prompt, device, item.params.num_images, guided, item.params.negative_prompt)
        for item in items
    ]
    return {
        "prompt_embeds": torch.cat([positive for positive, _ in pairs]),
        "negative_prompt_embeds": torch.cat([negative for _, negative in pairs]) if guided else None,
    }


def _drop_rows(
    pipeline: Any, tensors: dict[str, Any], owner: list[int], stopped: list[bool], generators: list[Any]
) -> dict[str, Any]:
    """The cancelled jobs' rows leave the running call: fewer rows for the remaining steps and the decode."""
    import torch

    keep = [row for row, job in enumerate(owner) if not stopped[job]]
    index = torch.tensor(keep, device=tensors["latents"].device)
    embeds, rows = tensors["prompt_embeds"], len(owner)
    if pipeline.do_classifier_free_guidance:  # [negatives of every row, then positives]
        embeds = torch.cat([embeds[:rows].index_select(0, index), embeds[rows:].index_select(0, index)])
    else:
        embeds = embeds.index_select(0, index)
    generators[:] = [generators[row] for row in keep]
    owner[:] = [owner[row] for row in keep]
    return {"latents": tensors["latents"].index_select(0, index), "prompt_embeds": embeds}


def _one_by_one_after_oom(plugin: ImageGenerator, items: list[BatchItem]) -> list[GenerationResult | GeneratorError]:
    """The batch did not fit: each job runs alone and fails (with OutOfMemory) only if it does not fit alone."""
    from hardware.memory import release_device_memory

    release_device_memory(plugin.device.device if plugin.device else "cpu")
    return [_alone(plugin, item) for item in items]  # each raises OutOfMemory only if it does not fit alone
