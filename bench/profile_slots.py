"""Where a SlotRunner decode step's device time goes: kernel totals of one bucketed step, eager and replayed.

python bench/profile_slots.py [--small]     (--small: a tiny shape, to check the script on a CPU)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from generators.engine.attention import use_folded_decode
    from generators.engine.sequence import Sequence
    from generators.engine.slots import SlotRunner
    from generators.testing.tiny_models import build_tiny_text_model
    from generators.text_transformers import TextParams

    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dims = (
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        if args.small
        else dict(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
        )
    )
    config = LlamaConfig(vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=131072, **dims)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if cuda else torch.float32).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_text_model(Path("/tmp/profile-tiny")))
    runner = SlotRunner(
        model,
        tokenizer,
        encode=lambda p: tokenizer(p.prompt)["input_ids"],
        stop_token_ids=set(),
        metadata=lambda p: {},
        row_tokens=1024,
        graphs=cuda,
        fold_gqa=False,  # first as transformers' SDPA runs it (keys and values repeated per query head), below
    )
    runner.reserve(64 * 1024, 64)
    seqs = [
        Sequence(id=str(i), params=TextParams(prompt="bakery mug " * (5 + i), max_new_tokens=512)) for i in range(32)
    ]
    for seq in seqs:
        runner.prepare(seq)
    runner.step(seqs, [])  # allocate (captures), prefill the 32 rows
    for _ in range(100):
        runner.step([], [])  # rows ~150 tokens long: width bucket 256
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed(fn, n=30):
        fn()
        sync()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return (time.perf_counter() - start) / n * 1000

    width = 256
    with torch.inference_mode():
        saved = runner.inputs.clone(), runner.lengths.clone()
        eager_fused = timed(lambda: runner._body(32, width, True))
        eager_logits = timed(lambda: runner._body(32, width, False))
        print(f"eager body, 32 rows, width {width}: fused {eager_fused:.2f} ms, logits only {eager_logits:.2f} ms")
        if cuda:
            for fold in (False, True):  # the same shapes captured without and with the folded decode attention
                if fold:
                    runner.fold_gqa = use_folded_decode(model)
                    print(f"folded decode attention in use: {runner.fold_gqa}")
                    runner._graphs.clear()
                label = "folded GQA" if fold else "SDPA as transformers runs it"
                graph, _ = runner._graph(32, width, True)
                print(f"graph replay, fused, {label}: {timed(graph.replay):.2f} ms")
                graph, _ = runner._graph(32, width, False)
                print(f"graph replay, logits only, {label}: {timed(graph.replay):.2f} ms")
        else:
            runner.fold_gqa = use_folded_decode(model)
        step = timed(lambda: runner.step([], []), n=20)
        print(f"whole runner.step (look-ahead {runner.look_ahead}, folded {runner.fold_gqa}): {step:.2f} ms")
        # Where the host's share of a whole step goes (the device read waits show as `tolist`).
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(20):
            runner.step([], [])
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(16)
        print("host profile of 20 whole steps:\n" + "\n".join(text.getvalue().splitlines()[4:]))
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
        with profile(activities=activities) as prof:
            for _ in range(5):
                runner._body(32, width, True)
            sync()
        sort = "cuda_time_total" if cuda else "cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=18, max_name_column_width=70))
        runner.inputs.copy_(saved[0])


if __name__ == "__main__":
    main()
