"""The serving engine's numbers (issue 8), every figure of one comparison taken in one run, side by side.

    .venv/bin/python bench/bench_engine.py [--quick]

Starts a private stack exactly as `make run` does (SQLite, redis-server, control worker, generation worker,
ASGI web) on the tiny local Llama (or AIGC_MODEL_TRANSFORMERS_TEXT), then measures:

  A. throughput: 32 concurrent jobs (64 new tokens by default, mixed prompts, sampling, no seeds) submitted over HTTP and
     followed with `?wait=` as clients would, against the same jobs one at a time through the stack, and against
     the raw plugin batch of 32 (its `generate_batch`, and transformers' own `generate` for reference);
     the same with clients that submit with `POST /jobs?wait=` (one request a job instead of two);
     again with 64 extra clients polling `GET /jobs/{id}` every 100 ms;
  B. mixed `max_new_tokens` (16..256) across 64 jobs against 64 jobs of their mean length;
  C. a 16-token job submitted while 16 jobs of 512 tokens run, against the same job alone;
  D. one job of about 1 s: submit-to-terminal seen by a waiting client, and time to first token over SSE,
     against the direct plugin call;
  E. another tenant's request latency with 200 open SSE streams (4 on each of 50 running jobs), against none
     with the same jobs running;
  F. the engine in this process alone, against the same engine beside 1 and 4 Python threads that each hold
     the GIL 30 % of the time (what a worker's other threads do to its engine thread).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine_paths import (  # noqa: E402 - beside this script
    DirectEngine,
    Figures,
    build_llama_1b,
    engine_counters,
    hf_generate_rate,
    median_of,
    process_cpu_seconds,
    rate_beside_busy_threads,
    raw_rate,
    release_device_memory,
)
from engine_report import report  # noqa: E402 - beside this script
from stack_clients import (  # noqa: E402 - beside this script
    Client,
    Pollers,
    WaitingClient,
    concurrent,
    first_token_seconds,
    timeline,
    tokens,
)

from aigc_saas import stack  # noqa: E402
from generators.base import BatchItem, LocalContext  # noqa: E402
from generators.testing.tiny_models import build_tiny_text_model  # noqa: E402
from generators.text_transformers import TextGenerator  # noqa: E402
from hardware import select_device  # noqa: E402
from hardware.threads import configure_cpu_threads  # noqa: E402

E_JOBS, E_NEW_TOKENS = 50, 2000  # part E's running jobs: long enough to outlast opening 200 streams on a CPU

WORDS = [
    "bakery",
    "mug",
    "coffee",
    "shop",
    "spring",
    "sale",
    "lesson",
    "quiz",
    "product",
    "garden",
    "shoes",
    "bread",
    "tea",
    "cake",
]


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 30))) for _ in range(n)]


def text_params(prompt: str, n: int, **extra: object) -> dict:
    return {"prompt": prompt, "max_new_tokens": n, "temperature": 0.8, "top_p": 0.95, **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per job in A (issue 8: 64 on the CPU)")
    parser.add_argument(
        "--llama-1b", action="store_true", help="a random Llama-3.2-1B-shaped model (1.24B parameters) instead of tiny"
    )
    parser.add_argument(
        "--layouts", action="store_true", help="also the raw batch with the frame runner and slots without graphs"
    )
    parser.add_argument(
        "--hf-static", action="store_true", help="also transformers' generate with a static cache + torch.compile"
    )
    parser.add_argument(
        "--fold-ab", action="store_true", help="also the raw batch with decode attention as transformers' SDPA runs it"
    )
    parser.add_argument("--repeats", type=int, help="samples per figure (default 3, 1 with --quick)")
    parser.add_argument("--sequential", type=int, default=32, help="jobs run one at a time through the stack")
    parser.add_argument("--json-out", type=Path, help="write the figures here as they are taken")
    parser.add_argument(
        "--parts", default="ABCDEF", help="which comparisons to run (letters of the list above; A always runs)"
    )
    args = parser.parse_args()
    parts = set(args.parts.upper()) | {"A"}
    repeats = args.repeats or (1 if args.quick else 3)
    n_new = args.new_tokens

    work = Path(tempfile.mkdtemp(prefix="aigc-bench-engine-"))
    if args.llama_1b:
        model = str(build_llama_1b(work / "llama-1b"))
    else:
        model = os.environ.get("AIGC_MODEL_TRANSFORMERS_TEXT") or str(build_tiny_text_model(work / "tiny-text"))
    redis_port, web_port = stack.free_port(), stack.free_port()
    env = {
        **os.environ,
        "AIGC_DATA_DIR": str(work),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "AIGC_MODEL_TRANSFORMERS_TEXT": model,
        "AIGC_LOG_LEVEL": "WARNING",
        "AIGC_RATE_LIMIT_PER_SECOND": "100000",
        "AIGC_RATE_LIMIT_BURST": "100000",
        "AIGC_SUBMISSIONS_PER_MINUTE": "100000",
        "AIGC_MAX_STREAMS_PER_TENANT": "1000",
        "AIGC_DEFAULT_MAX_ACTIVE_JOBS": "0",
        "AIGC_DEFAULT_MAX_JOBS_PER_DAY": "0",
        "AIGC_WORKER_CONCURRENCY": "80",
        # One directory for every process's samples, so the web's /metrics shows the worker's engine too.
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
    }
    (work / "metrics").mkdir()
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    key = subprocess.run(
        [*manage, "ensure_demo_tenant"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    other_key = subprocess.run(
        [
            *manage,
            "shell",
            "-c",
            "from aigc_saas.accounts.services import create_tenant, create_api_key;"
            "print(create_api_key(create_tenant('Other', 'other'), 'bench')[1])",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    children = [stack.start_redis(redis_port, work / "redis")]
    # The commands read their thread count and log level from this process's environment, as `make run`'s do.
    os.environ.update({name: env[name] for name in ("AIGC_WORKER_CONCURRENCY", "AIGC_LOG_LEVEL")})
    log = open(work / "stack.log", "wb")  # noqa: SIM115
    for command in (
        stack.control_worker_command(),
        stack.worker_command(stack.GENERATION_QUEUES),
        stack.web_command(web_port),
    ):
        children.append(stack.spawn(command, env, cwd=ROOT, stdout=log, stderr=log))
    roles = dict(zip(("redis", "control", "worker", "web"), (c.pid for c in children), strict=True))

    def cpu_now() -> dict[str, float]:
        client_times = os.times()
        return {**process_cpu_seconds(roles), "client": client_times.user + client_times.system}

    base = f"http://127.0.0.1:{web_port}"
    figures: dict[str, float] = Figures(args.json_out)
    try:
        while not stack.port_open(web_port):
            time.sleep(0.2)
        client, other = Client(base, key), Client(base, other_key)
        clients = [Client(base, key) for _ in range(8)]
        client.run(text_params("warm up", 8))
        concurrent(clients, [text_params(p, n_new) for p in prompts(32, 99)])  # warm the engine's batch shapes

        # ---- raw plugin, same model, same shapes --------------------------------------------------------
        configure_cpu_threads()  # the worker's thread policy, so the raw path runs as the worker does
        generator = TextGenerator(TextGenerator.Config(model_id=model))
        device = select_device(generator.needs)
        generator.setup(device)
        batch = [BatchItem(generator.validate_params(text_params(p, n_new)), LocalContext(device)) for p in prompts(32)]
        if args.fold_ab:  # first, while the model still runs transformers' SDPA: the slot runner without the fold
            generator._direct_runner = generator.create_runner()
            generator._direct_runner.fold_gqa = False
            figures["raw_batch32_unfolded"] = raw_rate(generator, batch, repeats)
            figures["raw_single_unfolded"] = raw_rate(generator, batch[:1], repeats)
            generator._direct_runner = None  # its cache goes; the next pass makes the plugin's own runner
            release_device_memory()
        figures["raw_batch32"] = raw_rate(generator, batch, repeats)
        figures["raw_folded_decode_attention"] = float(bool(getattr(generator._direct_runner, "fold_gqa", False)))
        engine_direct = DirectEngine(generator)
        engine_direct.run([text_params(p, n_new) for p in prompts(32)])  # warm-up
        rates = []
        for _ in range(repeats):
            wall, _, count = engine_direct.run([text_params(p, n_new) for p in prompts(32)])
            rates.append(count / wall)
        figures["engine_batch32"] = median_of(rates)  # the worker's engine loop, in-process, all 32 at once
        figures["raw_single"] = raw_rate(generator, batch[:1], repeats)
        figures["hf_generate_batch32"] = hf_generate_rate(generator, batch, repeats, n_new)
        if args.layouts:
            for layout, graphs in (("frame", False), ("slots", False)):
                other_generator = TextGenerator(
                    TextGenerator.Config(model_id=model, kv_layout=layout, cuda_graphs=graphs)
                )
                other_generator.setup(device)
                name = layout if layout == "frame" else "slots_eager"
                figures[f"raw_batch32_{name}"] = raw_rate(other_generator, batch, repeats)
                figures[f"raw_single_{name}"] = raw_rate(other_generator, batch[:1], repeats)
                other_generator.teardown()
            if generator._direct_runner is not None and getattr(generator._direct_runner, "look_ahead", False):
                generator._direct_runner.look_ahead = False  # the same graphs, each step booked before the next
                figures["raw_batch32_no_look_ahead"] = raw_rate(generator, batch, repeats)
                figures["raw_single_no_look_ahead"] = raw_rate(generator, batch[:1], repeats)
                generator._direct_runner.look_ahead = True

        # ---- A. through the stack ---------------------------------------------------------------------
        jobs = [text_params(p, n_new) for p in prompts(32)]
        # The one-at-a-time jobs run in slices between the concurrent runs, so that the machine's drift from one
        # minute to the next weighs on both sides of the ratio alike.
        slices = [jobs[: args.sequential][i :: repeats + 1] for i in range(repeats + 1)]
        sequential_tokens, sequential_seconds = 0, 0.0
        waiting_client = WaitingClient(base, key)  # submits with `?wait=`: one request a job
        waiting_tokens, waiting_seconds, waiting_rates = 0, 0.0, []

        def one_at_a_time(chunk: list[dict]) -> None:
            nonlocal sequential_tokens, sequential_seconds, waiting_tokens, waiting_seconds
            start = time.perf_counter()
            sequential_tokens += tokens([client.run(p) for p in chunk])
            sequential_seconds += time.perf_counter() - start
            start = time.perf_counter()
            waiting_tokens += tokens([waiting_client.run(p) for p in chunk])
            waiting_seconds += time.perf_counter() - start

        rates, lines = [], []
        cpu_seconds = dict.fromkeys(cpu_now(), 0.0)
        engine_seconds: dict[str, float] = {}  # the engine's counters over the concurrent runs alone
        walls = 0.0
        for index in range(repeats):
            one_at_a_time(slices[index])
            time.sleep(0.5)  # the worker samples its engines after each task
            before = engine_counters(base)
            cpu_before = cpu_now()
            wall, done = concurrent([Client(base, key) for _ in range(32)], jobs)
            for role, seconds in cpu_now().items():
                cpu_seconds[role] += seconds - cpu_before[role]
            time.sleep(0.5)
            for name, value in engine_counters(base).items():
                engine_seconds[name] = engine_seconds.get(name, 0.0) + value - before.get(name, 0.0)
            rates.append(tokens(done) / wall)
            lines.append(timeline(done))
            walls += wall
            time.sleep(0.5)
            wall, done = concurrent([WaitingClient(base, key) for _ in range(32)], jobs)
            waiting_rates.append(tokens(done) / wall)
        one_at_a_time(slices[repeats])
        figures["stack_one_at_a_time"] = sequential_tokens / sequential_seconds
        figures["stack_one_at_a_time_submit_waits"] = waiting_tokens / waiting_seconds
        figures["stack_32_concurrent_submit_waits"] = median_of(waiting_rates)
        figures["stack_single_job"] = figures["stack_one_at_a_time"]  # one job alone, submitted and waited for
        figures["stack_32_concurrent"] = median_of(rates)
        for name in lines[0]:
            figures[f"stack_32_{name}"] = median_of([line[name] for line in lines])
        for role, seconds in cpu_seconds.items():  # where the machine's cores went: CPU ms per job, by process
            figures[f"stack_32_cpu_ms_per_job_{role}"] = 1000 * seconds / (32 * repeats)
        figures["stack_32_cpu_ms_per_job_available"] = 1000 * walls * (os.cpu_count() or 1) / (32 * repeats)
        steps = engine_seconds.get("aigc_engine_steps", 0.0)
        if steps > 0:  # where the worker's time went: how full its batches were, how long a step took
            figures["stack_32_mean_rows_per_step"] = engine_seconds["aigc_engine_rows_stepped"] / steps
            figures["stack_32_mean_step_ms"] = 1000 * engine_seconds["aigc_engine_step_seconds"] / steps
            figures["stack_32_steps_per_run"] = steps / repeats
            prefills = engine_seconds.get("aigc_engine_prefill_steps", 0.0)
            figures["stack_32_prefill_steps_per_run"] = prefills / repeats
            if prefills:
                figures["stack_32_mean_prefill_step_ms"] = (
                    1000 * engine_seconds["aigc_engine_prefill_step_seconds"] / prefills
                )
            if steps > prefills:
                figures["stack_32_mean_decode_step_ms"] = (
                    1000
                    * (engine_seconds["aigc_engine_step_seconds"] - engine_seconds["aigc_engine_prefill_step_seconds"])
                    / (steps - prefills)
                )
            figures["stack_32_mean_loop_ms"] = 1000 * engine_seconds["aigc_engine_loop_seconds"] / steps
            figures["stack_32_mean_emit_ms"] = 1000 * engine_seconds["aigc_engine_emit_seconds"] / steps
        watched = client.submit(text_params("a job to watch", 8))
        # The polls alone first: what one costs the web, and what share of the machine 64 pollers take.
        pollers = Pollers(key, watched["url"], 64, 0.1)
        time.sleep(0.5)  # every poller connected and polling
        cpu_before = cpu_now()
        time.sleep(2.0)
        cpu_after = cpu_now()
        pollers.close()
        served = pollers.requests * 2.0 / pollers.seconds  # about the polls of the 2 s measured
        if "web" in cpu_after:  # the processes' CPU comes from /proc: absent elsewhere
            figures["poll_web_cpu_ms_per_poll"] = 1000 * (cpu_after["web"] - cpu_before["web"]) / served
            figures["poll_share_of_cores"] = (
                sum(cpu_after[r] - cpu_before[r] for r in ("web", "redis"))
                + 2.0 * pollers.cpu_seconds / pollers.seconds
            ) / (2.0 * (os.cpu_count() or 1))
        pollers = Pollers(key, watched["url"], 64, 0.1)
        try:
            time.sleep(0.5)  # every poller connected and polling
            wall, done = concurrent([Client(base, key) for _ in range(32)], jobs)
        finally:
            pollers.close()
        if pollers.errors:
            raise SystemExit(f"{pollers.errors} polls failed")
        figures["stack_32_concurrent_64_pollers"] = tokens(done) / wall
        figures["poll_requests_per_s"] = pollers.requests / pollers.seconds
        figures["poll_cpu_ms_per_poll"] = 1000 * pollers.cpu_seconds / max(pollers.requests, 1)

        if "B" in parts:
            # ---- B. mixed lengths --------------------------------------------------------------------------
            rng = random.Random(3)
            lengths = [rng.randint(16, 256) for _ in range(64)]
            mean = round(sum(lengths) / len(lengths))
            texts = prompts(64, 5)
            cases = {
                "mixed": [text_params(p, n) for p, n in zip(texts, lengths, strict=True)],
                "equal": [text_params(p, mean) for p in texts],
            }
            # Alternating pairs: this machine's speed drifts from one minute to the next, a pair's ratio less.
            rates: dict[str, list[float]] = {"mixed": [], "equal": []}
            rows: dict[str, list[float]] = {"mixed": [], "equal": []}
            for _ in range(repeats):
                for case, params in cases.items():
                    before = engine_counters(base)
                    wall, done = concurrent([Client(base, key) for _ in range(64)], params)
                    after = engine_counters(base)
                    rates[case].append(tokens(done) / wall)
                    steps = after["aigc_engine_steps"] - before["aigc_engine_steps"]
                    rows[case].append((after["aigc_engine_rows_stepped"] - before["aigc_engine_rows_stepped"]) / steps)
            figures["mixed_lengths_64"] = median_of(rates["mixed"])
            figures["equal_lengths_64"] = median_of(rates["equal"])
            figures["mixed_over_equal_pairs"] = median_of(
                [m / e for m, e in zip(rates["mixed"], rates["equal"], strict=True)]
            )
            figures["mixed_mean_rows_per_step"] = median_of(rows["mixed"])
            figures["equal_mean_rows_per_step"] = median_of(rows["equal"])
            # The same mixed jobs in-process on an engine of 32 rows, so that half of them wait: admitted with the
            # least laxity first (longest first when they wait together, the scheduler's order) against oldest
            # first, alternating, the engine's measured step kept.
            full = DirectEngine(generator, max_rows=32)
            full.run(cases["mixed"][:32])  # warm-up: the engine measures its step
            measured = full.engine.scheduler.step_seconds
            orders: dict[str, list[float]] = {"laxity": [], "oldest": [], "equal": []}
            steps: dict[str, int] = {}
            for _ in range(repeats):
                for order, step, case in (
                    ("laxity", measured, "mixed"),
                    ("oldest", lambda: 0.0, "mixed"),
                    ("equal", measured, "equal"),
                ):
                    full.engine.scheduler.step_seconds = step
                    before = full.engine.steps_total
                    wall, _, count = full.run(cases[case])
                    orders[order].append(count / wall)
                    steps[order] = full.engine.steps_total - before  # the same every time: no clock decides it
            full.engine.stop()
            figures["full_engine_mixed_laxity"] = median_of(orders["laxity"])
            figures["full_engine_mixed_oldest_first"] = median_of(orders["oldest"])
            figures["full_engine_equal"] = median_of(orders["equal"])
            figures["full_engine_mixed_laxity_steps"] = steps["laxity"]
            figures["full_engine_mixed_oldest_first_steps"] = steps["oldest"]
            figures["full_engine_equal_steps"] = steps["equal"]

        if "C" in parts:
            # ---- C. a short job among long ones ------------------------------------------------------------
            short = text_params("a short one", 16)
            solo = []
            for _ in range(repeats):
                start = time.perf_counter()
                client.run(short)
                solo.append(time.perf_counter() - start)
            longs = [client.submit(text_params(p, 512)) for p in prompts(16, 7)]
            time.sleep(0.5)
            start = time.perf_counter()
            client.run(short)
            figures["short_among_long_s"] = time.perf_counter() - start
            figures["short_solo_s"] = median_of(solo)
            for job in longs:
                client.wait(job)

        if "D" in parts:
            # ---- D. one ~1 s job ---------------------------------------------------------------------------
            n = max(8, int(figures["raw_single"]))  # about one second of tokens alone
            one = text_params("one second of text", n)
            direct, direct_ttft, through, ttft = [], [], [], []
            for _ in range(repeats + 2):  # alternated, so the machine's drift between minutes hits both sides
                start = time.perf_counter()
                generator.generate(generator.validate_params(one), LocalContext(device))
                direct.append(time.perf_counter() - start)
                direct_ttft.append(engine_direct.run([one])[1][0])
                start = time.perf_counter()
                client.run(one)
                through.append(time.perf_counter() - start)
                ttft.append(first_token_seconds(client, one)[0])
            figures["one_job_direct_s"] = median_of(direct)
            figures["one_job_stack_s"] = median_of(through)
            # Each stack run against the direct call just before it: the machine's speed moves within minutes.
            figures["one_job_ratio"] = median_of([t / d for t, d in zip(through, direct, strict=True)])
            figures["ttft_direct_s"] = median_of(direct_ttft)
            figures["ttft_sse_s"] = median_of(ttft)

        if "E" in parts:
            # ---- E. 200 open streams ----------------------------------------------------------------------
            # 50 long jobs run throughout, with and without 4 streams each: the streams must be live (their jobs
            # still decoding) while the other tenant's requests are timed, and the engine's load is the same on
            # both sides. (One job followed 200 times ended on the CPU before its streams were open.)
            def account_latency() -> float:
                samples = []
                for _ in range(40):
                    start = time.perf_counter()
                    other.session.get(f"{other.base}/account", timeout=30).raise_for_status()
                    samples.append(time.perf_counter() - start)
                    time.sleep(0.01)
                return median_of(samples)

            held = [client.submit(text_params(f"held open {i}", E_NEW_TOKENS)) for i in range(E_JOBS)]
            time.sleep(1.0)  # claimed and decoding
            figures["other_tenant_latency_no_streams_s"] = account_latency()
            with ThreadPoolExecutor(20) as pool:
                streams = list(
                    pool.map(
                        lambda i: client.session.get(f"{held[i % E_JOBS]['url']}/events", stream=True, timeout=60),
                        range(200),
                    )
                )
            refused = [s for s in streams if s.status_code != 200]
            if refused:
                raise SystemExit(
                    f"{len(refused)} of 200 streams refused: {refused[0].status_code} {refused[0].text[:300]}"
                )
            time.sleep(1.0)  # past their replays of what their jobs published so far
            cpu_before, wall_before = cpu_now(), time.perf_counter()
            figures["other_tenant_latency_200_streams_s"] = account_latency()
            cpu_after, wall = cpu_now(), time.perf_counter() - wall_before
            if "web" in cpu_after:  # what serving the 200 streams costs the web meanwhile, in cores
                figures["streams_200_web_cores"] = (cpu_after["web"] - cpu_before["web"]) / wall
                figures["streams_200_redis_cores"] = (cpu_after["redis"] - cpu_before["redis"]) / wall
            states = [client.session.get(job["url"], timeout=30).json()["state"] for job in held]
            figures["streams_200_jobs_running"] = states.count("running") / E_JOBS  # the streams were live
            for job in held:
                client.session.post(f"{job['url']}/cancel")
            for s in streams:
                s.close()

        if "F" in parts:
            # ---- F. the engine thread beside busy Python threads ----------------------------------------------
            alone = [text_params(p, n_new) for p in prompts(32)]
            figures["engine_alone"] = rate_beside_busy_threads(engine_direct, alone, 0, 0.0, repeats)
            figures["engine_beside_1_busy"] = rate_beside_busy_threads(engine_direct, alone, 1, 0.3, repeats)
            figures["engine_beside_4_busy"] = rate_beside_busy_threads(engine_direct, alone, 4, 0.3, repeats)

        # ---- the best raw configuration, last: transformers compiles its static-cache path on first use -----
        if args.hf_static:
            figures["hf_static_compile_batch32"] = hf_generate_rate(generator, batch, repeats, n_new, static=True)
            figures["hf_static_compile_single"] = hf_generate_rate(generator, batch[:1], repeats, n_new, static=True)
    finally:
        for child in reversed(children):
            stack.stop(child)

    report(figures, model, device.device, n_new)


if __name__ == "__main__":
    main()
