"""The runner for accelerators: each row's keys and values in a fixed slot of one preallocated cache, and decode
steps replayed from CUDA graphs.

The left-padded frame of `CausalLMRunner` grows its tensors by concatenation every step and launches every kernel
of the model from Python: on a GPU a 1B model's decode step is then bound by launch overhead, not by the chip
(issue 8 measured 79 tokens/s for one job against 343 with a static cache). Here, as in vLLM and TGI:

- The cache is allocated once, `slots` rows of `row_tokens` positions per layer (sized from the hardware module's
  KV budget). A joining row is prefilled on its own (eagerly: prompts vary in length) and its keys and values are
  copied into a free slot; a leaving row frees its slot. Nothing is concatenated or cut.
- A decode step feeds one token per slot: each row writes its new key and value at its own length, attends to the
  first `width` positions under a 4-D mask that hides what it has not written, and its RoPE position is its length.
  Rows keep their own positions, so a row can join or leave at any step.
- The step's shapes are bucketed (rows up to the highest occupied slot, width up to the longest row, each rounded
  up to a power of two), so a few CUDA graphs, captured on first use, serve every batch: a replay launches the whole
  model at once. On the CPU and MPS the same code runs eagerly (`graphs=False`); the tests run it there.

Everything else (sampling, stop strings, grammar, detokenization, events) is `CausalLMRunner`'s.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence as Seq
from typing import Any

from generators.engine.attention import use_folded_decode
from generators.engine.causal_lm import CausalLMRunner, Row
from generators.engine.sampling import draws, pick
from generators.engine.sequence import Sequence
from generators.errors import GeneratorError

log = logging.getLogger(__name__)

MIN_WIDTH = 64  # the narrowest attention window a decode step is bucketed to
WARM_WIDTH = 512  # graphs up to this width are captured when the cache is allocated; wider ones on first use


def _bucket(n: int, cap: int, floor: int = 1) -> int:
    """The smallest power of two >= n (at least `floor`), at most `cap`."""
    size = floor
    while size < n:
        size *= 2
    return min(size, cap)


def _slot_cache_class() -> type:
    from transformers import Cache

    class SlotCache(Cache):
        """Keys and values of `slots` rows, one tensor per layer: (slots, kv_heads, row_tokens, head_dim).

        `view` sets what the next forward sees: the first `rows` slots, the first `width` positions, and where each
        row writes (its length). transformers' attention calls `update` with one new token per row."""

        def __init__(
            self, layers: int, slots: int, row_tokens: int, heads: int, head_dim: int, dtype: Any, device: Any
        ):
            import torch

            super().__init__(layers=[])
            shape = (slots, heads, row_tokens, head_dim)
            self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
            self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
            self.rows, self.width = slots, row_tokens
            self.at: Any = None  # (rows,) write position of each row
            self.index: Any = None  # (rows,) 0..rows-1

        def view(self, rows: int, width: int, at: Any, index: Any) -> None:
            self.rows, self.width, self.at, self.index = rows, width, at, index

        def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any) -> Any:
            keys, values = self.keys[layer_idx][: self.rows], self.values[layer_idx][: self.rows]
            keys[self.index, :, self.at] = key_states[:, :, -1]
            values[self.index, :, self.at] = value_states[:, :, -1]
            return keys[:, :, : self.width], values[:, :, : self.width]

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return 0

    return SlotCache


