"""Grammar-constrained decoding: each step, mask the tokens that would leave a row's output outside its JSON schema.

The engine compiles one `TokenConstraint` per row (`compile_constraint`) and, every decode step, masks that row's
logits, samples, and feeds the sampled token back (`accept`) until `is_finished()`. xgrammar does the work: it
compiles a JSON schema into a pushdown automaton with a per-token mask cache, so a step costs a few microseconds
per row (figures in docs/structured-outputs.md). Compiled grammars are cached per (tokenizer, schema).

Given the row's token budget (`max_tokens`), a constraint steers the output to close once the budget is nearly
spent, instead of letting it run into the limit mid-value: it narrows the allowed set further (never widens it),
so the text stays a valid prefix, and a model that rambles (or the tiny random-weight model) still completes.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy

from generators.errors import GeneratorError

if TYPE_CHECKING:
    import torch

CACHE_SIZE = 64  # compiled grammars kept per tokenizer; a schema compiles in milliseconds, a hit in microseconds
WRAP_UP_FRACTION = 0.25  # the last quarter of the budget (at least WRAP_UP_MIN tokens) is spent closing the value
WRAP_UP_MIN = 24
# `{"type": "json_object"}`: any JSON object. strict_mode=False so it keeps arbitrary properties.
ANY_OBJECT: dict[str, Any] = {"type": "object"}


class ResponseFormatInvalid(GeneratorError):
    """The response_format is not one this module can constrain to, or its schema is rejected."""

    code = "invalid_response_format"


@dataclass
class _TokenizerGrammars:
    """What one tokenizer needs: xgrammar's compiler and, for wrap-up, which tokens close or lengthen a value."""

    compiler: Any
    vocab_size: int
    decoded: list[bytes]  # each token's bytes, to follow whether the output is inside a string
    # A bitmask (xgrammar's layout) of the tokens we allow at all; it is ANDed into every step's mask. Left out are
    # tokens xgrammar allows in strings that break the result: raw control bytes (JSON forbids them), special or
    # added tokens such as `<|assistant|>` (decoding with skip_special_tokens drops them), and bytes that are not
    # UTF-8 (xgrammar lets a surrogate such as ED A0 80 through; decoding turns it into U+FFFD).
    usable: torch.Tensor
    after_lead: dict[int, torch.Tensor]  # `usable` narrowed to the tokens that may follow a SECOND_BYTE lead byte
    closers: torch.Tensor  # tokens holding `]` or `}`: outside a string they end an array or object
    quotes: torch.Tensor  # tokens holding `"`: they end a string, or open one
    lengths: torch.Tensor  # bytes per token: when nothing can close yet, the longest tokens reach a minimum soonest
    grammars: OrderedDict[str, Any]


_lock = threading.Lock()
_per_tokenizer: weakref.WeakKeyDictionary[Any, dict[int, _TokenizerGrammars]] = weakref.WeakKeyDictionary()


