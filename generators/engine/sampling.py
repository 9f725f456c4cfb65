"""Per-row sampling for a batch: each row its own temperature (0 = greedy), top-p and random generator."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Any


def sample_rows(scores: Any, rows: Seq[Any]) -> list[int]:
    """One token per row of `scores` (rows, vocab), float32. `rows[i]` has temperature, top_p, generator.

    Temperature and top-p are applied to the whole batch at once; the draw itself is per row, from that row's
    generator, so a seeded job draws the same numbers whatever else is in the batch.
    """
    import torch

    greedy = scores.argmax(dim=-1)
    sampled = [i for i, row in enumerate(rows) if row.temperature > 0]
    if not sampled:
        return greedy.tolist()
    index = torch.tensor(sampled, device=scores.device)
    temperature = torch.tensor([rows[i].temperature for i in sampled], device=scores.device)[:, None]
    top_p = torch.tensor([rows[i].top_p for i in sampled], device=scores.device)[:, None]
    probs = torch.softmax(scores.index_select(0, index) / temperature, dim=-1)
    ordered, order = probs.sort(dim=-1, descending=True)
    # Keep the smallest head of the distribution whose mass reaches top_p (the first token always stays).
    outside = (ordered.cumsum(dim=-1) - ordered) >= top_p
    ordered = ordered.masked_fill(outside, 0.0)
    # The draw: one uniform number per row from that row's own generator, then inverse-CDF sampling for the
    # whole batch at once (one `multinomial` and one device read per row cost a batch of 32 a fifth of its step).
    cdf = ordered.cumsum(dim=-1)
    uniform = torch.cat([torch.rand(1, generator=rows[i].generator, device=scores.device) for i in sampled])
    target = uniform[:, None] * cdf[:, -1:]  # below each row's kept mass, so it lands in the kept head
    pick = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
    greedy.index_copy_(0, index, order.gather(1, pick).squeeze(1))
    return greedy.tolist()  # the step's one device read