class SlotRunner(CausalLMRunner):
    """A `CausalLMRunner` whose rows live in fixed cache slots; decode steps run as CUDA graphs where `graphs`."""

    def __init__(self, *args: Any, row_tokens: int, graphs: bool = False, fold_gqa: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Decode attention over grouped key/value heads without repeating them per query head
        # (generators.engine.attention); switched on when the cache is allocated, False if the model cannot take it.
        self.fold_gqa = bool(fold_gqa)
        self.row_tokens = int(row_tokens)  # positions of one slot: the longest prompt + max_new_tokens it holds
        self.graphs = bool(graphs) and str(self.device).startswith("cuda")
        # Sampling inside the decode step (one graph from token in to token out), for steps whose rows have no
        # grammar; on by default with graphs, and testable eagerly on the CPU.
        self.fused = self.graphs
        self.look_ahead = self.graphs  # start step n+1 before step n is booked (see `_look_ahead`)
        self._ahead: tuple[Any, dict[int, int]] | None = None
        self._device_fed = 0  # leading rows whose next input this step's device sampling already wrote
        self._index_key: tuple[int, ...] | None = None
        self._index_tensor: Any = None
        self.slots = 0
        self.kv: Any = None
        self.free: list[int] = []
        self.slot_of: dict[int, int] = {}  # id(row) -> slot
        self.length: list[int] = []  # per slot: positions written (mirrors `lengths` on the device)
        self._graphs: dict[tuple[int, int, bool], tuple[Any, Any]] = {}
        self._pool: Any = None
        self.graph_error: str | None = None  # why graphs were given up, if they were

    # ---- sizing ----------------------------------------------------------------------------------------------
    def reserve(self, budget_tokens: int, max_rows: int) -> int:
        """Size the slots from the KV budget (token positions) and the row cap; returns the budget actually used."""
        if self.kv is not None:
            return self.slots * self.row_tokens
        if budget_tokens < self.row_tokens:
            self.row_tokens = max(1, int(budget_tokens))
        self.slots = max(1, min(int(max_rows), int(budget_tokens) // self.row_tokens))
        return self.slots * self.row_tokens

    def _sized(self) -> None:
        """Size the slots from the device's KV budget if no engine did (the plugin's direct passes)."""
        if not self.slots:
            from hardware.kv import kv_budget_tokens

            self.reserve(kv_budget_tokens(str(self.device), self.kv_bytes_per_token()), 64)

    def free_rows(self) -> int:
        """How many more rows can join now (the direct pass admits its items as slots free up)."""
        self._sized()
        return len(self.free) if self.kv is not None else self.slots - len(self.rows)

    def prepare(self, seq: Sequence) -> None:
        super().prepare(seq)
        self._sized()  # a job is checked against the slot it will get, not a default
        if seq.cost > self.row_tokens:
            raise GeneratorError(
                f"the prompt and `max_new_tokens` need {seq.cost} KV-cache positions, over this engine's "
                f"{self.row_tokens} per job; shorten the prompt or lower `max_new_tokens`",
                code="context_exceeds_kv_budget",
            )

    def footprint(self, rows: Seq[Sequence]) -> int:
        return len(rows) * self.row_tokens

    def _allocate(self) -> None:
        torch = self.torch
        self._sized()
        if self.fold_gqa:
            self.fold_gqa = use_folded_decode(self.model)
        config = self.model.config
        config = getattr(config, "text_config", None) or config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.kv = _slot_cache_class()(
            config.num_hidden_layers, self.slots, self.row_tokens, heads, head_dim, self.model.dtype, self.device
        )
        self.lengths = torch.zeros(self.slots, dtype=torch.long, device=self.device)
        self.inputs = torch.full((self.slots, 1), self.pad_id, dtype=torch.long, device=self.device)
        self.index = torch.arange(self.slots, device=self.device)
        self.positions_all = torch.arange(self.row_tokens, device=self.device)
        self.temperature = torch.zeros(self.slots, dtype=torch.float32, device=self.device)
        self.top_p = torch.ones(self.slots, dtype=torch.float32, device=self.device)
        self.uniform = torch.zeros(self.slots, dtype=torch.float32, device=self.device)
        self.free = list(range(self.slots))
        self.length = [0] * self.slots
        self._mask_min = torch.finfo(self.model.dtype).min
        if self.graphs:
            self._warm()

    def _warm(self) -> None:
        """Capture the common decode shapes now, while no row waits on it (vLLM captures at start-up too)."""
        import time

        started = time.perf_counter()
        rows = 1
        while True:
            width = MIN_WIDTH
            while width <= min(WARM_WIDTH, self.row_tokens) and self.graphs:
                self._graph(rows, width, self.fused)
                width *= 2
            if rows >= self.slots or not self.graphs:
                break
            rows = min(rows * 2, self.slots)
        log.info("captured %d decode graphs in %.1f s", len(self._graphs), time.perf_counter() - started)

    # ---- one step --------------------------------------------------------------------------------------------
    def step(self, joining: Seq[Sequence], leaving: Seq[Sequence]) -> list[Any]:
        # The slots are inference tensors: every update of them (leaving, feeding) happens in inference mode.
        with self.torch.inference_mode():
            if self.kv is None:
                self._allocate()
            return super().step(joining, leaving)

    def _slots_of_rows(self) -> Any:
        """The slot of each running row, in row order, as a device tensor (kept while the rows stay the same)."""
        slots = tuple(self.slot_of[id(r)] for r in self.rows)
        if self._index_key != slots:
            self._index_key = slots
            self._index_tensor = self.torch.tensor(slots, dtype=self.torch.long, device=self.device)
        return self._index_tensor

    def _can_fuse(self) -> bool:
        return self.fused and not any(row.constraint is not None for row in self.rows)

    def _decode_tokens(self) -> list[int]:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            # Started at the end of the last step, for every row that ran then; the rows that left since took
            # their slots' extra token with them, and rows join only after this.
            tokens, slot_map = ahead
            index = self.torch.tensor([slot_map[id(r)] for r in self.rows], dtype=self.torch.long, device=self.device)
            self._device_fed = len(self.rows)
            return tokens.index_select(0, index).tolist()
        if not self._can_fuse():
            return super()._decode_tokens()  # logits out, grammar masks and sampling on the host side
        tokens = self._fused_step().index_select(0, self._slots_of_rows()).tolist()  # the step's one device read
        self._device_fed = len(self.rows)
        return tokens

    def _fused_step(self) -> Any:
        index = self._slots_of_rows()
        self.uniform[index] = self.torch.tensor(draws(self.rows), dtype=self.torch.float32, device=self.device)
        return self._step_slots(fused=True)

    def _look_ahead(self) -> None:
        """vLLM's asynchronous scheduling: the sampled tokens are already where the next step reads its input, so
        the next step is launched now and the device decodes while the host books this step (detokenizes, checks
        stops, emits). A row this step ends gets one extra token, dropped with its slot. Only for fused steps
        (no grammar row, whose mask needs this step's tokens on the host); on by default with graphs."""
        if not (self.look_ahead and self.rows and self._can_fuse()):
            return
        tokens = self._fused_step()
        self._ahead = (tokens, {id(r): self.slot_of[id(r)] for r in self.rows})

    def _decode(self) -> Any:
        return self._step_slots(fused=False).index_select(0, self._slots_of_rows())

    def _step_slots(self, fused: bool) -> Any:
        """Run the decode step over the bucket that covers every running row; each row's length grows by one."""
        slots = [self.slot_of[id(r)] for r in self.rows]
        rows = _bucket(max(slots) + 1, self.slots)
        width = _bucket(max(self.length[s] for s in slots) + 1, self.row_tokens, MIN_WIDTH)
        out = self._run(rows, width, fused)
        index = self._slots_of_rows()
        self.lengths.index_add_(0, index, self.torch.ones_like(index))
        for s in slots:
            self.length[s] += 1
        return out

    def _body(self, rows: int, width: int, fused: bool) -> Any:
        """The decode step of slots [0, rows) over positions [0, width): logits, or (fused) the sampled tokens,
        which are also written where the next step reads its input."""
        torch = self.torch
        at = self.lengths[:rows]
        self.kv.view(rows, width, at, self.index[:rows])
        visible = self.positions_all[:width][None, :] <= at[:, None]
        mask = torch.where(visible, 0.0, self._mask_min).to(self.model.dtype)[:, None, None, :]
        logits = self._forward(self.inputs[:rows], mask, at[:, None], self.kv)
        if not fused:
            return logits
        tokens = pick(logits.float(), self.temperature[:rows], self.top_p[:rows], self.uniform[:rows])
        self.inputs[:rows, 0] = tokens
        return tokens

    def _run(self, rows: int, width: int, fused: bool) -> Any:
        entry = self._graph(rows, width, fused) if self.graphs else None
        if entry is None:
            return self._body(rows, width, fused)
        graph, out = entry
        graph.replay()
        return out

    def _graph(self, rows: int, width: int, fused: bool) -> tuple[Any, Any] | None:
        entry = self._graphs.get((rows, width, fused))
        if entry is None:
            try:
                entry = self._capture(rows, width, fused)
            except Exception as exc:  # noqa: BLE001 - a model that cannot be captured still decodes, eagerly
                log.warning("CUDA graph capture failed (%s: %s); decoding eagerly", type(exc).__name__, exc)
                self.graph_error = f"{type(exc).__name__}: {exc}"
                self.graphs = False
                self._graphs.clear()
                return None
            self._graphs[(rows, width, fused)] = entry
        return entry

    def _capture(self, rows: int, width: int, fused: bool) -> tuple[Any, Any]:
        """Run the shapes once on a side stream, then capture. The run writes keys and values where this step
        writes anyway, and the inputs it overwrites (fused) are put back."""
        torch = self.torch
        inputs = self.inputs.clone()
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self._body(rows, width, fused)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._body(rows, width, fused)
        self.inputs.copy_(inputs)
        return graph, out

    def _prefill(self, joining: Seq[Sequence]) -> Any:
        torch = self.torch
        from transformers import DynamicCache

        lengths = [len(s.prepared) for s in joining]
        width = max(lengths)
        ids = torch.full((len(joining), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(joining), width), dtype=torch.long)
        for i, seq in enumerate(joining):
            ids[i, width - lengths[i] :] = torch.tensor(seq.prepared, dtype=torch.long)
            mask[i, width - lengths[i] :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache()
        logits = self._forward(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), cache)
        # Each row's real positions (right-aligned in the prefill) go to the start of its own slot.
        if len(joining) > len(self.free):  # the engine's scheduler never asks this; a direct pass too large might
            raise GeneratorError(
                f"{len(joining)} jobs joined but only {len(self.free)} of {self.slots} KV-cache slots are free",
                code="context_exceeds_kv_budget",
            )
        slots = [heapq.heappop(self.free) for _ in joining]
        src_rows = torch.repeat_interleave(torch.arange(len(joining)), torch.tensor(lengths)).to(self.device)
        src_cols = torch.cat([torch.arange(width - n, width) for n in lengths]).to(self.device)
        dst_slots = torch.repeat_interleave(torch.tensor(slots), torch.tensor(lengths)).to(self.device)
        dst_cols = torch.cat([torch.arange(n) for n in lengths]).to(self.device)
        for layer, (keys, values) in enumerate(zip(self.kv.keys, self.kv.values, strict=True)):
            source = cache.layers[layer]
            keys[dst_slots, :, dst_cols] = source.keys[src_rows, :, src_cols]
            values[dst_slots, :, dst_cols] = source.values[src_rows, :, src_cols]
        index = torch.tensor(slots, dtype=torch.long, device=self.device)
        self.lengths[index] = torch.tensor(lengths, dtype=torch.long, device=self.device)
        params = [s.params for s in joining]
        self.temperature[index] = torch.tensor([float(p.temperature) for p in params], device=self.device)
        self.top_p[index] = torch.tensor([float(p.top_p) for p in params], device=self.device)
        for seq, slot, n in zip(joining, slots, lengths, strict=True):
            row = self._new_row(seq)
            self.slot_of[id(row)] = slot
            self.length[slot] = n
            self.rows.append(row)
        return logits

    def _fed(self, tokens: list[int]) -> None:
        """The sampled tokens (one per row, in row order) are what each row's slot feeds next. A step sampled on the
        device already wrote its decoding rows' tokens there: only the rows that joined after it are written."""
        done, self._device_fed = self._device_fed, 0
        if done >= len(tokens):
            return
        torch = self.torch
        slots = [self.slot_of[id(r)] for r in self.rows[done:]]
        index = torch.tensor(slots, dtype=torch.long, device=self.device)
        self.inputs[index, 0] = torch.tensor(tokens[done:], dtype=torch.long, device=self.device)

    # ---- leaving ---------------------------------------------------------------------------------------------
    def _release(self, rows: list[Row]) -> None:
        if not rows:
            return
        slots = [self.slot_of.pop(id(r)) for r in rows]
        self.lengths[self.torch.tensor(slots, dtype=self.torch.long, device=self.device)] = 0
        for slot in slots:
            self.length[slot] = 0
            heapq.heappush(self.free, slot)

    def _drop(self, leaving: set[int]) -> None:
        gone = [r for r in self.rows if id(r.seq) in leaving]
        self.rows = [r for r in self.rows if id(r.seq) not in leaving]
        if not self.rows:
            self._ahead = None  # nobody is left to take the step that ran ahead
        self._release(gone)

    def reset(self) -> None:
        self._ahead, self._device_fed = None, 0
        rows, self.rows = self.rows, []
        if self.kv is not None:
            with self.torch.inference_mode():
                self._release(rows)
