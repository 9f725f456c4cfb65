"""End-to-end latency of a text job through the whole stack vs the direct `generate` call, in one run.

    .venv/bin/python bench/bench_text.py [--jobs 10] [--max-new-tokens 16]

Starts its own private stack (SQLite, redis-server, one Celery worker, gunicorn) in a temporary folder
on the tiny local model (or AIGC_MODEL_TRANSFORMERS_TEXT), warms both paths up, then times them
side by side and prints the ratio: the platform's overhead per job.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aigc_saas import stack  # noqa: E402
from generators.base import BatchItem, LocalContext  # noqa: E402
from generators.testing.tiny_models import build_tiny_text_model  # noqa: E402
from generators.text_transformers import TextGenerator  # noqa: E402
from hardware import select_device  # noqa: E402


def http(method: str, url: str, key: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def run_job(base: str, key: str, params: dict) -> float:
    start = time.perf_counter()
    job = http("POST", f"{base}/api/v1/jobs", key, {"generator": "transformers-text", "params": params})
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.02)  # a tighter loop steals the 2 cores the worker needs
        job = http("GET", job["url"], key)
    elapsed = time.perf_counter() - start
    if job["state"] != "succeeded":
        raise SystemExit(f"job failed: {job['error']}")
    return elapsed


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(samples) * 1000:8.1f} ms   p90 {p90 * 1000:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aigc-bench-"))
    model = os.environ.get("AIGC_MODEL_TRANSFORMERS_TEXT") or str(build_tiny_text_model(work / "tiny-text"))
    redis_port, web_port = stack.free_port(), stack.free_port()
    env = {
        **os.environ,
        "AIGC_DATA_DIR": str(work),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "AIGC_MODEL_TRANSFORMERS_TEXT": model,
        "AIGC_LOG_LEVEL": "WARNING",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    key = subprocess.run(
        [*manage, "ensure_demo_tenant"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    children = [stack.start_redis(redis_port, work / "redis")]
    log = open(work / "stack.log", "wb")  # noqa: SIM115
    children.append(stack.spawn(stack.worker_command(), env, cwd=ROOT, stdout=log, stderr=log))
    children.append(stack.spawn(stack.web_command(web_port), env, cwd=ROOT, stdout=log, stderr=log))
    base = f"http://127.0.0.1:{web_port}"
    try:
        while not stack.port_open(web_port):
            time.sleep(0.2)
        params = {
            "prompt": "Write a slogan for a bakery",
            "max_new_tokens": args.max_new_tokens,
            "temperature": 0,
            "seed": 1,
        }
        run_job(base, key, params)  # warm-up: the worker loads the model once
        through_stack = [run_job(base, key, params) for _ in range(args.jobs)]

        generator = TextGenerator(TextGenerator.Config(model_id=model))
        device = select_device(generator.needs)
        generator.setup(device)
        validated = generator.validate_params(params)
        generator.generate(validated, LocalContext(device))  # warm-up
        direct = []
        for _ in range(args.jobs):
            start = time.perf_counter()
            generator.generate(validated, LocalContext(device))
            direct.append(time.perf_counter() - start)
        batched = []
        unseeded = generator.validate_params({**params, "seed": None})
        for _ in range(3):
            start = time.perf_counter()
            generator.generate_batch(
                [BatchItem(unseeded, LocalContext(device)) for _ in range(generator.max_batch_size)]
            )
            batched.append(time.perf_counter() - start)
    finally:
        for child in reversed(children):
            stack.stop(child)

    ratio = statistics.median(through_stack) / statistics.median(direct)
    overhead = (statistics.median(through_stack) - statistics.median(direct)) * 1000
    print(f"text job, {args.jobs} runs each, {args.max_new_tokens} new tokens, model {model}, device {device.device}")
    print(f"  direct generate():            {summary(direct)}")
    print(f"  HTTP -> Redis -> worker -> DB: {summary(through_stack)}")
    print(f"  ratio (stack / direct, median): {ratio:.2f}x   overhead per job: {overhead:.0f} ms")
    per_job = statistics.median(batched) / generator.max_batch_size
    print(
        f"  one pass of {generator.max_batch_size} jobs (generate_batch): {per_job * 1000:.1f} ms per job, "
        f"{statistics.median(direct) / per_job:.2f}x the throughput of one job per pass"
    )


if __name__ == "__main__":
    main()
