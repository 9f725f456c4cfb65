"""The step engine over the real text runner (tiny Llama on the CPU): continuous batching, per-job settings."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from generators.base import BatchItem, LocalContext
from generators.engine.loop import StepEngine
from generators.engine.sequence import Sequence
from generators.errors import GeneratorError, JobCancelled
from generators.text_transformers import TextGenerator
from hardware import DeviceChoice
from tests.engine.recording import Recorder

CPU = DeviceChoice(device="cpu", dtype="float32")  # these tests pin the CPU: they measure the runner's logic


@pytest.fixture(scope="module")
def plugin(tiny_models: dict[str, Path]) -> TextGenerator:
    generator = TextGenerator(TextGenerator.Config(model_id=str(tiny_models["transformers-text"])))
    generator.setup(CPU)
    return generator


def engine(plugin: TextGenerator, recorder: Recorder, budget: int = 100_000, rows: int = 64) -> StepEngine:
    return StepEngine(plugin.create_runner(), budget_tokens=budget, max_rows=rows, emit=recorder, name="test")


def job(plugin: TextGenerator, prompt: str, tenant: str = "t", **params: object) -> Sequence:
    values = {"prompt": prompt, "max_new_tokens": 24, "temperature": 0.8, **params}
    return Sequence(id=prompt, params=plugin.validate_params(values), tenant=tenant)


def test_token_events_concatenate_to_the_result_text(plugin) -> None:  # noqa: ANN001
    recorder = Recorder()
    served = engine(plugin, recorder)
    jobs = [served.submit(job(plugin, f"prompt {i} " * (i + 1))) for i in range(5)]
    results = [s.future.result(60) for s in jobs]
    served.stop()
    for seq, result in zip(jobs, results, strict=True):
        tokens = recorder.tokens(seq)
        assert [index for index, _ in tokens] == list(range(len(tokens)))
        assert "".join(text for _, text in tokens) == result.text
        assert result.metadata["completion_tokens"] == 24 and result.metadata["finish_reason"] == "length"


def test_a_seeded_job_gives_the_same_text_alone_and_in_a_batch_with_different_settings(plugin) -> None:  # noqa: ANN001
    alone = plugin.generate(
        plugin.validate_params({"prompt": "a bakery slogan", "seed": 7, "max_new_tokens": 30}), LocalContext(CPU)
    ).text
    recorder = Recorder()
    served = engine(plugin, recorder)
    others = [served.submit(job(plugin, f"noise {i} " * (3 * i + 1), top_p=0.5 + i / 10)) for i in range(4)]
    seeded = served.submit(job(plugin, "a bakery slogan", seed=7, max_new_tokens=30, temperature=0.7))
    more = [served.submit(job(plugin, "greedy one", temperature=0))]
    assert seeded.future.result(60).text == alone
    for s in others + more:
        assert not isinstance(s.future.result(60), GeneratorError)
    served.stop()


def test_a_job_submitted_mid_batch_joins_before_the_batch_ends(plugin) -> None:  # noqa: ANN001
    recorder = Recorder()
    served = engine(plugin, recorder)
    long_jobs = [served.submit(job(plugin, f"long {i}", max_new_tokens=400)) for i in range(4)]
    while not recorder.tokens(long_jobs[0]):
        time.sleep(0.005)
    short = served.submit(job(plugin, "short", max_new_tokens=4))
    short_result = short.future.result(60)
    assert not any(s.future.done() for s in long_jobs), "the short job waited for the long batch"
    assert short_result.metadata["completion_tokens"] == 4
    for s in long_jobs:
        assert s.future.result(120).metadata["completion_tokens"] == 400
    served.stop()


def test_a_cancelled_job_leaves_at_the_next_step_while_the_others_finish(plugin) -> None:  # noqa: ANN001
    recorder = Recorder()
    served = engine(plugin, recorder)
    jobs = [served.submit(job(plugin, f"p{i}", max_new_tokens=300)) for i in range(3)]
    while len(recorder.tokens(jobs[1])) < 3:
        time.sleep(0.005)
    jobs[1].cancel()
    assert isinstance(jobs[1].future.result(30), JobCancelled)
    assert len(recorder.tokens(jobs[1])) < 300
    assert [jobs[i].future.result(120).metadata["completion_tokens"] for i in (0, 2)] == [300, 300]
    served.stop()


def test_stop_strings_end_a_job_and_never_reach_its_text(plugin) -> None:  # noqa: ANN001
    free = plugin.generate(
        plugin.validate_params({"prompt": "abc", "seed": 3, "max_new_tokens": 40}), LocalContext(CPU)
    )
    stop = free.text[10:13]
    stopped = plugin.generate(
        plugin.validate_params({"prompt": "abc", "seed": 3, "max_new_tokens": 40, "stop": [stop]}), LocalContext(CPU)
    )
    assert stopped.text == free.text[: free.text.index(stop)]
    assert stopped.metadata["finish_reason"] == "stop"


def test_the_kv_budget_bounds_the_running_batch_and_refuses_a_job_that_can_never_fit(plugin) -> None:  # noqa: ANN001
    recorder = Recorder()
    served = engine(plugin, recorder, budget=200)
    too_big = served.submit(job(plugin, "x", max_new_tokens=250))
    outcome = too_big.future.result(30)
    assert isinstance(outcome, GeneratorError) and outcome.code == "context_exceeds_kv_budget"
    jobs = [served.submit(job(plugin, f"j{i}", max_new_tokens=60)) for i in range(6)]
    peak = 0
    while not all(s.future.done() for s in jobs):
        peak = max(peak, served.stats()["running"])
        assert served.stats()["kv_used_tokens"] <= 200
        time.sleep(0.002)
    assert 1 <= peak < 6
    served.stop()


def test_generate_batch_gives_each_item_its_own_settings_and_cancellation(plugin) -> None:  # noqa: ANN001
    items = [
        BatchItem(plugin.validate_params({"prompt": "one", "max_new_tokens": 5, "temperature": 0}), LocalContext(CPU)),
        BatchItem(plugin.validate_params({"prompt": "two", "max_new_tokens": 9}), LocalContext(CPU, cancel_after=2)),
        BatchItem(plugin.validate_params({"prompt": "three", "max_new_tokens": 12, "seed": 1}), LocalContext(CPU)),
    ]
    results = plugin.generate_batch(items)
    assert results[0].metadata["completion_tokens"] == 5
    assert isinstance(results[1], JobCancelled)
    assert results[2].metadata["completion_tokens"] == 12
    assert "batch_size" not in results[0].metadata  # nothing of one job's run tells about the others


def test_a_pass_engine_batches_the_jobs_that_arrived_during_a_pass(tiny_models) -> None:  # noqa: ANN001
    from pydantic import BaseModel

    from generators.base import GenerationResult, Generator, GeneratorConfig, Modality
    from generators.engine.loop import PassEngine

    class PromptParams(BaseModel):
        prompt: str

    release = threading.Event()
    passes: list[list[str]] = []

    class Batching(Generator):
        name, modality, Params, Config, max_batch_size = "batching", Modality.TEXT, PromptParams, GeneratorConfig, 4

        def batch_key(self, params):  # noqa: ANN001, ANN201
            return len(params.prompt)

        def generate(self, params, ctx):  # noqa: ANN001, ANN201
            release.wait(10)
            passes.append([params.prompt])
            return GenerationResult(text=params.prompt)

        def generate_batch(self, items):  # noqa: ANN001, ANN201
            passes.append([item.params.prompt for item in items])
            return [GenerationResult(text=item.params.prompt) for item in items]

    served = PassEngine(Batching(GeneratorConfig(model_id="x")), emit=Recorder(), name="pass")
    first = served.submit(Sequence(id="0", params=PromptParams(prompt="first"), tenant="a"))
    time.sleep(0.2)  # the first pass is running
    later = [
        served.submit(Sequence(id=p, params=PromptParams(prompt=p), tenant=t))
        for p, t in (("aa", "a"), ("bb", "b"), ("ccc", "a"), ("dd", "c"))
    ]
    release.set()
    assert [s.future.result(10).text for s in [first, *later]] == ["first", "aa", "bb", "ccc", "dd"]
    served.stop()
    assert passes == [["first"], ["aa", "bb", "dd"], ["ccc"]]


def test_a_failed_step_fails_its_rows_with_a_code_and_the_engine_serves_the_next_jobs(plugin) -> None:  # noqa: ANN001
    recorder = Recorder()
    runner = plugin.create_runner()
    served = StepEngine(runner, budget_tokens=100_000, max_rows=8, emit=recorder, name="test")
    real_forward, calls = runner._forward, []

    def failing_forward(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes")
        return real_forward(*args, **kwargs)

    runner._forward = failing_forward
    doomed = served.submit(job(plugin, "doomed", max_new_tokens=50))
    outcome = doomed.future.result(30)
    assert isinstance(outcome, GeneratorError) and outcome.code == "out_of_memory"
    after = served.submit(job(plugin, "after", max_new_tokens=5))
    assert after.future.result(30).metadata["completion_tokens"] == 5
    served.stop()


class CallRecorder(Recorder):
    """A Recorder that also keeps each emit call's outputs together."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list] = []

    def __call__(self, outputs: list) -> None:
        with self.lock:
            self.calls.append(list(outputs))
        super().__call__(outputs)


