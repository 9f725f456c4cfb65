"""The runner of a transformers causal LM: one step = prefill the joining rows, decode one token for the others.

The batch is one left-padded frame (TGI's first design): every row's KV cache sits right-aligned in the same
tensors, an attention mask hides the padding, and each row has its own positions, sampling settings, random
generator, stop rules and grammar state. A row that joins is prefilled on its own and its cache is padded into
the frame; a row that leaves is cut out and the padding every remaining row shares is trimmed.
"""

from __future__ import annotations

import inspect
import secrets
import weakref
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

from generators.base import GenerationResult
from generators.engine.sampling import row_generator, sample_rows
from generators.engine.sequence import Output, Sequence
from generators.errors import GeneratorError


@dataclass
class Row:
    """Per-job decoding state."""

    seq: Sequence
    prompt: list[int]
    max_new: int
    temperature: float
    top_p: float
    generator: Any  # random.Random: one per row, so no job shares a random stream with another
    stop: tuple[str, ...] = ()
    constraint: Any = None  # grammar state (generators.grammar.TokenConstraint) or None
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # what was emitted so far: the concatenation of this row's token events
    pending: str = ""  # decoded but held back (a stop string may be forming)
    prefix_offset: int = 0
    read_offset: int = 0
    events: int = 0  # token events emitted: the next one's index
    decile: int = 0  # last progress reported, in tenths
    done: bool = False


