"""The kit catches each way a plugin breaks the contract, and its message says what to fix."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from generators.base import (
    GenerationContext,
    GenerationResult,
    Generator,
    GeneratorConfig,
    LocalContext,
    Modality,
    OutputFile,
)
from generators.testing.contract import (
    cancellation_problems,
    check_plugin,
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
