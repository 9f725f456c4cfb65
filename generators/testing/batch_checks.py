"""The contract kit's checks of what a batched pass and the engine capability must keep per job.

`generate_batch` items are separate jobs, often of different tenants: each keeps its own params, its own seed
(a random stream of its own) and its own cancellation, and nothing of the batch shows in its result. A plugin
whose `create_runner()` returns a step runner must serve two jobs at once through a real StepEngine, each with
its own result, and its token events (if any) must spell out the final text.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from generators.base import BatchItem, GenerationResult, Generator, LocalContext
from generators.errors import GeneratorError, ParamsInvalid
from generators.testing.checks import CPU, output_problems, params_with_inputs
from hardware import DeviceChoice

ENGINE_TIMEOUT_S = 300
RUNNER_METHODS = ("prepare", "footprint", "kv_bytes_per_token", "step")


# --- companions: other jobs that may share the sample's pass ---------------------------------------------------


def _text_variants(value: str) -> list[str]:
    rotated = value[1:] + value[0]
    return [v for v in (value[::-1], rotated, value + value[-1], value[:-1]) if v and v != value]


def _free_text(cls: type[Generator], name: str) -> bool:
    """The field takes any text: no pattern, enum or constant in its JSON Schema (Optional variants included)."""
    field = cls.Params.model_json_schema().get("properties", {}).get(name, {})
    variants = [field, *field.get("anyOf", []), *field.get("allOf", [])]
    return not any(key in variant for variant in variants for key in ("pattern", "enum", "const"))


def companion_params(
    plugin: Generator, sample_params: dict[str, Any], count: int, sample_inputs: dict[str, bytes] | None = None
) -> list[BaseModel]:
    """`count` params that differ from the sample (another seed, other text where the schema allows) but have its
    `batch_key`, so a real pass could hold them together. A field that cannot change without changing the key or
    breaking validation keeps the sample's value."""
    cls = type(plugin)
    key = plugin.batch_key(params_with_inputs(cls, sample_params, sample_inputs))
    companions = []
    for n in range(count):
        raw = copy.deepcopy(sample_params)
        changes: list[dict[str, Any]] = []
        if "seed" in cls.Params.model_fields:
            base = raw.get("seed") if isinstance(raw.get("seed"), int) else 0
            changes.append({"seed": [base + 7919 * (n + 1), base + n + 1, max(0, base - n - 1)]})
        for name, value in sample_params.items():
            # Free text only (a prompt, a script): a string the schema constrains by a pattern is a code (a
            # language, a format) a plugin may accept by schema and refuse at run time, failing the companion for
            # the wrong reason.
            if isinstance(value, str) and value and name not in (sample_inputs or {}) and _free_text(cls, name):
                variants = _text_variants(value)
                changes.append(
                    {name: variants[n % len(variants) :] + variants[: n % len(variants)]} if variants else {}
                )
        for change in changes:
            for name, candidates in change.items():
                for candidate in candidates:
                    trial = raw | {name: candidate}
                    try:
                        params = params_with_inputs(cls, trial, sample_inputs)
                    except ParamsInvalid:
                        continue
                    if plugin.batch_key(params) == key:
                        raw = trial
                        break
        companions.append(params_with_inputs(cls, raw, sample_inputs))
    return companions


def seeded_sample(cls: type[Generator], sample_params: dict[str, Any]) -> dict[str, Any]:
    """The sample with a seed (its own, or 1 where it has none)."""
    if sample_params.get("seed") is not None:
        return copy.deepcopy(sample_params)
    return copy.deepcopy(sample_params) | {"seed": 1}


def same_output(a: GenerationResult, b: GenerationResult) -> bool:
    return (a.text, a.data, [f.data for f in a.files]) == (b.text, b.data, [f.data for f in b.files])


def _describe(outcome: object) -> str:
    if isinstance(outcome, GeneratorError):
        return f"failed with {outcome.code}: {outcome.message}"
    return f"returned {type(outcome).__name__}"