class CausalLMRunner:
    """Runs rows of one loaded model; `prepare` is called when a job arrives, `step` once per engine step."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        encode: Callable[[Any], list[int]],
        stop_token_ids: set[int],
        metadata: Callable[[Any], dict[str, Any]],
        make_constraint: Callable[[Any], Any] | None = None,
        mask_batch: Callable[[list[Any], Any], None] | None = None,
    ) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self._batch_decode = _batch_decoder(tokenizer)
        self.encode = encode
        self.stop_token_ids = stop_token_ids
        self.metadata = metadata
        self.make_constraint = make_constraint
        self.mask_batch = mask_batch  # masks every constrained row of a step at once, where the grammar can
        self.device = model.device
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers >= 5.20 says `cache`
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.rows: list[Row] = []
        self._constraints: weakref.WeakKeyDictionary[Sequence, Any] = weakref.WeakKeyDictionary()
        self.cache: Any = None
        self.mask: Any = None  # (rows, width) 1 where a real token sits
        self.next_tokens: Any = None  # (rows,) the last sampled token of each row, not yet fed
        self.positions: Any = None  # (rows,) how many real tokens each row has fed

    # ---- admission -------------------------------------------------------------------------------------------
    def prepare(self, seq: Sequence) -> None:
        """Tokenize and price a job before it waits; raises GeneratorError for one that can never run."""
        ids = self.encode(seq.params)
        if self.make_constraint is not None:
            constraint = self.make_constraint(seq.params)  # a bad schema fails this job alone, here
            if constraint is not None:
                self._constraints[seq] = constraint
        seq.prepared = ids
        seq.cost = len(ids) + int(seq.params.max_new_tokens)

    def kv_bytes_per_token(self) -> int:
        """Bytes of keys and values one token occupies across all layers."""
        config = self.model.config
        config = getattr(config, "text_config", None) or config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return 2 * config.num_hidden_layers * heads * head_dim * self.model.dtype.itemsize

    def footprint(self, rows: Seq[Sequence]) -> int:
        """Token slots the padded frame needs at most with these rows: rows x (width + longest remaining run)."""
        if not rows:
            return 0
        by_seq = {id(r.seq): r for r in self.rows}
        width = self.mask.shape[1] if self.mask is not None and self.rows else 0
        spans = []
        for seq in rows:
            row = by_seq.get(id(seq))
            if row is None:  # joining: its prompt lands right-aligned in the frame
                width = max(width, len(seq.prepared))
                spans.append(int(seq.params.max_new_tokens))
            else:
                spans.append(row.max_new - len(row.tokens))
        return len(rows) * (width + max(spans))

    # ---- one step --------------------------------------------------------------------------------------------
    def step(self, joining: Seq[Sequence], leaving: Seq[Sequence]) -> list[Output]:
        torch = self.torch
        if leaving:
            self._drop({id(s) for s in leaving})
        with torch.inference_mode():
            tokens: list[int] = []
            if self.rows:
                tokens += self._decode_tokens()
            if joining:
                before = len(self.rows)
                logits = self._prefill(joining)
                tokens += self._sample(logits, self.rows[before:])
        if not tokens:
            return []
        outputs: list[Output] = []
        self._fed(tokens)
        self._look_ahead()  # where the runner can, the next step runs on the device while this one is booked
        reasons = [self._take(row, token) for row, token in zip(self.rows, tokens, strict=True)]
        deltas = self._detokenize(
            [r is not None or len(row.tokens) >= row.max_new for row, r in zip(self.rows, reasons, strict=True)]
        )
        for row, reason, delta in zip(self.rows, reasons, deltas, strict=True):
            outputs.extend(self._advance(row, reason, delta))
        return outputs

    def _decode_tokens(self) -> list[int]:
        """One decode step of every running row: the token each samples."""
        return self._sample(self._decode(), self.rows)

    def _sample(self, logits: Any, rows: list[Row]) -> list[int]:
        """Grammar masks (where rows have one), then each row's own sampling."""
        scores = logits.float()
        constraints = [row.constraint for row in rows]
        if any(c is not None for c in constraints):
            if self.mask_batch is not None:
                self.mask_batch(constraints, scores)
            else:
                for index, constraint in enumerate(constraints):
                    if constraint is not None:
                        constraint.mask_logits(scores[index])
        return sample_rows(scores, rows)

    def _look_ahead(self) -> None:
        """Start the next decode step before this step's tokens are booked (a runner that can: SlotRunner)."""

    def _fed(self, tokens: list[int]) -> None:
        """The tokens just sampled (one per row, in row order): what each row feeds at the next step."""
        self.next_tokens = self.torch.tensor(tokens, dtype=self.torch.long, device=self.device)

    def _forward(self, input_ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_arg: cache},
        )
        return out.logits[:, -1, :]

    def _decode(self) -> Any:
        torch = self.torch
        ones = torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        logits = self._forward(self.next_tokens[:, None], self.mask, self.positions[:, None], self.cache)
        self.positions = self.positions + 1
        return logits

    def _prefill(self, joining: Seq[Sequence]) -> Any:
        torch = self.torch
        from transformers import DynamicCache

        width = max(len(s.prepared) for s in joining)
        ids = torch.full((len(joining), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(joining), width), dtype=torch.long)
        for i, seq in enumerate(joining):
            n = len(seq.prepared)
            ids[i, width - n :] = torch.tensor(seq.prepared, dtype=torch.long)
            mask[i, width - n :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self._forward(ids, mask, positions, cache)
        self._merge(cache, mask, mask.sum(-1))
        self.rows.extend(self._new_row(seq) for seq in joining)
        return logits

    def _new_row(self, seq: Sequence) -> Row:
        params = seq.params
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        # On the host on every device: the same seed draws the same numbers on any accelerator, and a CUDA-graph
        # step can take the draws as an input (generators.engine.sampling).
        generator = row_generator(int(seed))
        constraint = self._constraints.pop(seq, None)
        return Row(
            seq=seq,
            prompt=list(seq.prepared),
            max_new=int(params.max_new_tokens),
            temperature=float(params.temperature),
            top_p=float(params.top_p),
            generator=generator,
            stop=tuple(getattr(params, "stop", None) or ()),
            constraint=constraint,
        )

    # ---- the frame -------------------------------------------------------------------------------------------
    def _layers(self, cache: Any) -> list[Any]:
        return list(cache.layers)

    def _merge(self, cache: Any, mask: Any, positions: Any) -> None:
        """Pad the frame or the newcomers' cache on the left to one width, then stack them as more rows."""
        torch = self.torch
        if not self.rows:
            self.cache, self.mask, self.positions = cache, mask, positions
            return
        old_width, new_width = self.mask.shape[1], mask.shape[1]
        width = max(old_width, new_width)

        def pad(t: Any, by: int, dim: int) -> Any:
            if by == 0:
                return t
            shape = list(t.shape)
            shape[dim] = by
            return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)

        for old, new in zip(self._layers(self.cache), self._layers(cache), strict=True):
            old.keys = torch.cat([pad(old.keys, width - old_width, 2), pad(new.keys, width - new_width, 2)])
            old.values = torch.cat([pad(old.values, width - old_width, 2), pad(new.values, width - new_width, 2)])
        self.mask = torch.cat([pad(self.mask, width - old_width, 1), pad(mask, width - new_width, 1)])
        self.positions = torch.cat([self.positions, positions])
        self.next_tokens = torch.cat([self.next_tokens, torch.zeros_like(positions)])  # overwritten by sampling

    def reset(self) -> None:
        self.rows, self.cache, self.mask, self.positions, self.next_tokens = [], None, None, None, None

    def _drop(self, leaving: set[int]) -> None:
        torch = self.torch
        keep = [i for i, row in enumerate(self.rows) if id(row.seq) not in leaving]
        if not keep:
            self.reset()
            return
        if len(keep) == len(self.rows):
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.rows = [self.rows[i] for i in keep]
        self.mask = self.mask.index_select(0, index)
        # Columns that are padding in every remaining row are dropped: the frame shrinks with its longest row.
        real = self.mask.any(dim=0).nonzero()
        start = int(real[0]) if len(real) else 0
        self.mask = self.mask[:, start:]
        for layer in self._layers(self.cache):
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]
        self.positions = self.positions.index_select(0, index)
        self.next_tokens = self.next_tokens.index_select(0, index)

    # ---- per-row bookkeeping ---------------------------------------------------------------------------------
    def _take(self, row: Row, token: int) -> str | None:
        """Record one sampled token; "stop" when it ends the row (an end token, or a complete grammar)."""
        if token in self.stop_token_ids:
            return "stop"
        row.tokens.append(token)
        if row.constraint is not None:
            row.constraint.accept(token)
            if row.constraint.is_finished():
                return "stop"
        return None

    def _advance(self, row: Row, reason: str | None, delta: str) -> list[Output]:
        """Emit the stable text delta of one step, and the outcome when the row is done."""
        seq = row.seq
        # NUL cannot be stored (PostgreSQL text): the stream and the result get the same replacement character.
        row.pending += delta.replace("\x00", "\ufffd")
        cut = _stop_at(row.pending, row.stop)
        if cut is not None:
            row.pending, reason = row.pending[:cut], "stop"
        if reason is None and len(row.tokens) >= row.max_new:
            reason = "length"
        hold = 0 if reason else max((len(s) - 1 for s in row.stop), default=0)
        emit = row.pending[: len(row.pending) - hold] if hold else row.pending
        outputs = []
        decile = 10 * len(row.tokens) // row.max_new
        if decile > row.decile and reason is None:
            row.decile = decile
            outputs.append(Output(seq, progress=(decile / 10, f"{len(row.tokens)}/{row.max_new} tokens")))
        if emit:
            outputs.append(Output(seq, token=(row.events, emit)))
            row.events += 1
            row.text += emit
            row.pending = row.pending[len(emit) :]
        if reason is None:
            return outputs
        row.done = True
        if row.constraint is not None and reason == "length" and not row.constraint.is_finished():
            outcome: GenerationResult | GeneratorError = GeneratorError(
                f"the output did not complete its schema within `max_new_tokens` ({row.max_new}); raise it",
                code="structured_output_truncated",
            )
        else:
            outcome = GenerationResult(
                text=row.text,
                metadata={
                    **self.metadata(seq.params),
                    "prompt_tokens": len(row.prompt),
                    "completion_tokens": len(row.tokens),
                    "finish_reason": reason,
                },
            )
        outputs.append(Output(seq, outcome=outcome))
        return outputs

    def _detokenize(self, finals: list[bool]) -> list[str]:
        """The text each row's new token adds (TGI's incremental detokenizer: decode a short window and hold a
        split multi-byte character back unless the row is final), all rows decoded in one tokenizer call."""
        windows = []
        for row in self.rows:
            windows += [row.tokens[row.prefix_offset : row.read_offset], row.tokens[row.prefix_offset :]]
        texts = self._batch_decode(windows)
        deltas = []
        for index, (row, final) in enumerate(zip(self.rows, finals, strict=True)):
            prefix, full = texts[2 * index], texts[2 * index + 1]
            if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
                row.prefix_offset, row.read_offset = row.read_offset, len(row.tokens)
                deltas.append(full[len(prefix) :])
            else:
                deltas.append("")
        return deltas


