"""The tiny random-weight text model, loaded once for the grammar tests, and a sampling loop that drives the hook
exactly as the serving engine does: per row mask_logits, sample, accept, stop when is_finished."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from generators.testing.tiny_models import build_tiny_text_model

CATALOGUE = Path(__file__).resolve().parents[2] / "seeds" / "catalogue"


def seeded_template(slug: str) -> dict[str, Any]:
    """A template of the seeded catalogue, with its output_schema parsed."""
    for path in CATALOGUE.glob("*.toml"):
        for template in tomllib.loads(path.read_text())["templates"]:
            if template.get("slug") == slug:
                return {**template, "output_schema": json.loads(template["output_schema"])}
    raise LookupError(slug)


class TinyModel:
    def __init__(self, path: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]

    def sample(self, constraints: list[Any], max_tokens: int, *, seed: int = 0, temperature: float = 1.0) -> list[dict]:
        """Decode one row per constraint from the same chat prompt; each row's text, tokens and whether it finished."""
        torch = self.torch
        rows = len(constraints)
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": "Reply in JSON."}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"].repeat(rows, 1)
        generator = torch.Generator().manual_seed(seed)
        tokens: list[list[int]] = [[] for _ in range(rows)]
        finished = [False] * rows
        with torch.inference_mode():
            out = self.model(prompt, use_cache=True)
            for _ in range(max_tokens):
                logits = out.logits[:, -1].float()
                step = torch.zeros(rows, 1, dtype=torch.long)
                for i, constraint in enumerate(constraints):
                    if finished[i]:
                        continue
                    constraint.mask_logits(logits[i])
                    token = int(torch.multinomial(torch.softmax(logits[i] / temperature, -1), 1, generator=generator))
                    constraint.accept(token)
                    tokens[i].append(token)
                    step[i, 0] = token
                    finished[i] = constraint.is_finished()
                if all(finished):
                    break
                out = self.model(step, past_key_values=out.past_key_values, use_cache=True)
        return [
            {"text": self.tokenizer.decode(t, skip_special_tokens=True), "tokens": t, "finished": f}
            for t, f in zip(tokens, finished, strict=True)
        ]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyModel:  # noqa: ANN001
    return TinyModel(build_tiny_text_model(tmp_path_factory.mktemp("grammar") / "tiny-llama"))