def _run_batch(plugin: Generator, items: list[BatchItem]) -> tuple[list[Any] | None, list[str]]:
    try:
        results = plugin.generate_batch(items)
    except GeneratorError as exc:
        return None, [
            f"`generate_batch` raised {type(exc).__name__} ({exc.code}) for the whole batch: return one result or "
            "GeneratorError per item, so one item's failure or cancel ends that item alone"
        ]
    if not isinstance(results, list) or len(results) != len(items):
        return None, [f"`generate_batch` of {len(items)} items must return a list of {len(items)} results"]
    return results, []


def _metadata_views(batched: GenerationResult, alone: GenerationResult, again: GenerationResult) -> list[tuple]:
    """(where, batched, alone, alone again) for the result's metadata and each file's."""
    views = [("metadata", batched.metadata, alone.metadata, again.metadata)]
    for i, (a, b, c) in enumerate(zip(batched.files, alone.files, again.files, strict=False)):
        views.append((f"files[{i}].metadata", a.metadata, b.metadata, c.metadata))
    return views


# --- checks ----------------------------------------------------------------------------------------------------


def batch_cancellation_problems(
    plugin: Generator,
    sample_params: dict[str, Any],
    device: DeviceChoice = CPU,
    sample_inputs: dict[str, bytes] | None = None,
) -> list[str]:
    """Item 2 of 3 is cancelled after its first progress report: it ends cancelled, items 1 and 3 succeed."""
    cls = type(plugin)
    first, third = companion_params(plugin, sample_params, 2, sample_inputs)
    cancelled_ctx = LocalContext(device, cancel_after=1)
    contexts = [LocalContext(device), cancelled_ctx, LocalContext(device)]
    params = [first, params_with_inputs(cls, sample_params, sample_inputs), third]
    results, problems = _run_batch(plugin, [BatchItem(p, c) for p, c in zip(params, contexts, strict=True)])
    if results is None:
        return problems
    middle = results[1]
    if isinstance(middle, GenerationResult):
        if not cancelled_ctx.reports:
            problems.append("`generate_batch` reported no progress for item 2, so it never looked for its cancel")
        else:
            problems.append(
                "`generate_batch` finished item 2 although it was cancelled after its first progress report: check "
                "each item's ctx.cancelled() after each step and return JobCancelled for that item alone"
            )
    elif not (isinstance(middle, GeneratorError) and middle.code == "cancelled"):
        problems.append(f"cancelled item 2 {_describe(middle)}; return JobCancelled for it")
    for i in (0, 2):
        if not isinstance(results[i], GenerationResult):
            problems.append(
                f"item {i + 1} {_describe(results[i])} when only item 2 was cancelled: one item's cancel must not "
                "stop the others"
            )
        else:
            problems += [f"item {i + 1}: {p}" for p in output_problems(cls, results[i])]
    return problems


def batch_seed_problems(
    plugin: Generator,
    sample_params: dict[str, Any],
    device: DeviceChoice = CPU,
    sample_inputs: dict[str, bytes] | None = None,
) -> list[str]:
    """A seeded item gives the output it gives alone while its companions have other seeds and params, and its
    result shows nothing of the batch."""
    cls = type(plugin)
    if "seed" not in cls.Params.model_fields:
        return []
    seeded = params_with_inputs(cls, seeded_sample(cls, sample_params), sample_inputs)
    alone = plugin.generate(seeded, LocalContext(device))
    again = plugin.generate(seeded, LocalContext(device))
    if not same_output(alone, again):
        return [f"the same seeded params (seed {seeded.seed}) gave two different outputs alone: seed every random draw"]
    first, third = companion_params(plugin, seeded_sample(cls, sample_params), 2, sample_inputs)
    items = [BatchItem(p, LocalContext(device)) for p in (first, seeded, third)]
    results, problems = _run_batch(plugin, items)
    if results is None:
        return problems
    batched = results[1]
    if not isinstance(batched, GenerationResult):
        return [f"seeded item 2 {_describe(batched)} in a batch of 3"]
    if not same_output(alone, batched):
        problems.append(
            f"item 2 (seed {seeded.seed}) gave another output in a batch than alone: give each item its own random "
            "generator seeded from its own seed (a torch.Generator per row), never one stream for the batch"
        )
    for where, seen, lone, repeat in _metadata_views(batched, alone, again):
        steady = {k for k in lone if lone.get(k) == repeat.get(k)}  # not a timing or the like
        differs = sorted(set(seen) - set(lone)) + sorted(k for k in steady if seen.get(k) != lone.get(k))
        if differs:
            problems.append(
                f"item 2's `{where}` differs from its lone run at {differs}: a tenant must not see whether or with "
                "whom a job was batched (no batch size, nothing of another job)"
            )
    return problems


