"""Decode attention over grouped key/value heads without repeating them (generators.engine.attention).

What the slot runner relies on: the folded call gives what SDPA over repeated heads gives, row masks included;
everything else (prefill, ungrouped heads) is transformers' own SDPA, untouched; and a slot runner switches its
model to it and still decodes the frame runner's text.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

from generators.base import LocalContext
from generators.engine.attention import NAME, decode_attention, use_folded_decode
from generators.text_transformers import TextGenerator
from hardware import DeviceChoice

CPU = DeviceChoice(device="cpu", dtype="float32")


def _qkv(rows: int, heads: int, kv_heads: int, length: int, width: int, dim: int = 16) -> tuple:
    rng = torch.Generator().manual_seed(0)
    query = torch.randn(rows, heads, length, dim, generator=rng)
    # A strided slice of a wider cache, as the slot cache hands it over.
    cache = torch.randn(2, rows, kv_heads, width + 7, dim, generator=rng)
    return query, cache[0][:, :, :width], cache[1][:, :, :width]


def test_a_decode_step_attends_each_query_head_to_its_key_value_head_under_each_rows_mask() -> None:
    query, key, value = _qkv(rows=3, heads=8, kv_heads=2, length=1, width=10)
    written = torch.tensor([10, 4, 7])  # row r has written this many positions; the rest is hidden
    visible = torch.arange(10)[None, :] < written[:, None]
    mask = torch.where(visible, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]
    module = SimpleNamespace(num_key_value_groups=4, is_causal=True)

    out, weights = decode_attention(module, query, key, value, mask, scaling=0.25)

    expected = torch.nn.functional.scaled_dot_product_attention(
        query, repeat_kv(key, 4), repeat_kv(value, 4), attn_mask=mask, scale=0.25
    ).transpose(1, 2)
    assert weights is None and out.shape == (3, 1, 8, 16) and out.is_contiguous()
    assert torch.allclose(out, expected, atol=1e-6)
    # The mask is honoured: a row's hidden positions do not reach its output.
    key[1, :, 4:] += 100.0
    again, _ = decode_attention(module, query, key, value, mask, scaling=0.25)
    assert torch.allclose(again, out, atol=1e-6)
    key[1, :, :4] += 1.0  # and what it has written does
    changed, _ = decode_attention(module, query, key, value, mask, scaling=0.25)
    assert not torch.allclose(changed[1], out[1]) and torch.allclose(changed[0], out[0], atol=1e-6)


@pytest.mark.parametrize(("heads", "kv_heads", "length"), [(8, 2, 5), (4, 4, 1)])
def test_prefill_and_ungrouped_heads_are_transformers_own_sdpa(heads: int, kv_heads: int, length: int) -> None:
    query, key, value = _qkv(rows=2, heads=heads, kv_heads=kv_heads, length=length, width=length)
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True)
    out, _ = decode_attention(module, query, key, value, None, scaling=0.25)
    expected, _ = sdpa_attention_forward(module, query, key, value, None, scaling=0.25)
    assert torch.equal(out, expected)


def test_the_slot_runner_switches_its_model_and_decodes_the_frame_runners_text(tiny_models: dict[str, Path]) -> None:
    path = str(tiny_models["transformers-text"])
    frame, slots = (TextGenerator(TextGenerator.Config(model_id=path, kv_layout=k)) for k in ("frame", "slots"))
    frame.setup(CPU)
    slots.setup(CPU)
    assert slots.model.config.num_key_value_heads < slots.model.config.num_attention_heads  # grouped heads
    for prompt, n in (("bakery slogan", 24), ("Write a short product description for a mug.", 40)):
        params = slots.validate_params({"prompt": prompt, "max_new_tokens": n, "temperature": 0})
        got = slots.generate(params, LocalContext(CPU))
        assert slots.model.config._attn_implementation == NAME  # the slot runner switched it on allocation
        assert got.text == frame.generate(params, LocalContext(CPU)).text
        assert got.metadata["completion_tokens"] == n
    assert frame.model.config._attn_implementation == "sdpa"


def test_a_model_on_another_attention_is_left_alone(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models["transformers-text"], attn_implementation="eager")
    assert use_folded_decode(model) is False
    assert model.config._attn_implementation == "eager"