def _batch_decoder(tokenizer: Any) -> Callable[[list[list[int]]], list[str]]:
    """`tokenizer.batch_decode(windows, skip_special_tokens=True)`, straight through a fast tokenizer's Rust
    backend where that gives the same text: transformers' own path walked every window in Python first
    (`to_py_obj`, per-window `decode`), a tenth of an engine step's CPU with the tiny model. The same text is
    checked here on a probe of the vocabulary (a tokenizer whose `decode` cleans up spaces, say, fails it and
    keeps transformers' path)."""

    def slow(windows: list[list[int]]) -> list[str]:
        return tokenizer.batch_decode(windows, skip_special_tokens=True)

    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None:
        return slow

    def fast(windows: list[list[int]]) -> list[str]:
        return backend.decode_batch(windows, skip_special_tokens=True)

    size = len(tokenizer)
    probe = [list(range(start, min(size, start + 48))) for start in range(0, size, max(48, size // 256))]
    probe += [[i, (i * 7 + 3) % size, (i * 13 + 5) % size] for i in range(min(size, 512))]
    try:
        same = fast(probe) == slow(probe)
    except Exception:  # noqa: BLE001 - an unusual backend: keep transformers' path
        same = False
    return fast if same else slow


def _stop_at(text: str, stops: tuple[str, ...]) -> int | None:
    found = [text.find(s) for s in stops if s and s in text]
    return min(found) if found else None