def engine_problems(
    plugin: Generator,
    sample_params: dict[str, Any],
    device: DeviceChoice = CPU,
    sample_inputs: dict[str, bytes] | None = None,
) -> list[str]:
    """If `create_runner()` returns a runner: two jobs through a real StepEngine each get their own result (the
    lone result, where seeded), and each job's token events concatenate to its text."""
    from generators.engine.loop import StepEngine
    from generators.engine.sequence import Output, Sequence

    cls = type(plugin)
    try:
        runner = plugin.create_runner()
    except Exception as exc:  # noqa: BLE001 - report whatever the plugin raises
        return [f"`create_runner()` raised {type(exc).__name__}: {exc}; return a runner or None"]
    if runner is None:
        return []
    missing = [m for m in RUNNER_METHODS if not callable(getattr(runner, m, None))]
    if missing:
        return [f"the runner from `create_runner()` lacks {missing}: implement the StepRunner protocol"]
    per_token = runner.kv_bytes_per_token()
    if not isinstance(per_token, int) or per_token <= 0:
        return [f"`kv_bytes_per_token()` returned {per_token!r}; give the positive bytes one cached token takes"]
    raw = seeded_sample(cls, sample_params) if "seed" in cls.Params.model_fields else sample_params
    jobs = [params_with_inputs(cls, raw, sample_inputs), *companion_params(plugin, raw, 1, sample_inputs)]
    outputs: list[Output] = []
    engine = StepEngine(runner, budget_tokens=1 << 22, max_rows=8, emit=outputs.extend, name="contract-kit")
    try:
        # Both jobs reach the engine's inbox before its thread looks, so they join at the same step: a fast runner
        # could otherwise finish the first before the second arrives, and the check would prove nothing.
        with engine._wake:  # noqa: SLF001 - the inbox lock (re-entrant): submit waits on it, the loop takes it
            seqs = [engine.submit(Sequence(id=f"job-{i}", params=p, tenant=f"t{i}")) for i, p in enumerate(jobs)]
        results = [s.future.result(timeout=ENGINE_TIMEOUT_S) for s in seqs]
    except TimeoutError:
        return [f"two jobs through a StepEngine over the runner did not finish in {ENGINE_TIMEOUT_S} s"]
    finally:
        engine.stop()
    problems: list[str] = []
    for i, (seq, params, result) in enumerate(zip(seqs, jobs, results, strict=True)):
        if not isinstance(result, GenerationResult):
            problems.append(f"engine job {i + 1} {_describe(result)}; the runner must finish each job it prepares")
            continue
        problems += [f"engine job {i + 1}: {p}" for p in output_problems(cls, result)]
        tokens = sorted(o.token for o in outputs if o.seq is seq and o.token is not None)
        if tokens:
            if [index for index, _ in tokens] != list(range(len(tokens))):
                problems.append(f"engine job {i + 1}: token events are not numbered 0, 1, 2…: {[t[0] for t in tokens]}")
            if "".join(text for _, text in tokens) != result.text:
                problems.append(
                    f"engine job {i + 1}: its token events concatenate to {''.join(t for _, t in tokens)!r}, not to "
                    f"its text {result.text!r}; a streaming client must see exactly the final text"
                )
        if getattr(params, "seed", None) is not None:
            alone = plugin.generate(params, LocalContext(device))
            if not same_output(alone, result):
                problems.append(
                    f"engine job {i + 1} (seed {params.seed}) served beside another job gave another output than "
                    "alone: each row needs its own seeded generator and must not see the other rows"
                )
    if len(results) == 2 and results[0] is results[1]:
        problems.append("both engine jobs got the same result object: each job needs its own result")
    return problems
