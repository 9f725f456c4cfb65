"""The slot runner (kv_layout="slots") against the left-padded frame runner, on a tiny Llama on the CPU.

Each job's keys and values live in a fixed slot of one preallocated cache. What users rely on: the same text as
the frame runner and as the job alone, whatever slot it lands in and whoever ran in that slot before; jobs that
join, leave and are cancelled at any step; and a clear refusal for a job that can never fit a slot.

Every test that uses `slots` runs in each decode mode: sampling on the host from the step's logits (the CPU's
default), sampling inside the decode step, and that plus the look-ahead step (the CUDA defaults, run eagerly here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from generators.base import BatchItem, GenerationResult, LocalContext
from generators.engine.causal_lm import CausalLMRunner
from generators.engine.loop import StepEngine
from generators.engine.sequence import Sequence
from generators.engine.slots import SlotRunner
from generators.errors import GeneratorError, JobCancelled
from generators.testing.batch_checks import batch_cancellation_problems, batch_seed_problems, engine_problems
from generators.text_transformers import TextGenerator
from hardware import DeviceChoice
from tests.engine.recording import Recorder

CPU = DeviceChoice(device="cpu", dtype="float32")

# Prompts of 4 to 63 tokens: the longest one with its new tokens needs a wider attention window than the narrowest.
PROMPTS = [
    "a",
    "Write a short product description for a handmade ceramic mug.",
    "bakery slogan",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Explain photosynthesis",
]


def _plugin(path: Path, layout: str) -> TextGenerator:
    generator = TextGenerator(TextGenerator.Config(model_id=str(path), kv_layout=layout))
    generator.setup(CPU)
    return generator


@pytest.fixture(scope="module")
def frame(tiny_models: dict[str, Path]) -> TextGenerator:
    """The reference: the left-padded frame runner."""
    return _plugin(tiny_models["transformers-text"], "frame")


class SlotText(TextGenerator):
    """The text plugin with kv_layout="slots" whose runners decode in a chosen mode."""

    fused = False  # sample inside the decode step
    look_ahead = False  # and start the next step before this one is booked

    def create_runner(self) -> Any:
        runner = super().create_runner()
        runner.fused, runner.look_ahead = self.fused, self.look_ahead
        return runner


MODES = {"host-sampling": (False, False), "fused-sampling": (True, False), "look-ahead": (True, True)}


@pytest.fixture(scope="module", params=list(MODES))
def slots(tiny_models: dict[str, Path], request: pytest.FixtureRequest) -> TextGenerator:
    generator = SlotText(SlotText.Config(model_id=str(tiny_models["transformers-text"]), kv_layout="slots"))
    generator.fused, generator.look_ahead = MODES[request.param]
    generator.setup(CPU)
    return generator


def greedy(plugin: TextGenerator, prompt: str, max_new_tokens: int) -> Any:
    return plugin.validate_params({"prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": 0})


def alone(plugin: TextGenerator, params: Any) -> GenerationResult:
    return plugin.generate(params, LocalContext(CPU))


@contextmanager
def serving(plugin: TextGenerator, *, budget: int, rows: int) -> Iterator[tuple[StepEngine, SlotRunner, Recorder]]:
    runner = plugin.create_runner()
    assert isinstance(runner, SlotRunner)
    recorder = Recorder()
    engine = StepEngine(runner, budget_tokens=budget, max_rows=rows, emit=recorder, name="slots-test")
    try:
        yield engine, runner, recorder
    finally:
        engine.stop()


def submit_together(engine: StepEngine, params: list[Any]) -> list[Sequence]:
    """Every job reaches the inbox before the engine thread looks, so the slots they get are deterministic."""
    with engine._wake:  # noqa: SLF001 - the inbox lock (re-entrant), as the contract kit takes it
        return [engine.submit(Sequence(id=f"job-{i}", params=p, tenant=f"t{i}")) for i, p in enumerate(params)]


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.002)


def summary(result: object) -> tuple[str, int, str]:
    assert isinstance(result, GenerationResult), result
    return result.text, result.metadata["completion_tokens"], result.metadata["finish_reason"]


# --- the runner the configuration picks ---------------------------------------------------------------------------


def test_the_kv_layout_picks_the_runner(frame, tiny_models) -> None:  # noqa: ANN001
    runner = _plugin(tiny_models["transformers-text"], "slots").create_runner()
    assert isinstance(runner, SlotRunner) and not (runner.graphs or runner.fused or runner.look_ahead)  # eager
    assert type(frame.create_runner()) is CausalLMRunner
    auto = _plugin(tiny_models["transformers-text"], "auto")
    assert type(auto.create_runner()) is CausalLMRunner  # slots on CUDA only


# --- the direct path: generate / generate_batch ------------------------------------------------------------------


def test_greedy_batches_give_the_frame_runners_text_whatever_slot_a_job_lands_in(frame, slots) -> None:  # noqa: ANN001
    lengths = [30, 7, 50, 19, 1]
    params = [greedy(frame, p, n) for p, n in zip(PROMPTS, lengths, strict=True)]
    expected = [summary(r) for r in frame.generate_batch([BatchItem(p, LocalContext(CPU)) for p in params])]
    assert len({text for text, _, _ in expected}) == len(params)  # the prompts lead to different texts
    assert [n for _, n, _ in expected] == lengths

    batched = slots.generate_batch([BatchItem(p, LocalContext(CPU)) for p in params])
    assert [summary(r) for r in batched] == expected
    # Again in reverse: every job in another slot, over what the previous pass left in the cache.
    reversed_ = slots.generate_batch([BatchItem(p, LocalContext(CPU)) for p in reversed(params)])
    assert [summary(r) for r in reversed(reversed_)] == expected


def test_a_seeded_job_samples_the_same_text_alone_and_in_a_slot_batch(frame, slots) -> None:  # noqa: ANN001
    seeded = slots.validate_params(
        {"prompt": "a bakery slogan", "seed": 7, "max_new_tokens": 30, "temperature": 0.9, "top_p": 0.9}
    )
    lone = summary(alone(slots, seeded))
    assert lone == summary(alone(frame, seeded))
    assert lone[0] != alone(slots, greedy(slots, "a bakery slogan", 30)).text  # it did sample
    others = [
        slots.validate_params({"prompt": PROMPTS[3], "seed": 1, "max_new_tokens": 45, "temperature": 1.2}),
        greedy(slots, "Explain photosynthesis", 12),
        slots.validate_params({"prompt": "x", "max_new_tokens": 20, "top_p": 0.5}),
    ]
    items = [BatchItem(p, LocalContext(CPU)) for p in (others[0], others[1], seeded, others[2])]
    results = slots.generate_batch(items)
    assert summary(results[2]) == lone
    assert [summary(r)[1] for r in results] == [45, 12, 30, 20]


# --- the step engine over few slots ------------------------------------------------------------------------------


def test_more_jobs_than_slots_all_get_their_lone_text_through_reused_slots(frame, slots) -> None:  # noqa: ANN001
    # Two slots, five jobs: job 1 ends first and job 2 takes slot 1; job 0 ends next and job 3 takes slot 0 while
    # job 2 still runs (the rows are then in another order than their slots); job 4 takes slot 1 after job 2. Each
    # lands over what a longer job left in its slot.
    lengths = [40, 10, 45, 20, 15]
    params = [greedy(slots, p, n) for p, n in zip(PROMPTS, lengths, strict=True)]
    for i, seed in ((2, 11), (4, 5)):  # seeded sampling beside greedy rows
        params[i] = params[i].model_copy(update={"temperature": 0.8, "top_p": 0.9, "seed": seed})
    expected = [summary(alone(frame, p)) for p in params]
    with serving(slots, budget=100_000, rows=2) as (engine, runner, _):
        assert runner.slots == 2 and engine.stats()["kv_budget_tokens"] == 2 * runner.row_tokens
        jobs = submit_together(engine, params)
        peak, deadline = 0, time.monotonic() + 60
        while not all(s.future.done() for s in jobs) and time.monotonic() < deadline:
            peak = max(peak, engine.stats()["running"])
            time.sleep(0.001)
        results = [summary(s.future.result()) for s in jobs]
    assert results == expected
    assert [r[2] for r in results] == ["length"] * 5, "a job ended early: the slots did not turn over as planned"
    assert 1 <= peak <= 2


def test_a_job_submitted_mid_run_joins_a_free_slot_before_the_running_job_ends(frame, slots) -> None:  # noqa: ANN001
    long_params, short_params = greedy(slots, PROMPTS[1], 150), greedy(slots, "bakery slogan", 6)
    expected_long, expected_short = summary(alone(frame, long_params)), summary(alone(frame, short_params))
    with serving(slots, budget=100_000, rows=2) as (engine, _, recorder):
        long_job = engine.submit(Sequence(id="long", params=long_params, tenant="a"))
        wait_for(lambda: len(recorder.tokens(long_job)) >= 2)
        steps_before = engine.steps_total
        short_job = engine.submit(Sequence(id="short", params=short_params, tenant="b"))
        short_result = summary(short_job.future.result(30))
        assert not long_job.future.done(), "the short job waited for the long one"
        assert engine.steps_total - steps_before < 150 - 2
        long_result = summary(long_job.future.result(60))
        assert recorder.outcome_at(short_job) < recorder.outcome_at(long_job)
    assert short_result == expected_short
    assert long_result == expected_long  # a row joining and leaving beside it did not disturb it


def test_a_cancelled_job_stops_and_its_slot_serves_a_waiting_one(frame, slots) -> None:  # noqa: ANN001
    params = [greedy(slots, PROMPTS[3], 150), greedy(slots, PROMPTS[1], 150), greedy(slots, "bakery slogan", 20)]
    expected = [summary(alone(frame, params[1])), summary(alone(frame, params[2]))]
    with serving(slots, budget=100_000, rows=2) as (engine, _, recorder):
        # Two run and the third waits. It takes slot 0 when the job there is cancelled, beside the row in slot 1.
        cancelled, first, waiting = submit_together(engine, params)
        wait_for(lambda: len(recorder.tokens(cancelled)) >= 3)
        assert not waiting.future.done() and not recorder.tokens(waiting)
        cancelled.cancel()
        assert isinstance(cancelled.future.result(30), JobCancelled)
        results = [summary(first.future.result(60)), summary(waiting.future.result(60))]
        assert recorder.outcome_at(waiting) < recorder.outcome_at(first)  # it took the cancelled job's slot
        emitted = "".join(text for _, text in recorder.tokens(cancelled))
    assert results == expected
    assert len(emitted) < len(alone(frame, params[0]).text)  # it stopped where it was cancelled


def test_a_json_job_joining_and_leaving_mid_run_keeps_both_outputs(frame, slots) -> None:  # noqa: ANN001
    # A row with a grammar is decoded from host-side logits: the fused and look-ahead steps pause while it runs.
    plain = greedy(slots, PROMPTS[1], 100)
    constrained = slots.validate_params(
        {"prompt": "bakery slogan", "seed": 1, "max_new_tokens": 60, "response_format": {"type": "json_object"}}
    )
    expected_plain, expected_json = summary(alone(frame, plain)), summary(alone(frame, constrained))
    assert expected_json[0].startswith("{") and expected_json[1] > 10 and expected_json[2] == "stop", expected_json
    with serving(slots, budget=100_000, rows=2) as (engine, _, recorder):
        plain_job = engine.submit(Sequence(id="plain", params=plain, tenant="a"))
        wait_for(lambda: len(recorder.tokens(plain_job)) >= 2)
        json_job = engine.submit(Sequence(id="json", params=constrained, tenant="b"))
        results = [summary(json_job.future.result(30)), summary(plain_job.future.result(60))]
        assert recorder.outcome_at(json_job) < recorder.outcome_at(plain_job)  # it ran beside the plain job
    assert results == [expected_json, expected_plain]


def test_reserve_sizes_the_slots_from_the_budget_and_shrinks_a_slot_to_a_small_budget(slots) -> None:  # noqa: ANN001
    runner = slots.create_runner()
    row = runner.row_tokens
    assert row == 2048  # the tiny model's position limit, under max_input_tokens + MAX_NEW_TOKENS
    assert runner.reserve(3 * row + 5, 2) == 2 * row and (runner.slots, runner.row_tokens) == (2, row)
    runner = slots.create_runner()
    assert runner.reserve(5 * row, 64) == 5 * row and runner.slots == 5
    runner = slots.create_runner()
    assert runner.reserve(100, 8) == 100 and (runner.slots, runner.row_tokens) == (1, 100)


def test_a_job_over_its_slot_is_refused_and_the_engine_serves_the_next(frame, slots) -> None:  # noqa: ANN001
    with serving(slots, budget=100, rows=4) as (engine, runner, _):
        assert (runner.slots, runner.row_tokens) == (1, 100)
        stats = engine.stats()
        assert (stats["kv_budget_tokens"], stats["kv_row_tokens"]) == (100, 100)
        probe = Sequence(id="probe", params=greedy(slots, "bakery slogan", 1))
        runner.prepare(probe)
        prompt_tokens = probe.cost - 1
        over = greedy(slots, "bakery slogan", 100 - prompt_tokens + 1)
        exact = greedy(slots, "bakery slogan", 100 - prompt_tokens)  # fills its slot to the last position
        small = greedy(slots, "Explain photosynthesis", 9)
        jobs = submit_together(engine, [over, exact, small])
        refused, *served = [s.future.result(60) for s in jobs]
    assert isinstance(refused, GeneratorError) and refused.code == "context_exceeds_kv_budget"
    assert [summary(r) for r in served] == [summary(alone(frame, exact)), summary(alone(frame, small))]
    assert summary(served[0])[1:] == (100 - prompt_tokens, "length")


# --- the contract kit --------------------------------------------------------------------------------------------


def test_the_contract_kit_finds_no_problem_with_slots(slots) -> None:  # noqa: ANN001
    sample = {"prompt": "Write a slogan for a bakery", "max_new_tokens": 6, "seed": 7}
    assert batch_cancellation_problems(slots, sample, CPU) == []
    assert batch_seed_problems(slots, sample, CPU) == []
    assert engine_problems(slots, sample, CPU) == []


# --- the plugin's direct passes --------------------------------------------------------------------------------------


def test_a_direct_batch_larger_than_the_slots_runs_its_items_as_slots_free_up(frame, tiny_models, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("AIGC_KV_BUDGET_MB_CPU", "1")  # the tiny model's 2,048-position slots: two fit
    plugin = _plugin(tiny_models["transformers-text"], "slots")
    assert plugin.create_runner().free_rows() == 2
    params = [greedy(plugin, prompt, 6 + 5 * i) for i, prompt in enumerate(PROMPTS)]
    results = plugin.generate_batch([BatchItem(p, LocalContext(CPU)) for p in params])
    assert [summary(r) for r in results] == [summary(alone(frame, p)) for p in params]


def test_a_direct_job_is_checked_against_the_slot_the_budget_gives(tiny_models, monkeypatch) -> None:  # noqa: ANN001
    import hardware.kv

    monkeypatch.setattr(hardware.kv, "kv_budget_tokens", lambda device, per_token: 100)  # one slot of 100
    plugin = _plugin(tiny_models["transformers-text"], "slots")
    too_long, fits = greedy(plugin, "bakery", 150), greedy(plugin, "bakery", 20)
    results = plugin.generate_batch([BatchItem(too_long, LocalContext(CPU)), BatchItem(fits, LocalContext(CPU))])
    assert isinstance(results[0], GeneratorError) and results[0].code == "context_exceeds_kv_budget"
    assert isinstance(results[1], GenerationResult) and results[1].metadata["completion_tokens"] == 20
