"""The paths the engine bench measures outside the stack: the plugin's own batch, its engine in-process, and
transformers' `generate`; the random Llama-3.2-1B-shaped model of the GPU run; the figures file."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generators.base import BatchItem  # noqa: E402
from generators.testing.tiny_models import build_tiny_text_model  # noqa: E402
from generators.text_transformers import TextGenerator  # noqa: E402


def median_of(samples: list[float]) -> float:
    return statistics.median(samples)


class DirectEngine:
    """The plugin's runner in a StepEngine of this process, with no stack around it, built as the worker builds
    its engine (KV budget from the hardware module) and kept across measurements (its CUDA graphs too)."""

    def __init__(self, generator: TextGenerator, max_rows: int = 64) -> None:
        from generators.engine.loop import StepEngine
        from hardware.kv import kv_budget_tokens

        self.generator = generator
        self.first: dict[str, float] = {}
        runner = generator.create_runner()
        budget = kv_budget_tokens(generator.device.device, runner.kv_bytes_per_token())
        self.engine = StepEngine(runner, budget_tokens=budget, max_rows=max_rows, emit=self._emit, name="direct")

    def _emit(self, outputs: list) -> None:
        now = time.perf_counter()
        for out in outputs:
            if out.token is not None:
                self.first.setdefault(out.seq.id, now)

    def run(self, params: list[dict]) -> tuple[float, list[float], int]:
        """(wall seconds, each job's seconds to its first token, tokens) for jobs submitted together."""
        from generators.engine.sequence import Sequence

        self.first.clear()
        start = time.perf_counter()
        validated = [self.generator.validate_params(p) for p in params]
        seqs = [
            self.engine.submit(Sequence(id=str(i), params=v, steps=self.generator.expected_steps(v)))
            for i, v in enumerate(validated)
        ]
        results = [seq.future.result(600) for seq in seqs]
        wall = time.perf_counter() - start
        return wall, [self.first[str(i)] - start for i in range(len(seqs))], tokens_of(results)


def tokens_of(results: list) -> int:
    return sum(r.metadata["completion_tokens"] for r in results)


def engine_counters(base: str) -> dict[str, float]:
    """The text engine's cumulative counters from /metrics, summed over workers."""
    names = (
        "aigc_engine_steps",
        "aigc_engine_rows_stepped",
        "aigc_engine_step_seconds",
        "aigc_engine_prefill_steps",
        "aigc_engine_prefill_step_seconds",
        "aigc_engine_emit_seconds",
        "aigc_engine_loop_seconds",
    )
    totals = dict.fromkeys(names, 0.0)
    for line in requests.get(f"{base}/metrics", timeout=30).text.splitlines():
        name = line.split("{", 1)[0]
        if name in totals and 'generator="transformers-text"' in line:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


class Figures(dict):
    """The figures, also written to a JSON file as each is taken (a run cut short still leaves what it measured)."""

    def __init__(self, path: Path | None) -> None:
        super().__init__()
        self.path = path

    def __setitem__(self, key: str, value: float) -> None:
        super().__setitem__(key, value)
        print(f"  {key}: {value:.4f}", flush=True)
        if self.path is not None:
            self.path.write_text(json.dumps(self, indent=1))


def build_llama_1b(path: Path) -> Path:
    """Random bf16 weights in Llama-3.2-1B's shape (hidden 2048, 16 layers, 32/8 heads, vocab 128256, tied), with
    the tiny trained tokenizer grown to the same vocabulary by plain added words (` w1234`), so every sampled id
    decodes to text and streams as a token event."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tiny = build_tiny_text_model(path.parent / "tiny-text")
    config = LlamaConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = None
    model.save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.add_tokens([f" w{i}" for i in range(len(tokenizer), config.vocab_size)])
    tokenizer.save_pretrained(path)
    del model
    return path


def raw_rate(generator: TextGenerator, batch: list[BatchItem], repeats: int) -> float:
    """Tokens/s of the plugin's own `generate_batch` over `batch` (after one warm-up pass)."""
    generator.generate_batch(batch)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        results = generator.generate_batch(batch)
        rates.append(tokens_of(results) / (time.perf_counter() - start))
    return median_of(rates)


def hf_generate_rate(
    generator: TextGenerator, batch: list[BatchItem], repeats: int, n_new: int, *, static: bool = False
) -> float:
    """transformers' own `generate` on the same left-padded batch (sampling): a reference point. `static`: its
    static KV cache, which transformers compiles with torch.compile (the issue's best raw configuration)."""
    import torch

    ids = [generator._input_ids(item.params) for item in batch]
    width = max(map(len, ids))
    pad = generator.tokenizer.pad_token_id
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, each in enumerate(ids):
        input_ids[row, width - len(each) :] = torch.tensor(each)
        mask[row, width - len(each) :] = 1
    kwargs = {
        "attention_mask": mask,
        "max_new_tokens": n_new,
        "min_new_tokens": n_new,
        "do_sample": True,
        "temperature": 0.8,
        "top_p": 0.95,
        "pad_token_id": pad,
    }
    if static:
        kwargs["cache_implementation"] = "static"
    input_ids, kwargs["attention_mask"] = input_ids.to(generator.model.device), mask.to(generator.model.device)
    # transformers as it comes: its own SDPA, not the slot runner's folded decode attention the model may be on.
    attention = generator.model.config._attn_implementation
    if attention != "sdpa":
        generator.model.set_attn_implementation("sdpa")
    try:
        with torch.inference_mode():
            generator.model.generate(input_ids, **kwargs)
            rates = []
            for _ in range(repeats):
                start = time.perf_counter()
                generator.model.generate(input_ids, **kwargs)
                rates.append(len(ids) * n_new / (time.perf_counter() - start))
    finally:
        if attention != "sdpa":
            generator.model.set_attn_implementation(attention)
    return median_of(rates)


def release_device_memory() -> None:
    """Give cached accelerator memory back (a dropped runner's KV slots), so the next runner sizes from it."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def process_cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each named process has used, its descendants included (gunicorn's workers,
    redis); read from /proc, so on other systems the figure is simply absent ({})."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        parent[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick

    def tree(pid: int) -> float:
        return used.get(pid, 0.0) + sum(tree(child) for child, up in parent.items() if up == pid)

    return {name: tree(pid) for name, pid in roots.items()}


def rate_beside_busy_threads(
    engine: DirectEngine, params: list[dict], threads: int, duty: float, repeats: int
) -> float:
    """The in-process engine's tokens/s while `threads` Python threads each hold the GIL `duty` of every
    millisecond, as a worker's task threads, Celery's consumer and the event publisher do with their ORM, Redis
    and Celery work (pure Python between torch ops, which the engine thread must wait for at every op)."""
    import threading

    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            while time.perf_counter() - start < 0.001 * duty:
                sum(range(200))
            time.sleep(0.001 * (1 - duty) + 1e-6)

    workers = [threading.Thread(target=busy, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        rates = []
        for _ in range(repeats):
            wall, _, count = engine.run(params)
            rates.append(count / wall)
        return median_of(rates)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
