"""The step engine in a process of its own (generators/engine/process.py), driven through its pipe: outputs come back
as the in-process engine's would, a cancel reaches the child, and a child that dies fails its jobs instead of
leaving them waiting."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from generators.base import LocalContext
from generators.engine.process import ProcessEngine
from generators.engine.sequence import Sequence
from generators.errors import GeneratorError, JobCancelled
from generators.text_transformers import TextGenerator
from hardware import DeviceChoice
from hardware.kv import kv_budget_tokens
from tests.engine.recording import Recorder

CPU = DeviceChoice(device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def config(tiny_models: dict[str, Path]) -> TextGenerator.Config:
    return TextGenerator.Config(model_id=str(tiny_models["transformers-text"]))


def start(config: TextGenerator.Config, recorder: Recorder) -> ProcessEngine:
    return ProcessEngine(TextGenerator, config, CPU, max_rows=64, budget=kv_budget_tokens, emit=recorder, name="test")


def job(name: str, **params: object) -> Sequence:
    values = {"prompt": name, "max_new_tokens": 24, "temperature": 0.8, **params}
    return Sequence(id=name, params=TextGenerator.validate_params(values), tenant="t")


def test_jobs_run_in_the_child_as_in_this_process(config) -> None:  # noqa: ANN001
    alone = TextGenerator(config)
    alone.setup(CPU)
    expected = alone.generate(
        TextGenerator.validate_params({"prompt": "a seeded slogan", "seed": 11, "max_new_tokens": 20}),
        LocalContext(CPU),
    ).text
    recorder = Recorder()
    engine = start(config, recorder)
    try:
        assert engine.model_bytes > 0 and engine.stats()["kv_budget_tokens"] > 0
        others = [engine.submit(job(f"other {i} " * (i + 1), top_p=0.6 + i / 10)) for i in range(4)]
        seeded = engine.submit(job("a seeded slogan", seed=11, max_new_tokens=20, temperature=0.7))
        results = [s.future.result(60) for s in [*others, seeded]]
        assert results[-1].text == expected  # its own generator in the child, whatever ran beside it
        for seq, result in zip([*others, seeded], results, strict=True):
            tokens = recorder.tokens(seq)
            assert [index for index, _ in tokens] == list(range(len(tokens)))
            assert "".join(text for _, text in tokens) == result.text
        assert engine.stats()["items_total"] >= 4  # the child's counters come back with the outcomes
    finally:
        engine.stop()
    assert engine.stopped


def test_a_cancel_reaches_the_child_and_the_others_finish(config) -> None:  # noqa: ANN001
    engine = start(config, Recorder())
    try:
        jobs = [engine.submit(job(f"long {i}", max_new_tokens=400)) for i in range(3)]
        time.sleep(0.3)
        jobs[1].cancel()  # as the worker's cancel broadcast does: the flag, nothing else
        outcomes = [s.future.result(120) for s in jobs]
        assert isinstance(outcomes[1], JobCancelled)
        assert [o.metadata["completion_tokens"] for o in (outcomes[0], outcomes[2])] == [400, 400]
    finally:
        engine.stop()


def test_a_child_that_dies_fails_its_jobs_and_the_engine_says_it_stopped(config) -> None:  # noqa: ANN001
    engine = start(config, Recorder())
    running = engine.submit(job("never ends", max_new_tokens=2000))
    time.sleep(0.3)
    os.kill(engine._process.pid, signal.SIGKILL)
    outcome = running.future.result(30)
    assert isinstance(outcome, GeneratorError) and outcome.code == "engine_stopped"
    assert engine.stopped  # engine_host.served loads the plugin afresh on the next job
    with pytest.raises(RuntimeError):
        engine.submit(job("too late"))
    engine.stop()


def test_a_plugin_that_cannot_load_raises_its_own_error_here(tmp_path: Path) -> None:
    """The child loads the plugin: a model that is not there fails the job with the plugin's code, as a load in
    the worker itself would."""
    config = TextGenerator.Config(model_id=str(tmp_path / "no-such-model"))
    with pytest.raises(GeneratorError) as raised:
        start(config, Recorder())
    assert raised.value.code == "model_load_failed", raised.value
