"""Per-row sampling for a batch: each row its own temperature (0 = greedy), top-p and random generator.

The random draw of a row is one uniform number per step from that row's own generator (`random.Random`, seeded by
the job), kept on the host, so a seeded job draws the same numbers whatever else is in the batch and whatever the
device. Everything else is tensor arithmetic over the whole batch (`pick`), which a CUDA-graph step can run on the
device as part of the graph.
"""

from __future__ import annotations

import random
from collections.abc import Sequence as Seq
from typing import Any


def row_generator(seed: int) -> random.Random:
    """A row's own random stream. Python's generator on the host: a `torch.rand(1, generator=...)` per row cost a
    CPU step of 32 rows 0.15 ms in dispatch alone (0.003 ms this way)."""
    return random.Random(seed)


def draws(rows: Seq[Any]) -> list[float]:
    """This step's uniform number of each row (0.0 for a greedy row, which draws nothing)."""
    return [row.generator.random() if row.temperature > 0 else 0.0 for row in rows]


def pick(scores: Any, temperature: Any, top_p: Any, uniform: Any) -> Any:
    """Tokens (rows,) from float32 `scores` (rows, vocab) and per-row `temperature`, `top_p`, `uniform` (rows,).

    Rows with temperature 0 take the argmax. The others keep the smallest head of their tempered distribution whose
    mass reaches top_p (the first token always stays) and take the token where their uniform number falls in it
    (inverse-CDF sampling: one `multinomial` and one device read per row cost a batch of 32 a fifth of its step).
    """
    import torch

    probs = torch.softmax(scores / temperature.clamp(min=1e-6)[:, None], dim=-1)
    ordered, order = sort_descending(probs)
    return _pick_sorted(ordered, order, temperature, top_p, uniform, scores.argmax(dim=-1))


# From this many probabilities on, a CPU sort packs each with its token id into one int64 and sorts those with
# numpy (SIMD): 0.12 ms instead of torch's 0.56 ms for 32 rows of 400 tokens, 27 ms instead of 87 for 32 of
# 32,000. Below it, torch's sort is the cheaper call. Both orders are the same: most likely first, ties by token id.
PACKED_SORT_FROM = 2048
_LOW = 0xFFFFFFFF


def sort_descending(probs: Any) -> tuple[Any, Any]:
    """(probabilities most likely first, their token ids) of each row of `probs`; on the CPU ties by token id, the
    same order whatever the batch, so a seeded row picks the same token alone or batched."""
    import torch

    if probs.device.type != "cpu":  # as the CUDA graphs were captured and measured (generators/engine/slots.py)
        return probs.sort(dim=-1, descending=True)
    if probs.numel() < PACKED_SORT_FROM or probs.dtype != torch.float32:
        return probs.sort(dim=-1, descending=True, stable=True)
    import numpy as np

    values = probs.contiguous().numpy()
    # A non-negative float32's bits, read as an integer, order as the float does: bits in the high half, and in the
    # low half the token id counted down, so an ascending sort read backwards is most likely first, ties by id.
    keys = values.view(np.int32).astype(np.int64) << 32
    keys |= _LOW - np.arange(values.shape[-1], dtype=np.int64)
    keys.sort(axis=-1)
    keys = np.ascontiguousarray(keys[:, ::-1])
    ordered = (keys >> 32).astype(np.int32).view(np.float32)
    return torch.from_numpy(ordered), torch.from_numpy(_LOW - (keys & _LOW))


# Rows whose kept head lies in their HEAD_TOKENS most likely tokens are picked from those alone: a sort of the
# whole vocabulary cost a batch of 32 on the CPU 0.6 ms a step with 400 tokens, 85 ms with 32,000 (torch's CPU
# sort), where `topk` of 256 costs 3 ms. The head is the same tokens in the same order, so the pick is the same.
HEAD_TOKENS = 256


def pick_head_first(scores: Any, temperature: Any, top_p: Any, uniform: Any) -> Any:
    """`pick`, where each row whose top-p head is within its HEAD_TOKENS best tokens sorts only those; the other
    rows (a flat distribution, top_p near 1) sort their whole vocabulary. Which way a row goes depends on its own
    scores alone, so a seeded row picks the same token whatever rows share its batch. Not for a CUDA graph: which
    rows fall back is read on the host."""
    import torch

    if scores.shape[-1] <= HEAD_TOKENS * 2:
        return pick(scores, temperature, top_p, uniform)
    probs = torch.softmax(scores / temperature.clamp(min=1e-6)[:, None], dim=-1)
    head, order = probs.topk(HEAD_TOKENS, dim=-1)  # sorted, most likely first
    # The head reaches top_p: every token after it has at least top_p before it, so sorting it keeps nothing more.
    wide = (head.sum(dim=-1) < top_p) & (temperature > 0)
    tokens = _pick_sorted(head, order, temperature, top_p, uniform, order[:, 0])
    if bool(wide.any()):
        rows = wide.nonzero().squeeze(1)
        tokens[rows] = pick(scores[rows], temperature[rows], top_p[rows], uniform[rows])
    return tokens


def _pick_sorted(ordered: Any, order: Any, temperature: Any, top_p: Any, uniform: Any, greedy: Any) -> Any:
    """The inverse-CDF pick over each row's probabilities sorted most likely first (`order`: their token ids)."""
    import torch

    # One running sum serves both: a token is kept while the mass before it is under top_p (the first always is),
    # and the kept head's cumulative sums are the same numbers whatever follows it, so the pick searches them as
    # they are, below the kept mass (a masked copy and a second sum over the vocabulary cost a GPU step 0.2 ms).
    cdf = ordered.cumsum(dim=-1)
    kept = ((cdf - ordered) < top_p[:, None]).sum(dim=-1, keepdim=True).clamp_(min=1)
    mass = cdf.gather(1, kept - 1)
    target = uniform[:, None] * mass  # below the kept mass, so it lands in the kept head
    index = torch.searchsorted(cdf, target, right=True).clamp_(max=kept - 1)
    return torch.where(temperature > 0, order.gather(1, index).squeeze(1), greedy)


def sample_rows(scores: Any, rows: Seq[Any]) -> list[int]:
    """One token per row of `scores` (rows, vocab), float32. `rows[i]` has temperature, top_p, generator."""
    import torch

    sampled = [i for i, row in enumerate(rows) if row.temperature > 0]
    if not sampled:
        return scores.argmax(dim=-1).tolist()
    device = scores.device
    if len(sampled) < len(rows):  # only the sampling rows pay for the sort
        tokens = scores.argmax(dim=-1)
        index = torch.tensor(sampled, device=device)
        chosen = [rows[i] for i in sampled]
        tokens.index_copy_(0, index, _pick_rows(scores.index_select(0, index), chosen, device))
        return tokens.tolist()
    return _pick_rows(scores, rows, device).tolist()  # the step's one device read


def _pick_rows(scores: Any, rows: Seq[Any], device: Any) -> Any:
    import torch

    temperature = torch.tensor([row.temperature for row in rows], device=device)
    top_p = torch.tensor([row.top_p for row in rows], device=device)
    uniform = torch.tensor(draws(rows), device=device)
    return pick_head_first(scores, temperature, top_p, uniform)
