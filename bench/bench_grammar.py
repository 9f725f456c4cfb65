"""Per-token overhead of grammar-constrained decoding on the tiny model's batch of 32, with vs without, in one run.

    .venv/bin/python bench/bench_grammar.py [--rows 32] [--steps 96] [--repeats 5] [--compare]

A decode loop shaped like the serving engine's (one forward for all rows on a KV cache, then per-row
temperature / top-p sampling) runs the same steps three ways, interleaved so drift hits all alike:
no constraint, `TokenConstraint.mask_logits` per row (what the engine calls), and `mask_logits_batch`
(one bitmask for the whole step). It prints the median milliseconds per step and the overhead.

`--compare` also times the candidate libraries' mask computation for the same batch, and checks which
JSON Schema features each compiles and enforces (the figures in docs/structured-outputs.md).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generators.grammar import compile_constraint, mask_logits_batch  # noqa: E402
from generators.testing.tiny_models import build_tiny_text_model  # noqa: E402


def quiz_schema() -> dict:
    for template in tomllib.loads((ROOT / "seeds/catalogue/education.toml").read_text())["templates"]:
        if template.get("slug") == "quiz":
            return json.loads(template["output_schema"])
    raise LookupError("quiz")


def sample(torch, logits, temperature: float = 0.7, top_p: float = 0.95):  # noqa: ANN001, ANN201
    """Per-row temperature and nucleus sampling, as the engine does."""
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    return order.gather(-1, torch.multinomial(sorted_probs, 1))


def decode(model, tokenizer, rows: int, steps: int, mode: str, schema: dict) -> tuple[float, float, float]:  # noqa: ANN001
    """Milliseconds per decode step for `rows` rows over `steps` steps (wall clock, then this process's CPU time),
    and of them in the grammar (mask + accept); `mode` is none, per_row or batch."""
    import torch

    vocab = model.get_output_embeddings().weight.shape[0]
    fmt = {"type": "json_schema", "schema": schema}
    constraints = [compile_constraint(tokenizer, fmt, vocab) for _ in range(rows)] if mode != "none" else []
    prompt = torch.randint(10, 300, (rows, 24))
    generator_seed = torch.manual_seed(0)  # noqa: F841 - the same random stream for every mode
    grammar = 0.0
    with torch.inference_mode():
        out = model(prompt, use_cache=True)
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(steps):
            logits = out.logits[:, -1].float()
            entered = time.perf_counter()
            if mode == "per_row":
                for i, constraint in enumerate(constraints):
                    constraint.mask_logits(logits[i])
            elif mode == "batch":
                mask_logits_batch(constraints, logits)
            grammar += time.perf_counter() - entered
            tokens = sample(torch, logits)
            entered = time.perf_counter()
            for i, constraint in enumerate(constraints):
                if not constraint.is_finished():
                    constraint.accept(int(tokens[i]))
            grammar += time.perf_counter() - entered
            out = model(tokens, past_key_values=out.past_key_values, use_cache=True)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return wall / steps * 1000, cpu / steps * 1000, grammar / steps * 1000


def overhead(args: argparse.Namespace, model, tokenizer, schema: dict) -> None:  # noqa: ANN001
    modes = ("none", "per_row", "batch")
    timings: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in modes}
    decode(model, tokenizer, args.rows, 8, "batch", schema)  # warm up: compile, caches, thread pool
    for _ in range(args.repeats):
        for mode in modes:
            timings[mode].append(decode(model, tokenizer, args.rows, args.steps, mode, schema))
    # The minimum over rounds is the run least disturbed by other processes on a shared machine. CPU time (all
    # of this process's threads) is steadier still when others load the cores: waiting for a core costs none.
    base = min(wall for wall, _, _ in timings["none"])
    base_cpu = min(cpu for _, cpu, _ in timings["none"])
    print(f"decode loop, {args.rows} rows x {args.steps} steps, best of {args.repeats} rounds (ms per step)")
    print(f"  {'mode':8s} {'wall':>9s} {'overhead':>9s} {'cpu':>9s} {'overhead':>9s} {'in grammar':>11s}")
    for mode in modes:
        wall = min(w for w, _, _ in timings[mode])
        cpu = min(c for _, c, _ in timings[mode])
        grammar = statistics.median(g for _, _, g in timings[mode])
        print(
            f"  {mode:8s} {wall:6.3f} ms {wall / base - 1:+9.1%} {cpu:6.3f} ms {cpu / base_cpu - 1:+9.1%} "
            f"{grammar:8.3f} ms"
        )


# ---- --compare: candidate libraries ------------------------------------------------------------------------------

FEATURES = [  # (feature, schema, a valid document, an invalid one)
    ("enum", {"enum": ["draft", "active"]}, '"draft"', '"other"'),
    (
        "nested objects",
        {
            "type": "object",
            "required": ["a"],
            "properties": {"a": {"type": "object", "required": ["b"], "properties": {"b": {"type": "integer"}}}},
        },
        '{"a": {"b": 1}}',
        '{"a": {}}',
    ),
    (
        "array minItems/maxItems",
        {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3},
        "[1, 2]",
        "[1]",
    ),
    ("string pattern", {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}, '"ABC-1234"', '"AB-1"'),
    ("string min/maxLength", {"type": "string", "minLength": 3, "maxLength": 5}, '"abcd"', '"ab"'),
    ("integer minimum/maximum", {"type": "integer", "minimum": 0, "maximum": 5}, "4", "7"),
    ("anyOf / nullable", {"anyOf": [{"type": "string"}, {"type": "null"}]}, "null", "1"),
    (
        "$ref to $defs (recursive)",
        {"$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"},
        '{"c": {"c": {}}}',
        '{"c": 1}',
    ),
    ("format date", {"type": "string", "format": "date"}, '"2026-01-31"', '"31/01/2026"'),
]


def vocab_of(tokenizer, vocab: int) -> list[bytes]:  # noqa: ANN001
    import xgrammar as xgr

    return list(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab).decoded_vocab)


class Xgrammar:
    name = "xgrammar"

    def __init__(self, tokenizer, vocab: int) -> None:  # noqa: ANN001
        import xgrammar as xgr

        self.xgr, self.vocab = xgr, vocab
        self.compiler = xgr.GrammarCompiler(
            xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=[tokenizer.eos_token_id])
        )

    def compile(self, schema: dict):  # noqa: ANN201
        return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)

    def accepts(self, compiled, text: str) -> bool:  # noqa: ANN001
        matcher = self.xgr.GrammarMatcher(compiled)
        return matcher.accept_string(text) and matcher.is_completed()

    def matchers(self, compiled, rows: int) -> list:  # noqa: ANN001
        self.bitmask = self.xgr.allocate_token_bitmask(rows, self.vocab)
        return [self.xgr.GrammarMatcher(compiled) for _ in range(rows)]

    def mask(self, matchers: list, logits) -> None:  # noqa: ANN001
        for i, matcher in enumerate(matchers):
            matcher.fill_next_token_bitmask(self.bitmask, i)
        self.xgr.apply_token_bitmask_inplace(logits, self.bitmask)

    def advance(self, matcher, token: int) -> None:  # noqa: ANN001
        matcher.accept_token(token)


class Llguidance:
    name = "llguidance"

    def __init__(self, tokenizer, vocab: int) -> None:  # noqa: ANN001
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg, self.vocab = llguidance, vocab
        self.tokenizer, self.hf = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab), tokenizer

    def compile(self, schema: dict):  # noqa: ANN201
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        matcher = self.llg.LLMatcher(self.tokenizer, grammar)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return grammar

    def accepts(self, grammar, text: str) -> bool:  # noqa: ANN001
        matcher = self.llg.LLMatcher(self.tokenizer, grammar)
        return matcher.consume_tokens(self.hf.encode(text, add_special_tokens=False)) and matcher.is_accepting()

    def matchers(self, grammar, rows: int) -> list:  # noqa: ANN001
        self.bitmask = self.llg.torch.allocate_token_bitmask(rows, self.vocab)
        return [self.llg.LLMatcher(self.tokenizer, grammar) for _ in range(rows)]

    def mask(self, matchers: list, logits) -> None:  # noqa: ANN001
        for i, matcher in enumerate(matchers):
            self.llg.torch.fill_next_token_bitmask(matcher, self.bitmask, i)
        self.llg.torch.apply_token_bitmask_inplace(logits, self.bitmask)

    def advance(self, matcher, token: int) -> None:  # noqa: ANN001
        matcher.consume_token(token)


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tokenizer, vocab: int) -> None:  # noqa: ANN001
        import torch
        from outlines_core import Vocabulary

        self.torch, self.vocab_size = torch, vocab
        special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        tokens: dict[bytes, list[int]] = {}
        for i, data in enumerate(vocab_of(tokenizer, vocab)):
            if i not in special and data:
                tokens.setdefault(data, []).append(i)
        self.vocab = Vocabulary(tokenizer.eos_token_id, tokens)

    def compile(self, schema: dict):  # noqa: ANN201
        from outlines_core import Index
        from outlines_core.json_schema import build_regex_from_schema

        regex = build_regex_from_schema(json.dumps(schema), r"( )?")
        return Index(regex, self.vocab), regex

    def accepts(self, compiled, text: str) -> bool:  # noqa: ANN001
        # the index enforces exactly this regular expression, so matching it says what the index allows
        return re.fullmatch(compiled[1], text) is not None

    def matchers(self, compiled, rows: int) -> list:  # noqa: ANN001
        from outlines_core import Guide

        self.bitmask = self.torch.zeros(rows, (self.vocab_size + 31) // 32, dtype=self.torch.int32)
        return [Guide(compiled[0]) for _ in range(rows)]

    def mask(self, guides: list, logits) -> None:  # noqa: ANN001
        import xgrammar as xgr

        for i, guide in enumerate(guides):
            row = self.bitmask[i]
            guide.write_mask_into(row.data_ptr(), row.numel(), row.element_size())
        xgr.apply_token_bitmask_inplace(logits, self.bitmask)  # outlines-core fills the same layout; reuse the kernel

    def advance(self, guide, token: int) -> None:  # noqa: ANN001
        if not guide.is_finished():
            guide.advance(token)


class LmFormatEnforcer:
    name = "lm-format-enforcer"

    def __init__(self, tokenizer, vocab: int) -> None:  # noqa: ANN001
        import torch
        from lmformatenforcer import TokenEnforcerTokenizerData

        self.torch, self.vocab = torch, vocab
        special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        decoded = vocab_of(tokenizer, vocab)
        regular = [
            (i, data.decode(errors="replace"), False) for i, data in enumerate(decoded) if i not in special and data
        ]
        self.data = TokenEnforcerTokenizerData(
            regular, lambda ids: tokenizer.decode(ids), tokenizer.eos_token_id, False, vocab
        )

    def compile(self, schema: dict):  # noqa: ANN201
        from lmformatenforcer import JsonSchemaParser

        return schema, JsonSchemaParser(schema)

    def accepts(self, compiled, text: str) -> bool:  # noqa: ANN001
        from lmformatenforcer import JsonSchemaParser

        parser = JsonSchemaParser(compiled[0])
        for char in text:
            if char not in parser.get_allowed_characters():  # add_character itself takes anything
                return False
            parser = parser.add_character(char)
        return parser.can_end()

    def matchers(self, compiled, rows: int) -> list:  # noqa: ANN001
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        return [[TokenEnforcer(self.data, JsonSchemaParser(compiled[0])), []] for _ in range(rows)]

    def mask(self, matchers: list, logits) -> None:  # noqa: ANN001
        for i, (enforcer, prefix) in enumerate(matchers):
            allowed = enforcer.get_allowed_tokens(prefix)
            ids = allowed.allowed_tokens  # a list of ids (we asked for no bitmask)
            keep = self.torch.full((self.vocab,), float("-inf"))
            keep[ids] = 0
            logits[i] += keep

    def advance(self, matcher, token: int) -> None:  # noqa: ANN001
        matcher[1].append(token)


def _compact(text: str) -> str:
    return json.dumps(json.loads(text), separators=(",", ":"))


def compare(args: argparse.Namespace, model, tokenizer, schema: dict) -> None:  # noqa: ANN001
    import torch

    vocab = model.get_output_embeddings().weight.shape[0]
    print(f"\ncandidates: mask for {args.rows} rows per step on a random walk through the quiz schema")
    print(f"  {'library':20s} {'compile ms':>10s} {'mask ms/step':>12s} {'us/token':>9s}  features enforced")
    for kind in (Xgrammar, Llguidance, OutlinesCore, LmFormatEnforcer):
        try:
            lib = kind(tokenizer, vocab)
        except Exception as exc:  # noqa: BLE001 - a missing or broken candidate is reported, not fatal
            print(f"  {kind.name:20s} unavailable: {type(exc).__name__}: {str(exc)[:80]}")
            continue
        started = time.perf_counter()
        try:
            compiled = lib.compile(schema)
        except Exception as exc:  # noqa: BLE001
            print(f"  {kind.name:20s} cannot compile the quiz schema: {str(exc)[:80]}")
            continue
        compile_ms = (time.perf_counter() - started) * 1000
        matchers = lib.matchers(compiled, args.rows)
        steps, spent = min(args.steps, 32) if kind is LmFormatEnforcer else args.steps, 0.0
        generator = torch.Generator().manual_seed(0)
        for _ in range(steps):
            logits = torch.randn(args.rows, vocab, generator=generator)
            started = time.perf_counter()
            lib.mask(matchers, logits)
            spent += time.perf_counter() - started
            tokens = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            for matcher, token in zip(matchers, tokens.flatten().tolist(), strict=True):
                lib.advance(matcher, token)
        covered = []
        for feature, feature_schema, good, bad in FEATURES:
            # each library picks its own separators without free whitespace: try the spaced and compact forms
            goods, bads = (good, _compact(good)), (bad, _compact(bad))
            try:
                compiled_feature = lib.compile(feature_schema)
                if any(lib.accepts(compiled_feature, g) for g in goods) and not any(
                    lib.accepts(compiled_feature, b) for b in bads
                ):
                    covered.append(feature)
            except Exception:  # noqa: BLE001, S112 - not compiled means not covered
                continue
        ms = spent / steps * 1000
        print(
            f"  {kind.name:20s} {compile_ms:10.2f} {ms:12.3f} {ms / args.rows * 1000:9.1f}  "
            f"{len(covered)}/{len(FEATURES)}; missing: {', '.join(f for f, *_ in FEATURES if f not in covered) or '-'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--steps", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare", action="store_true", help="also time and check the candidate libraries")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    path = build_tiny_text_model(Path(tempfile.gettempdir()) / "aigc-bench-grammar" / "tiny-llama")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tiny Llama vocab {len(tokenizer)}")
    schema = quiz_schema()
    overhead(args, model, tokenizer, schema)
    if args.compare:
        compare(args, model, tokenizer, schema)


if __name__ == "__main__":
    main()
