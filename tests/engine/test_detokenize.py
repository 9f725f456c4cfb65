"""The engine's batch decode takes the fast tokenizer's backend only where it gives transformers' own text."""

from __future__ import annotations

import random

from transformers import AutoTokenizer

from generators.engine.causal_lm import _batch_decoder


def test_the_backend_path_gives_batch_decode_s_text(tiny_models) -> None:  # noqa: ANN001
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["transformers-text"])
    decode = _batch_decoder(tokenizer)
    assert decode.__name__ == "fast"
    rng = random.Random(0)
    windows = [[rng.randrange(len(tokenizer)) for _ in range(rng.randint(0, 12))] for _ in range(300)]
    assert decode(windows) == tokenizer.batch_decode(windows, skip_special_tokens=True)


def test_a_tokenizer_whose_decode_differs_keeps_transformers_path(tiny_models) -> None:  # noqa: ANN001
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["transformers-text"])

    class CleansUp(type(tokenizer)):
        def batch_decode(self, sequences, **kwargs):  # noqa: ANN001, ANN201 - what a post-processing decode does
            return [text.replace(" ,", ",").upper() for text in super().batch_decode(sequences, **kwargs)]

    tokenizer.__class__ = CleansUp
    decode = _batch_decoder(tokenizer)
    assert decode.__name__ == "slow"
    assert decode([[5, 6, 7]]) == tokenizer.batch_decode([[5, 6, 7]], skip_special_tokens=True)
