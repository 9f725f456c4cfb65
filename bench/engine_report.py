"""The serving bench's report: every figure of one run of bench_engine.py, side by side, then as JSON."""

from __future__ import annotations

import json
import os


def report(f: dict[str, float], model: str, device: str, n_new: int) -> None:
    print(f"serving engine, model {model}, device {device}, {os.cpu_count()} cores")
    print(f"A. throughput, 32 jobs x {n_new} new tokens (tokens/s)")
    print(f"   raw plugin batch of 32 (generate_batch):      {f['raw_batch32']:9.0f}   single {f['raw_single']:.0f}")
    for key, label in (
        ("raw_batch32_frame", "... with the left-padded frame runner:"),
        ("raw_batch32_slots_eager", "... with slots, no CUDA graphs:      "),
        ("raw_batch32_no_look_ahead", "... graphs, no look-ahead step:      "),
        ("raw_batch32_unfolded", "... decode attention as SDPA runs it:"),
    ):
        if key in f:
            single = f[key.replace("batch32", "single")]
            print(f"   {label}         {f[key]:9.0f}   single {single:.0f}")
    print(f"   the engine loop in-process, 32 submitted at once: {f['engine_batch32']:6.0f}")
    print(f"   transformers generate(), same batch:          {f['hf_generate_batch32']:9.0f}")
    if "hf_static_compile_batch32" in f:
        print(
            f"   transformers generate(), static cache+compile: {f['hf_static_compile_batch32']:8.0f}   "
            f"single {f['hf_static_compile_single']:.0f}"
        )
        best = max(f["hf_static_compile_batch32"], f["raw_batch32"])
        print(
            f"   stack 32 concurrent / best raw batch of 32:    {f['stack_32_concurrent'] / best:.2f}x (GPU target >= 0.8)"
        )
    print(f"   stack single job: {f['stack_single_job']:.0f} tokens/s (GPU target >= 316, 4x the issue's 79)")
    print(f"   stack, one job at a time:                      {f['stack_one_at_a_time']:9.0f}")
    print(
        f"   stack, 32 concurrent clients:                  {f['stack_32_concurrent']:9.0f}   "
        f"{f['stack_32_concurrent'] / f['stack_one_at_a_time']:.2f}x one-at-a-time (target >= 6), "
        f"{f['stack_32_concurrent'] / f['raw_batch32']:.2f}x raw batch (target >= 0.6)"
    )
    if "stack_32_mean_step_ms" in f:
        print(
            f"   ... the worker's engine meanwhile: {f['stack_32_steps_per_run']:.0f} steps a run, "
            f"{f['stack_32_mean_rows_per_step']:.1f} rows and {f['stack_32_mean_step_ms']:.2f} ms a step"
        )
    if "stack_32_mean_loop_ms" in f:
        print(
            f"   ... of which {f['stack_32_prefill_steps_per_run']:.0f} prefilled joining jobs "
            f"({f.get('stack_32_mean_prefill_step_ms', 0):.2f} ms each, decode-only steps "
            f"{f.get('stack_32_mean_decode_step_ms', 0):.2f} ms); step start to step start {f['stack_32_mean_loop_ms']:.2f} ms, "
            f"handing outputs on {f['stack_32_mean_emit_ms']:.2f} ms a step"
        )
    if "stack_32_last_answered_ms" in f:
        print(
            "   ... ms after the first submission: last answered {:.0f}, claims {:.0f}..{:.0f}, last finished {:.0f}, "
            "last received {:.0f}".format(
                *(
                    f[f"stack_32_{n}_ms"]
                    for n in ("last_answered", "first_claimed", "last_claimed", "last_finished", "last_received")
                )
            )
        )
    roles = [k.rsplit("_", 1)[1] for k in f if k.startswith("stack_32_cpu_ms_per_job_") and not k.endswith("able")]
    if roles:
        spent = ", ".join(f"{role} {f[f'stack_32_cpu_ms_per_job_{role}']:.1f}" for role in roles)
        print(
            f"   ... CPU ms a job by process: {spent} (of {f['stack_32_cpu_ms_per_job_available']:.1f} the cores had)"
        )
    if "stack_32_concurrent_submit_waits" in f:
        print(
            f"   clients that submit with ?wait= (one request a job), one at a time: "
            f"{f['stack_one_at_a_time_submit_waits']:.0f}; 32 concurrent: "
            f"{f['stack_32_concurrent_submit_waits']:.0f}   "
            f"{f['stack_32_concurrent_submit_waits'] / f['stack_one_at_a_time_submit_waits']:.2f}x one-at-a-time, "
            f"{f['stack_32_concurrent_submit_waits'] / f['raw_batch32']:.2f}x raw batch"
        )
    print(
        f"   ... with 64 clients polling every 100 ms:      {f['stack_32_concurrent_64_pollers']:9.0f}   "
        f"{f['stack_32_concurrent_64_pollers'] / f['stack_one_at_a_time']:.2f}x one-at-a-time, "
        f"{f['stack_32_concurrent_64_pollers'] / f['raw_batch32']:.2f}x raw batch "
        f"({f['poll_requests_per_s']:.0f} polls/s served; the pollers' own process "
        f"{f.get('poll_cpu_ms_per_poll', 0):.2f} ms CPU a poll)"
    )
    if "poll_web_cpu_ms_per_poll" in f:
        print(
            f"   ... the polls alone: {f['poll_web_cpu_ms_per_poll']:.2f} ms of web CPU each; with the pollers' own "
            f"process and Redis {100 * f['poll_share_of_cores']:.0f} % of the machine's cores"
        )
    if "mixed_lengths_64" in f:
        print("B. 64 jobs, mixed max_new_tokens 16..256 vs all of their mean length (tokens/s)")
        print(
            f"   mixed {f['mixed_lengths_64']:.0f}, equal {f['equal_lengths_64']:.0f}: "
            f"{f['mixed_lengths_64'] / f['equal_lengths_64']:.2f}x (target within 15 %)"
        )
        if "mixed_over_equal_pairs" in f:
            print(
                f"   median of the alternating pairs' ratios: {f['mixed_over_equal_pairs']:.2f}x; the engine's mean "
                f"rows a step: mixed {f['mixed_mean_rows_per_step']:.1f}, equal {f['equal_mean_rows_per_step']:.1f}"
            )
        if "full_engine_mixed_laxity" in f:
            print(
                f"   the mixed jobs in-process on 32 rows (half wait): least laxity first "
                f"{f['full_engine_mixed_laxity']:.0f}, oldest first {f['full_engine_mixed_oldest_first']:.0f}: "
                f"{f['full_engine_mixed_laxity'] / f['full_engine_mixed_oldest_first']:.2f}x, in "
                f"{f['full_engine_mixed_laxity_steps']:.0f} steps against {f['full_engine_mixed_oldest_first_steps']:.0f}"
            )
        if "full_engine_equal" in f:
            print(
                f"   ... against the equal jobs there ({f['full_engine_equal']:.0f}, "
                f"{f['full_engine_equal_steps']:.0f} steps): least laxity "
                f"{f['full_engine_mixed_laxity'] / f['full_engine_equal']:.2f}x, oldest first "
                f"{f['full_engine_mixed_oldest_first'] / f['full_engine_equal']:.2f}x (target within 15 %)"
            )
    if "short_solo_s" in f:
        print("C. a 16-token job while 16 jobs of 512 tokens run")
        print(
            f"   alone {f['short_solo_s'] * 1000:.0f} ms, among them {f['short_among_long_s'] * 1000:.0f} ms: "
            f"{f['short_among_long_s'] / f['short_solo_s']:.2f}x (target <= 3)"
        )
    if "one_job_direct_s" in f:
        print("D. one job of about 1 s")
        print(
            f"   direct {f['one_job_direct_s'] * 1000:.0f} ms, through the stack to a waiting client "
            f"{f['one_job_stack_s'] * 1000:.0f} ms (medians): each run against the direct call before it "
            f"{f.get('one_job_ratio', f['one_job_stack_s'] / f['one_job_direct_s']):.2f}x (median; target <= 1.10)"
        )
        print(
            f"   first token: direct {f['ttft_direct_s'] * 1000:.0f} ms, over SSE from submission "
            f"{f['ttft_sse_s'] * 1000:.0f} ms: +{(f['ttft_sse_s'] - f['ttft_direct_s']) * 1000:.0f} ms (target <= +50)"
        )
    if "other_tenant_latency_200_streams_s" in f:
        print("E. another tenant's GET /account (median of 40) while 50 long jobs run")
        print(
            f"   no streams {f['other_tenant_latency_no_streams_s'] * 1000:.1f} ms, 200 open streams "
            f"{f['other_tenant_latency_200_streams_s'] * 1000:.1f} ms: "
            f"{f['other_tenant_latency_200_streams_s'] / f['other_tenant_latency_no_streams_s']:.2f}x; "
            f"{f.get('streams_200_jobs_running', 0):.0%} of the followed jobs still running at the end"
        )
        if "streams_200_web_cores" in f:
            print(
                f"   meanwhile the web kept {f['streams_200_web_cores']:.2f} cores busy, "
                f"Redis {f.get('streams_200_redis_cores', 0):.2f}"
            )
    if "engine_alone" in f:
        print("F. the engine loop in one process, 32 jobs, beside Python threads each busy 30 % (tokens/s)")
        print(
            f"   alone {f['engine_alone']:.0f}, beside 1 {f['engine_beside_1_busy']:.0f} "
            f"({f['engine_beside_1_busy'] / f['engine_alone']:.2f}x), beside 4 {f['engine_beside_4_busy']:.0f} "
            f"({f['engine_beside_4_busy'] / f['engine_alone']:.2f}x)"
        )
    print(json.dumps({k: round(v, 4) for k, v in f.items()}))