def _stop_token_ids(tokenizer: Any) -> list[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return []
    return list(eos) if isinstance(eos, list | tuple) else [eos]


def _tokenizer_grammars(tokenizer: Any, vocab_size: int) -> _TokenizerGrammars:
    import torch
    import xgrammar as xgr

    with _lock:
        known = _per_tokenizer.setdefault(tokenizer, {})
        if vocab_size in known:
            return known[vocab_size]
    info = xgr.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=vocab_size, stop_token_ids=_stop_token_ids(tokenizer)
    )
    decoded = list(info.decoded_vocab) + [b""] * max(0, vocab_size - len(info.decoded_vocab))
    stops = set(_stop_token_ids(tokenizer))
    added = set(getattr(tokenizer, "added_tokens_decoder", {}) or {}) | set(getattr(tokenizer, "all_special_ids", []))
    special = (set(info.special_token_ids) | added) - stops
    usable = torch.tensor(
        [i not in special and all(b >= 0x20 for b in t) and _utf8_inside(t) for i, t in enumerate(decoded)]
    )
    first_byte = torch.tensor([t[0] if t else -1 for t in decoded])
    after_lead = {
        lead: _pack(usable & ((first_byte < 0) | ((first_byte >= low) & (first_byte <= high))))
        for lead, (low, high) in SECOND_BYTE.items()
    }
    closers = torch.tensor([(b"]" in t or b"}" in t) and i not in special for i, t in enumerate(decoded)])
    quotes = torch.tensor([b'"' in t and i not in special for i, t in enumerate(decoded)])
    lengths = torch.tensor([len(t) if i not in special else 0 for i, t in enumerate(decoded)])
    # xgrammar's own cache is unbounded by default; ours is an LRU, so the compiler need not keep a second copy
    entry = _TokenizerGrammars(
        compiler=xgr.GrammarCompiler(info, cache_enabled=False),
        vocab_size=vocab_size,
        decoded=decoded,
        usable=_pack(usable),
        after_lead=after_lead,
        closers=closers,
        quotes=quotes,
        lengths=lengths,
        grammars=OrderedDict(),
    )
    with _lock:
        return _per_tokenizer[tokenizer].setdefault(vocab_size, entry)


# Second bytes UTF-8 allows after these lead bytes (RFC 3629): the rest rule out overlongs and surrogates.
SECOND_BYTE = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}


def _utf8_inside(data: bytes) -> bool:
    """Whether a token's bytes are UTF-8, allowing a sequence cut at either end (the next token completes it)."""
    import codecs

    start = 0
    while start < len(data) and 0x80 <= data[start] <= 0xBF:
        start += 1
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data[start:], final=False)
    except UnicodeDecodeError:
        return False
    return True


def _pack(allowed: torch.Tensor) -> torch.Tensor:
    """A bool per token as xgrammar's bitmask: int32 words, token i at bit i % 32 of word i // 32."""
    import torch

    words = (len(allowed) + 31) // 32
    bits = torch.zeros(words * 32, dtype=torch.int64)
    bits[: len(allowed)] = allowed.to(torch.int64)
    packed = (bits.view(words, 32) << torch.arange(32)).sum(dim=1)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def schema_of(response_format: Any) -> tuple[dict[str, Any], bool]:
    """The JSON schema a response_format asks for, and whether it is the tenant's own (untrusted) schema."""
    if not isinstance(response_format, dict) or response_format.get("type") not in ("json_object", "json_schema"):
        raise ResponseFormatInvalid(
            '`response_format` must be {"type": "json_object"} or {"type": "json_schema", "schema": {...}}, '
            f"not {str(response_format)[:200]}"
        )
    if response_format["type"] == "json_object":
        return ANY_OBJECT, False
    schema = response_format.get("schema")
    if not isinstance(schema, dict):
        raise ResponseFormatInvalid("`response_format.schema` must be a JSON Schema object")
    return schema, True


def check_schema(schema: Any) -> None:
    """Apply the hardening rules for tenant schemas (no remote or file $ref, bounded size, safe patterns)."""
    from generators.schema_safety import check_untrusted_schema

    try:
        check_untrusted_schema(schema)
    except ValueError as exc:
        raise ResponseFormatInvalid(f"`response_format.schema`: {exc}") from None


def _compiled(grammars: _TokenizerGrammars, schema: dict[str, Any], untrusted: bool) -> Any:
    key = json.dumps(schema, separators=(",", ":"))  # not sorted: the grammar writes properties in schema order
    with _lock:
        hit = grammars.grammars.get(key)
        if hit is not None:
            grammars.grammars.move_to_end(key)
            return hit
    if untrusted:
        check_schema(schema)  # only on a miss: a cached schema has passed already
    try:
        # No free whitespace: a model (or noise) could pad forever; strict mode forbids properties the schema
        # does not name, which only narrows the language, so every output still validates.
        compiled = grammars.compiler.compile_json_schema(key, any_whitespace=False, strict_mode=untrusted)
    except Exception as exc:  # xgrammar raises RuntimeError/ValueError subclasses naming the unsupported keyword
        raise ResponseFormatInvalid(f"`response_format.schema` cannot be compiled to a grammar: {exc}") from None
    with _lock:
        grammars.grammars[key] = compiled
        while len(grammars.grammars) > CACHE_SIZE:
            grammars.grammars.popitem(last=False)
    return compiled


