"""The text plugin's direct path: a batch of prompts decoded together on its step runner, one result per job."""

from __future__ import annotations

from pathlib import Path

import pytest

from generators.base import BatchItem, LocalContext
from generators.errors import GeneratorError, JobCancelled
from generators.text_transformers import TextGenerator
from hardware import DeviceChoice

CPU = DeviceChoice(device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def text_plugin(tiny_models: dict[str, Path]) -> TextGenerator:
    plugin = TextGenerator(TextGenerator.Config(model_id=str(tiny_models["transformers-text"]), max_input_tokens=40))
    plugin.setup(CPU)
    return plugin


def items(*prompts: str, **params: object) -> list[BatchItem]:
    base = {"max_new_tokens": 6, "temperature": 0, **params}
    return [BatchItem(TextGenerator.validate_params({"prompt": p, **base}), LocalContext(CPU)) for p in prompts]


def test_prompts_of_different_lengths_share_one_pass_with_a_result_each(text_plugin) -> None:  # noqa: ANN001
    batch = items("Hi", "Write a much longer product description for a ceramic mug", "Three slogans")
    results = text_plugin.generate_batch(batch)
    assert [r.metadata["completion_tokens"] for r in results] == [6, 6, 6]
    assert len({r.metadata["prompt_tokens"] for r in results}) == 3
    assert all(ctx.reports[-1][0] == 1.0 for ctx in (item.ctx for item in batch))


def test_equal_greedy_prompts_in_one_batch_get_equal_text(text_plugin) -> None:  # noqa: ANN001
    results = text_plugin.generate_batch(items("Five slogans for a bakery", "x", "Five slogans for a bakery"))
    assert results[0].text == results[2].text


def test_an_over_long_prompt_fails_alone(text_plugin) -> None:  # noqa: ANN001
    results = text_plugin.generate_batch(items("short", "word " * 60))
    assert results[0].text is not None and results[0].metadata["completion_tokens"] == 6
    assert isinstance(results[1], GeneratorError) and results[1].code == "prompt_too_long"
    assert "`prompt`" in results[1].message


def test_a_cancelled_item_is_reported_cancelled_and_the_others_finish(text_plugin) -> None:  # noqa: ANN001
    batch = items("one", "two")
    batch[1].ctx = LocalContext(CPU, cancel_after=2)
    results = text_plugin.generate_batch(batch)
    assert results[0].metadata["completion_tokens"] == 6
    assert isinstance(results[1], JobCancelled)


def test_prompt_and_messages_are_exclusive_and_messages_use_the_chat_template(text_plugin) -> None:  # noqa: ANN001
    with pytest.raises(GeneratorError) as raised:
        TextGenerator.validate_params({"prompt": "a", "messages": [{"role": "user", "content": "a"}]})
    assert "exactly one of `prompt` and `messages`" in str(raised.value)
    chat = TextGenerator.validate_params(
        {
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "max_new_tokens": 3,
        }
    )
    result = text_plugin.generate(chat, LocalContext(CPU))
    assert result.metadata["completion_tokens"] == 3
    assert result.metadata["prompt_tokens"] > len(
        text_plugin._input_ids(TextGenerator.validate_params({"prompt": "Hi"}))
    )