def test_with_an_emit_linger_first_tokens_and_outcomes_go_out_at_once_and_the_rest_together(plugin) -> None:  # noqa: ANN001
    """An engine process holds the outputs of successive steps (one pipe message for several): a job's first token
    must still go out the step it is made, an outcome with everything held before it, and nothing may be lost."""
    recorder = CallRecorder()
    served = StepEngine(
        plugin.create_runner(), budget_tokens=100_000, max_rows=8, emit=recorder, name="test", emit_linger=30.0
    )
    first = served.submit(job(plugin, "a long one", max_new_tokens=60))
    deadline = time.monotonic() + 30
    while not recorder.tokens(first):
        assert time.monotonic() < deadline, "the first token was held"
        time.sleep(0.002)
    assert recorder.tokens(first) == [recorder.tokens(first)[0]] and recorder.tokens(first)[0][0] == 0
    second = served.submit(job(plugin, "joins later", max_new_tokens=8))
    while not recorder.tokens(second):  # its first token is not held behind the first job's lingering tokens
        assert not first.future.done(), "the joining job's first token was held until the other job ended"
        time.sleep(0.002)
    results = {seq: seq.future.result(60) for seq in (first, second)}
    served.stop()
    for seq, result in results.items():
        tokens = recorder.tokens(seq)
        assert [index for index, _ in tokens] == list(range(len(tokens)))
        assert "".join(text for _, text in tokens) == result.text  # nothing held was lost
        outcome_call = next(i for i, call in enumerate(recorder.calls) if any(o.seq is seq and o.outcome for o in call))
        # Every token after the first was held at least until a flush; none came after the outcome.
        assert all(o.seq is not seq for call in recorder.calls[outcome_call + 1 :] for o in call)
    # 60 steps made far fewer emits than steps: held outputs went out together.
    assert len(recorder.calls) < 20, [len(c) for c in recorder.calls]


def test_the_engine_counts_its_prefill_steps_and_the_time_between_steps(plugin) -> None:  # noqa: ANN001
    """What an operator reads to tell decode from prefill and the step from the loop around it (aigc_engine_*)."""
    recorder = Recorder()
    served = engine(plugin, recorder)
    first = served.submit(job(plugin, "first", max_new_tokens=60))
    while len(recorder.tokens(first)) < 5:
        time.sleep(0.002)
    second = served.submit(job(plugin, "second", max_new_tokens=10))  # joins the running batch: a second prefill
    for seq in (first, second):
        assert not isinstance(seq.future.result(60), GeneratorError)
    stats = served.stats()
    served.stop()
    assert stats["prefill_steps_total"] == 2  # one step prefilled each job; every other step only decoded
    assert stats["steps_total"] == 60  # the first job's 60 tokens: the second ran inside those steps
    assert 0 < stats["prefill_step_seconds_total"] < stats["step_seconds_total"]
    # From each step's start to the next: the 59 steps that another followed, and whatever ran between them.
    assert stats["loop_seconds_total"] >= stats["step_seconds_total"] * 59 / 60 * 0.9
    assert 0 < stats["emit_seconds_total"] < stats["loop_seconds_total"]