class TokenConstraint:
    """One row's grammar state: which tokens may come next, fed with each token the row produced."""

    def __init__(self, grammars: _TokenizerGrammars, compiled: Any, max_tokens: int | None) -> None:
        import xgrammar as xgr

        self._grammars = grammars
        self._compiled = compiled
        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, grammars.vocab_size)
        self.bitmask_np = self.bitmask.numpy()  # the same memory
        self.max_tokens = max_tokens
        self.wrap_up_at = (
            None if max_tokens is None else max_tokens - max(WRAP_UP_MIN, int(max_tokens * WRAP_UP_FRACTION))
        )
        self.produced = 0
        self._finished = False
        self._in_string = False  # a tiny JSON lexer over the accepted bytes: wrap-up closes strings first
        self._escaped = False
        self._continuations = 0  # UTF-8 continuation bytes still due
        self._lead: int | None = None  # a lead byte whose next byte SECOND_BYTE restricts

    @property
    def wrapping_up(self) -> bool:
        return self.wrap_up_at is not None and self.produced >= self.wrap_up_at

    def mask_logits(self, logits: torch.Tensor) -> None:
        """Set the logits of tokens the grammar forbids next to -inf, in place; `logits` is one row (vocab,)."""
        import torch
        import xgrammar as xgr

        self.matcher.fill_next_token_bitmask(self.bitmask, 0)
        self.bitmask[0] &= self.usable_now()
        numpy_ok = logits.dtype in (torch.float32, torch.float64, torch.float16)
        if logits.device.type == "cpu" and numpy_ok and not logits.requires_grad and logits.is_contiguous():
            # One row on CPU: numpy writes through the shared memory in ~5 us, a third of a torch kernel call
            # plus the inference-mode switch; per-row masking is what the engine calls 32 times a step.
            width = min(logits.shape[-1], self._grammars.vocab_size)
            allowed = numpy.unpackbits(self.bitmask_np[0].view(numpy.uint8), bitorder="little")[:width]
            row = logits.detach().numpy()
            numpy.copyto(row[:width], -numpy.inf, where=allowed == 0)
            row[width:] = -numpy.inf
            if self.wrapping_up:
                with torch.inference_mode():
                    self._steer_to_close(logits, width)
            return
        # The engine's logits come out of inference mode; editing them in place is only allowed inside it.
        with torch.inference_mode():
            xgr.apply_token_bitmask_inplace(logits.view(1, -1), self.bitmask.to(logits.device, non_blocking=True))
            if self.wrapping_up:
                self._steer_to_close(logits, min(logits.shape[-1], self._grammars.vocab_size))

    def usable_now(self) -> torch.Tensor:
        """The tokens this module allows at all at this point (a bitmask row), to AND into the grammar's."""
        return self._grammars.usable if self._lead is None else self._grammars.after_lead[self._lead]

    def _steer_to_close(self, logits: torch.Tensor, width: int) -> None:
        """Keep the allowed tokens that end something: in a string a `"`; outside, `]` or `}`, then `"`.

        When none is allowed yet (a minLength, minItems or required key still to come), keep the longest allowed
        tokens: they reach the minimum in the fewest steps.
        """
        import torch

        grammars = self._grammars
        allowed = torch.isfinite(logits[:width]).cpu()
        preferences = (grammars.quotes,) if self._in_string else (grammars.closers, grammars.quotes)
        for preferred in preferences:
            keep = allowed & preferred[:width]
            if keep.any():
                break
        else:
            lengths = torch.where(allowed, grammars.lengths[:width], -1)
            keep = allowed & (lengths == lengths.max())
        logits[:width].masked_fill_(~keep.to(logits.device), float("-inf"))

    def accept(self, token_id: int) -> None:
        """Advance the grammar by the token the row produced; a token the mask forbade is a bug, so it raises."""
        if self._finished:
            return
        if not self.matcher.accept_token(int(token_id)):
            raise GeneratorError(f"token {token_id} breaks the output grammar", code="structured_output_invalid")
        self.produced += 1
        if token_id < len(self._grammars.decoded):
            self._follow(self._grammars.decoded[token_id])
        if self.matcher.is_terminated():
            self._finished = True
        elif self.matcher.is_completed():
            # Complete, and finished once nothing but a stop token may follow (a number could still grow).
            self.matcher.fill_next_token_bitmask(self.bitmask, 0)
            allowed = _allowed_ids(self.bitmask[0], self._grammars.vocab_size)
            self._finished = allowed <= set(self.matcher.stop_token_ids)

    def _follow(self, data: bytes) -> None:
        for byte in data:
            if self._continuations:
                self._continuations -= 1
                self._lead = None
                continue
            if byte >= 0xC0:
                self._continuations = 3 if byte >= 0xF0 else 2 if byte >= 0xE0 else 1
                self._lead = byte if byte in SECOND_BYTE else None
                continue
            if self._escaped:
                self._escaped = False
            elif self._in_string and byte == 0x5C:  # backslash
                self._escaped = True
            elif byte == 0x22:  # double quote
                self._in_string = not self._in_string

    def is_finished(self) -> bool:
        """The output is a complete value of the schema: end the row here (finish_reason "stop")."""
        return self._finished


