"""Grouped-query attention for a one-token decode step without copying the keys and values per query head.

A Llama-style model has fewer key/value heads than query heads (a 1B Llama: 8 and 32). transformers' SDPA path,
given a mask, repeats each key/value head for its query heads (`repeat_kv`) before calling SDPA: on an H200 the
slot runner's decode step spent 1.3 ms of its 5 ms in those copies (two per layer, from a strided slice of the slot
cache; `bench/profile_slots.py`, docs/engine.md). For one query token there is a cheaper identity: the `group`
query heads that share a key/value head become `group` query positions of that head,
(rows, heads, 1, dim) -> (rows, kv_heads, group, dim), and SDPA attends them to the cache as it is. The mask the
slot runner passes is per row (rows, 1, 1, width), so it broadcasts over the folded positions unchanged.

Newer transformers releases do the same fold themselves (`pack_gqa`); the GPU image's does not. Registered under its
own name with transformers' `AttentionInterface` (and the SDPA mask builder under the same name, so prompts are
masked as before); every call that is not a one-token decode over grouped heads goes to transformers' own SDPA
function, so prefill, and any model without grouped heads, run exactly as before.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

NAME = "aigc_sdpa_decode"
_registered = False


def decode_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention-function signature: returns (rows, query length, heads, dim) and no weights."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    group = int(getattr(module, "num_key_value_groups", 1) or 1)
    rows, heads, length, dim = query.shape
    foldable = (
        length == 1
        and group > 1
        and dropout == 0.0
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and (attention_mask is None or (attention_mask.dim() == 4 and attention_mask.shape[1] == 1))
        and key.shape[1] * group == heads
    )
    if not foldable:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    folded = query.reshape(rows, heads // group, group, dim)
    out = torch.nn.functional.scaled_dot_product_attention(
        folded, key, value, attn_mask=attention_mask, dropout_p=0.0, scale=scaling, is_causal=False
    )
    return out.reshape(rows, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, decode_attention)
    # Prompts get the mask SDPA gets, whichever builder this release maps to it.
    AttentionMaskInterface.register(NAME, AttentionMaskInterface._global_mapping["sdpa"])
    _registered = True


def use_folded_decode(model: Any) -> bool:
    """Switch a model that uses SDPA to `decode_attention`; True when it is in use. A model on another attention
    (eager, flash) is left alone, and a transformers release that refuses the switch leaves the model on SDPA."""
    config = model.config
    current = getattr(config, "_attn_implementation", None)
    if current == NAME:
        return True
    if current != "sdpa":
        return False
    try:
        register()
        model.set_attn_implementation(NAME)
    except Exception as exc:  # noqa: BLE001 - an older or newer transformers: SDPA as it was still decodes
        log.warning("could not switch the model to folded decode attention (%s: %s)", type(exc).__name__, exc)
        return False
    return getattr(model.config, "_attn_implementation", None) == NAME
