"""The kit catches each way a plugin breaks the contract, and its message says what to fix."""

from __future__ import annotations

import random
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from generators.base import (
    BatchItem,
    GenerationContext,
    GenerationResult,
    Generator,
    GeneratorConfig,
    LocalContext,
    Modality,
    OutputFile,
)
from generators.engine.sequence import Output
from generators.errors import GeneratorError, JobCancelled
from generators.testing.contract import (
    batch_cancellation_problems,
    batch_seed_problems,
    cancellation_problems,
    check_plugin,
    companion_params,
    engine_problems,
    import_problems,
    invalid_params_problems,
    metadata_problems,
    output_problems,
    params_problems,
    progress_problems,
)


class GoodParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=100, description="What to write.")
    repeat: int = Field(default=2, ge=1, le=5, description="How many times.")
    seed: int | None = Field(default=None, ge=0, le=1000, description="Seed.")


class EchoConfig(GeneratorConfig):
    model_id: str = "echo"


class Echo(Generator):
    """Repeats the prompt."""

    name = "kit-echo"
    modality = Modality.TEXT
    Params = GoodParams
    Config = EchoConfig

    def generate(self, params: GoodParams, ctx: GenerationContext) -> GenerationResult:
        words = []
        for i in range(params.repeat):
            words.append(params.prompt)
            ctx.progress((i + 1) / params.repeat, f"{i + 1}/{params.repeat}")
            ctx.raise_if_cancelled()
        meta = {"model_id": self.config.model_id, "device": ctx.device.device, "dtype": ctx.device.dtype, "seed": 0}
        return GenerationResult(text=" ".join(words), metadata=meta)


SAMPLE = {"prompt": "hi", "repeat": 3}


def test_a_sound_plugin_passes_every_check() -> None:
    report = check_plugin(Echo, SAMPLE)

    assert report.ok, report.problems


def test_unbounded_and_undocumented_params_are_reported_with_the_fix() -> None:
    class Loose(BaseModel):
        prompt: str = Field(description="What to write.")
        steps: int = Field(default=5, ge=1)
        tags: list[str] = Field(default_factory=list, description="Tags.")

    class LoosePlugin(Echo):
        Params = Loose

    problems = "\n".join(params_problems(LoosePlugin, {"prompt": "x"}))

    assert "`Loose.prompt` is a string with no max_length: add Field(max_length=...)" in problems
    assert "`Loose.steps` is a number with no an upper bound (le= or lt=)" in problems
    assert "`Loose.tags` is a list with no max_length" in problems
    assert "`Loose.tags[]` is a string with no max_length" in problems
    assert "`Loose.steps` has no description: add Field(description=...)" in problems
    assert 'set model_config = ConfigDict(extra="forbid")' in problems


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        (lambda p: p.repeat, None),
        (lambda p: 0, "returned 0"),
        (lambda p: 2.5, "returned 2.5"),
        (lambda p: p.nope, "fails"),
    ],
)
def test_expected_steps_must_be_a_whole_number_of_steps(steps: Any, problem: str | None) -> None:
    class Counted(Echo):
        @classmethod
        def expected_steps(cls, params: GoodParams) -> int:
            return steps(params)

    problems = "\n".join(params_problems(Counted, SAMPLE))

    if problem is None:
        assert problems == ""
    else:
        assert f"`Counted.expected_steps(sample_params)` {problem}" in problems


def test_a_validator_that_crashes_is_reported_instead_of_a_field_error() -> None:
    class Crashy(GoodParams):
        @field_validator("prompt")
        @classmethod
        def no_shouting(cls, value: str) -> str:
            if value.isupper():
                raise TypeError("shouting")
            return value

    class CrashyPlugin(Echo):
        Params = Crashy

    problems = invalid_params_problems(CrashyPlugin, SAMPLE, [({"prompt": "LOUD"}, "prompt")])

    assert problems == [
        "your case {'prompt': 'LOUD'}: `validate_params` raised TypeError: shouting instead of ParamsInvalid; in "
        "pydantic validators raise ValueError (the platform turns it into a field error), never other exceptions"
    ]