def _allowed_ids(bitmask_row: torch.Tensor, vocab_size: int) -> set[int]:
    import torch

    words = bitmask_row.to(torch.int64) & 0xFFFFFFFF
    bits = (words.unsqueeze(-1) >> torch.arange(32)) & 1
    return {i for i in torch.nonzero(bits.flatten()).flatten().tolist() if i < vocab_size}


def compile_constraint(
    tokenizer: Any, response_format: dict[str, Any], vocab_size: int, *, max_tokens: int | None = None
) -> TokenConstraint:
    """A fresh constraint for one row; `max_tokens` (the row's budget) turns on closing before the budget ends."""
    schema, untrusted = schema_of(response_format)
    grammars = _tokenizer_grammars(tokenizer, vocab_size)
    return TokenConstraint(grammars, _compiled(grammars, schema, untrusted), max_tokens)


def mask_logits_batch(constraints: Sequence[TokenConstraint | None], logits: torch.Tensor) -> None:
    """Mask a whole step's logits (rows, vocab) at once: one bitmask filled in parallel, one apply.

    Equivalent to calling `mask_logits` on each row that has a constraint (rows with None are left alone),
    but cheaper on a large batch (one kernel launch on CUDA, xgrammar's thread pool for the fill).
    """
    import torch
    import xgrammar as xgr

    rows = [i for i, c in enumerate(constraints) if c is not None]
    if not rows:
        return
    chosen = [c for c in constraints if c is not None]
    bitmask = xgr.allocate_token_bitmask(len(constraints), chosen[0]._grammars.vocab_size)
    _batch_matcher().batch_fill_next_token_bitmask([c.matcher for c in chosen], bitmask, indices=rows)
    bitmask[rows] &= torch.stack([c.usable_now() for c in chosen])
    with torch.inference_mode():
        xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device, non_blocking=True), indices=rows)
        for i, constraint in zip(rows, chosen, strict=True):
            if constraint.wrapping_up:
                constraint._steer_to_close(logits[i], min(logits.shape[-1], constraint._grammars.vocab_size))


_batch: Any = None


def _batch_matcher() -> Any:
    global _batch
    if _batch is None:
        import xgrammar as xgr

        _batch = xgr.BatchGrammarMatcher()
    return _batch
