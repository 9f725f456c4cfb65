"""How many threads torch may use for CPU work in a worker process.

A worker shares its machine with the web server, Redis and the database. torch's default is one OpenMP
thread per core, and OpenMP threads spin while they wait: when another process wants a core the whole team
stalls. Measured on a 2-core machine with the tiny Llama, a batch of 32 under a load average of 3 decoded at
about 390 tokens/s with 2 threads and 7,200 with 1. So a worker leaves one core to the rest of the box by
default; `AIGC_CPU_THREADS` sets the number outright (a dedicated CPU box: all its cores).

The tokenizers library's Rust thread pool is kept out of the same processes: an engine step decodes a few short
token windows, and handing them to the pool and waiting for its threads cost more than the work. Measured in one
process with the tiny Llama, alternating: a step of 1 row 2.49 -> 1.93 ms, of 32 rows 5.17 -> 4.28 ms without it.
"""

from __future__ import annotations

import os


def cpu_threads() -> int:
    raw = os.environ.get("AIGC_CPU_THREADS")
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"`AIGC_CPU_THREADS` must be an integer, got {raw!r}") from None
        if value < 1:
            raise ValueError(f"`AIGC_CPU_THREADS` must be at least 1, got {value}")
        return value
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def configure_cpu_threads() -> int:
    """Apply the policy to torch in this process (torch is imported here, so call it only where torch runs), and
    turn the tokenizers' thread pool off unless `TOKENIZERS_PARALLELISM` says otherwise."""
    import torch

    threads = cpu_threads()
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # read by tokenizers at each call
    return threads