def test_importing_a_heavy_library_at_module_level_is_reported(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    (tmp_path / "heavy_plugin.py").write_text(
        textwrap.dedent(
            """
            import fractions  # stands in for torch: the kit's list of heavy modules is configurable
            from tests.plugins.test_contract_kit import Echo

            class Heavy(Echo):
                name = "kit-heavy"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from heavy_plugin import Heavy

    problems = import_problems(Heavy, heavy=("fractions", "torch"))

    assert problems == [
        "`import heavy_plugin` imports ['fractions']: move those imports inside `setup` (and `generate`), so the "
        "web process can list plugins and validate params without them"
    ]


def test_outputs_of_the_wrong_modality_or_undecodable_files_are_reported() -> None:
    class Picture(Echo):
        modality = Modality.IMAGE

    text_file = GenerationResult(files=[OutputFile("a.txt", "text/plain", b"hello")])
    broken_png = GenerationResult(files=[OutputFile("a.png", "image/png", b"\x89PNG not really")])

    assert output_problems(Picture, GenerationResult(text="a cat")) == [
        "an image plugin must return at least one OutputFile in `GenerationResult.files`"
    ]
    assert output_problems(Picture, text_file) == [
        "`files[0].content_type` is 'text/plain'; an image plugin returns image/*"
    ]
    assert output_problems(Picture, broken_png)[0].startswith("`files[0]` (image/png) is not a valid image: Pillow")
    assert output_problems(Echo, GenerationResult(text="  ")) == [
        "a text plugin must return non-empty `GenerationResult.text`, got '  '"
    ]


def test_missing_metadata_and_echoed_secrets_are_reported() -> None:
    from pydantic import SecretStr

    class TokenConfig(GeneratorConfig):
        model_id: str = "hosted"
        api_token: SecretStr | None = None

    config = TokenConfig(api_token="tok-12345")
    params = GoodParams(prompt="x", seed=1)
    result = GenerationResult(text="x", metadata={"model_id": "hosted", "token": "tok-12345", "device": "cuda:0"})

    problems = metadata_problems(Echo, result, params, LocalContext(), config)

    assert problems == [
        "`GenerationResult.metadata` has no 'dtype': jobs record which dtype produced them",
        "`metadata['device']` is 'cuda:0'; report the device you ran on (ctx.device.device)",
        "`Params` has a `seed` but `metadata` has no 'seed': record the seed used so a job can repeat",
        "a secret config value appears in the job's result: secrets are passed only to the plugin",
    ]


@pytest.mark.parametrize(
    ("reports", "problem"),
    [
        ([], "`generate` never called ctx.progress(fraction, message): report progress as work advances"),
        ([(0.5, "a"), (0.2, "b")], "progress went back from 0.5 to 0.2 (report 1); report monotonic progress"),
        ([(1.5, "a")], "progress report 0 is 1.5; fractions lie between 0.0 and 1.0"),
    ],
)
def test_missing_or_backward_progress_is_reported(reports: list[Any], problem: str) -> None:
    assert progress_problems(reports) == [problem]


def test_a_plugin_that_ignores_cancellation_is_reported() -> None:
    class Stubborn(Echo):
        def generate(self, params: GoodParams, ctx: GenerationContext) -> GenerationResult:
            for i in range(3):
                ctx.progress((i + 1) / 3)
            return GenerationResult(text="done anyway")

    plugin = Stubborn(Stubborn.Config())

    assert cancellation_problems(plugin, GoodParams(prompt="x")) == [
        "`generate` finished although the job was cancelled after its first progress report: check "
        "ctx.cancelled() (or call ctx.raise_if_cancelled()) after each step and raise JobCancelled"
    ]


def test_a_broken_declaration_stops_the_report_early() -> None:
    class Nameless(Echo):
        name = "Bad Name!"

    report = check_plugin(Nameless, SAMPLE)

    assert not report.ok
    assert list(report.problems) == ["declaration"]
    with pytest.raises(AssertionError, match="`name` must match"):
        report.raise_for_problems()


# --- batches: one item's cancel and seed stay its own; the engine capability --------------------------------------

WORDS = ["amber", "bright", "cosy", "dawn", "every", "fresh", "golden", "honey", "island", "jolly"]


class Lockstep(Echo):
    """Runs its items side by side, one word per step for all of them: the shape of a real batched model."""

    name = "kit-lockstep"
    max_batch_size = 4

    def batch_key(self, params: GoodParams) -> int:
        return params.repeat

    def generate(self, params: GoodParams, ctx: GenerationContext) -> GenerationResult:
        [outcome] = self.generate_batch([BatchItem(params, ctx)])
        if isinstance(outcome, GeneratorError):
            raise outcome
        return outcome

    def rngs(self, seeds: list[int]) -> list[random.Random]:
        return [random.Random(seed) for seed in seeds]  # one stream per item

    def stopped(self, items: Sequence[BatchItem], i: int) -> bool:
        return items[i].ctx.cancelled()

    def metadata(self, items: Sequence[BatchItem], seed: int) -> dict[str, Any]:
        device = items[0].ctx.device
        return {"model_id": self.config.model_id, "device": device.device, "dtype": device.dtype, "seed": seed}

    def generate_batch(self, items: Sequence[BatchItem]) -> list[GenerationResult | GeneratorError]:
        seeds = [i.params.seed if i.params.seed is not None else random.SystemRandom().randrange(1000) for i in items]
        rngs = self.rngs(seeds)
        words: list[list[str]] = [[] for _ in items]
        outcomes: list[GenerationResult | GeneratorError | None] = [None] * len(items)
        steps = items[0].params.repeat
        for step in range(steps):
            for i, item in enumerate(items):
                if outcomes[i] is None:
                    words[i].append(f"{item.params.prompt}-{rngs[i].choice(WORDS)}")
                    item.ctx.progress((step + 1) / steps, f"{step + 1}/{steps}")
                    if self.stopped(items, i):
                        outcomes[i] = JobCancelled("the job was cancelled")
        return [
            outcome or GenerationResult(text=" ".join(words[i]), metadata=self.metadata(items, seeds[i]))
            for i, outcome in enumerate(outcomes)
        ]


class IgnoresOneCancel(Lockstep):
    def stopped(self, items: Sequence[BatchItem], i: int) -> bool:
        return items[0].ctx.cancelled()  # looks at the first item's cancel only


class CancelsTheWholeBatch(Lockstep):
    def stopped(self, items: Sequence[BatchItem], i: int) -> bool:
        return any(item.ctx.cancelled() for item in items)


class OneStreamForTheBatch(Lockstep):
    def rngs(self, seeds: list[int]) -> list[random.Random]:
        shared = random.Random(seeds[0])  # the first item's seed drives every item
        return [shared] * len(seeds)


class TellsTheBatchSize(Lockstep):
    def metadata(self, items: Sequence[BatchItem], seed: int) -> dict[str, Any]:
        return super().metadata(items, seed) | {"batch_size": len(items)}


def test_a_sound_batching_plugin_passes_and_its_companions_differ_but_share_the_key() -> None:
    plugin = Lockstep(Lockstep.Config())
    sample = Lockstep.validate_params(SAMPLE | {"seed": 5})

    companions = companion_params(plugin, SAMPLE | {"seed": 5}, 2)

    assert check_plugin(Lockstep, SAMPLE).ok
    assert [plugin.batch_key(p) for p in companions] == [plugin.batch_key(sample)] * 2
    assert {p.seed for p in companions}.isdisjoint({5}) and len({p.seed for p in companions}) == 2
    assert all(p.prompt != "hi" for p in companions)


def test_a_batch_that_ignores_one_items_cancel_is_reported() -> None:
    assert batch_cancellation_problems(IgnoresOneCancel(IgnoresOneCancel.Config()), SAMPLE) == [
        "`generate_batch` finished item 2 although it was cancelled after its first progress report: check each "
        "item's ctx.cancelled() after each step and return JobCancelled for that item alone"
    ]
    report = check_plugin(IgnoresOneCancel, SAMPLE)
    assert not report.ok and list(k for k, v in report.problems.items() if v) == ["batch cancellation"]


def test_a_batch_that_cancels_every_item_for_one_cancel_is_reported() -> None:
    problems = batch_cancellation_problems(CancelsTheWholeBatch(CancelsTheWholeBatch.Config()), SAMPLE)

    assert problems == [
        f"item {n} failed with cancelled: the job was cancelled when only item 2 was cancelled: one item's cancel "
        "must not stop the others"
        for n in (1, 3)
    ]


def test_a_batch_that_ignores_one_items_seed_is_reported() -> None:
    problems = batch_seed_problems(OneStreamForTheBatch(OneStreamForTheBatch.Config()), SAMPLE)

    assert problems == [
        "item 2 (seed 1) gave another output in a batch than alone: give each item its own random generator seeded "
        "from its own seed (a torch.Generator per row), never one stream for the batch"
    ]
    assert batch_seed_problems(Lockstep(Lockstep.Config()), SAMPLE) == []


def test_batch_details_in_a_tenants_metadata_are_reported() -> None:
    problems = batch_seed_problems(TellsTheBatchSize(TellsTheBatchSize.Config()), SAMPLE)

    assert problems == [
        "item 2's `metadata` differs from its lone run at ['batch_size']: a tenant must not see whether or with whom "
        "a job was batched (no batch size, nothing of another job)"
    ]


class WordRunner:
    """A StepRunner: one word per step for every running row, as token events; `shared` breaks per-row seeds."""

    def __init__(self, plugin: Generator, *, shared: bool = False, spaced: bool = True) -> None:
        self.plugin, self.shared, self.spaced = plugin, shared, spaced
        self.rows: dict[int, tuple[random.Random, list[str], Any]] = {}
        self.stream: random.Random | None = None

    def prepare(self, seq: Any) -> None:
        seq.cost = 8 + seq.params.repeat

    def footprint(self, rows: list[Any]) -> int:
        return sum(r.cost for r in rows)

    def kv_bytes_per_token(self) -> int:
        return 64

    def step(self, joining: list[Any], leaving: list[Any]) -> list[Output]:
        for seq in leaving:
            self.rows.pop(id(seq), None)
        for seq in joining:
            rng = random.Random(seq.params.seed if seq.params.seed is not None else 0)
            if self.shared:  # the first row's stream serves every row
                self.stream = self.stream or rng
                rng = self.stream
            self.rows[id(seq)] = (rng, [], seq)
        outputs = []
        for rng, words, seq in list(self.rows.values()):
            word = f"{seq.params.prompt}-{rng.choice(WORDS)}"
            outputs.append(Output(seq, token=(len(words), (" " if words and self.spaced else "") + word)))
            words.append(word)
            outputs.append(Output(seq, progress=(len(words) / seq.params.repeat, "")))
            if len(words) == seq.params.repeat:
                meta = {"model_id": "echo", "device": "cpu", "dtype": "float32", "seed": seq.params.seed}
                outputs.append(Output(seq, outcome=GenerationResult(text=" ".join(words), metadata=meta)))
        return outputs


class Streaming(Lockstep):
    name = "kit-streaming"
    runner_options: ClassVar[dict[str, bool]] = {}

    def create_runner(self) -> WordRunner:
        return WordRunner(self, **self.runner_options)

    def generate_batch(self, items: Sequence[BatchItem]) -> list[GenerationResult | GeneratorError]:
        from generators.engine.static import run_to_end

        return run_to_end(self.create_runner(), items)


def test_a_plugin_with_a_sound_step_runner_passes_the_engine_check() -> None:
    plugin = Streaming(Streaming.Config())

    assert engine_problems(plugin, SAMPLE | {"seed": 3}) == []
    assert check_plugin(Streaming, SAMPLE | {"seed": 3}).ok


def test_a_runner_whose_rows_share_a_random_stream_is_reported() -> None:
    class Shared(Streaming):
        runner_options: ClassVar[dict[str, bool]] = {"shared": True}

    problems = engine_problems(Shared(Shared.Config()), SAMPLE | {"seed": 3})

    assert (
        "engine job 1 (seed 3) served beside another job gave another output than alone: each row needs its own "
        "seeded generator and must not see the other rows"
    ) in problems


def test_token_events_that_do_not_spell_the_text_are_reported() -> None:
    class Unspaced(Streaming):
        runner_options: ClassVar[dict[str, bool]] = {"spaced": False}

    problems = engine_problems(Unspaced(Unspaced.Config()), SAMPLE | {"seed": 3})

    assert problems[0].startswith("engine job 1: its token events concatenate to 'hi-")
    assert problems[0].endswith("a streaming client must see exactly the final text")
    assert len(problems) == 2  # each job
