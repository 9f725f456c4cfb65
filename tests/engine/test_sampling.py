"""Per-row sampling: each row draws from its own distribution (temperature, top-p) with its own generator."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from generators.engine.sampling import PACKED_SORT_FROM, row_generator, sample_rows, sort_descending

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])


def row(temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> SimpleNamespace:
    return SimpleNamespace(temperature=temperature, top_p=top_p, generator=row_generator(seed))


def frequencies(settings: list[dict], draws: int = 20000, copies: int = 200) -> torch.Tensor:
    """How often each setting picks each token over `draws` picks: `copies` rows of each setting, each row with
    its own seed, share every batch."""
    rows = [row(**setting, seed=1000 * i + c) for i, setting in enumerate(settings) for c in range(copies)]
    scores = torch.log(PROBS)[None].repeat(len(rows), 1)
    counts = torch.zeros(len(settings) * len(PROBS), dtype=torch.long)
    setting_of = torch.arange(len(rows)) // copies
    for _ in range(draws // copies):
        tokens = torch.tensor(sample_rows(scores, rows))
        counts += torch.bincount(setting_of * len(PROBS) + tokens, minlength=len(counts))
    return counts.view(len(settings), len(PROBS)) / draws


def test_each_row_follows_its_own_temperature_and_top_p() -> None:
    seen = frequencies([{}, {"top_p": 0.7}, {"temperature": 0.0}, {"top_p": 0.85}])
    expected = torch.tensor(
        [
            [0.5, 0.3, 0.15, 0.05],  # the distribution as it is
            [0.625, 0.375, 0.0, 0.0],  # the head reaching 0.7, renormalised
            [1.0, 0.0, 0.0, 0.0],  # greedy
            [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
        ]
    )
    assert torch.allclose(seen, expected, atol=0.015), seen


def test_a_seeded_row_draws_the_same_tokens_whatever_rows_are_beside_it() -> None:
    scores = torch.log(PROBS)[None]
    alone_row = row(seed=7)
    alone = [sample_rows(scores, [alone_row])[0] for _ in range(200)]
    seeded, others = row(seed=7), [row(seed=s) for s in (1, 2, 3)]
    batch_scores = scores.repeat(4, 1)
    beside = [sample_rows(batch_scores, [others[0], seeded, others[1], others[2]])[1] for _ in range(200)]
    assert alone == beside
    assert len(set(alone)) > 1  # it did sample


def test_the_head_first_pick_takes_the_token_a_whole_sort_takes() -> None:
    """Rows whose top-p head lies in their best HEAD_TOKENS sort only those; flat rows sort everything. Either
    way each row gets the token `pick` (a sort of the whole vocabulary) gives for the same uniform number."""
    from generators.engine.sampling import HEAD_TOKENS, pick, pick_head_first

    vocab = 4 * HEAD_TOKENS
    rng = torch.Generator().manual_seed(0)
    peaked = torch.randn(6, vocab, generator=rng) * 6  # a language model's scores: a few tokens hold the mass
    flat = torch.randn(2, vocab, generator=rng) * 0.1  # nearly uniform: the head is most of the vocabulary
    scores = torch.cat([peaked, flat])
    temperature = torch.tensor([0.8, 1.0, 0.0, 0.7, 1.3, 0.9, 1.0, 0.8])
    top_p = torch.tensor([0.95, 0.9, 1.0, 0.5, 0.99, 1.0, 0.95, 0.6])
    probs = torch.softmax(scores / temperature.clamp(min=1e-6)[:, None], dim=-1)
    head_mass = probs.topk(HEAD_TOKENS, dim=-1).values.sum(-1)
    assert bool((head_mass[:6] >= top_p[:6]).any()) and bool((head_mass[6:] < top_p[6:]).all())  # both ways taken
    for _ in range(50):
        uniform = torch.rand(len(scores), generator=rng)
        assert (
            pick_head_first(scores, temperature, top_p, uniform).tolist()
            == pick(scores, temperature, top_p, uniform).tolist()
        )
        # A row alone picks what it picks in the batch.
        assert pick_head_first(scores[3:4], temperature[3:4], top_p[3:4], uniform[3:4]).item() == int(
            pick_head_first(scores, temperature, top_p, uniform)[3]
        )


def test_the_cpu_sort_orders_most_likely_first_ties_by_token_id_alone_or_batched() -> None:
    """Above PACKED_SORT_FROM probabilities the CPU sorts packed integers with numpy; below, torch sorts. A row
    alone (below) and in a batch (above) must get one order, ties included, or a seeded row could pick another
    token when batched."""
    vocab = 400
    rng = torch.Generator().manual_seed(0)
    logits = torch.randn(32, vocab, generator=rng)
    logits[:, 100:300] = logits[:, 100:101]  # two hundred tokens tied in each row
    logits[5] = 0.0  # a row of nothing but ties
    probs = torch.softmax(logits, dim=-1)
    assert probs.numel() >= PACKED_SORT_FROM > vocab
    ordered, order = sort_descending(probs)
    assert torch.equal(ordered, probs.gather(1, order))
    assert bool((ordered[:, :-1] >= ordered[:, 1:]).all())
    ties = ordered[:, :-1] == ordered[:, 1:]
    assert bool(ties.any()) and bool((order[:, :-1][ties] < order[:, 1:][ties]).all())  # ties: lower id first
    assert order[5].tolist() == list(range(vocab))
    for i in (0, 5, 31):
        alone_ordered, alone_order = sort_descending(probs[i : i + 1])
        assert torch.equal(alone_order[0], order[i]) and torch.equal(alone_ordered[0], ordered[i])
