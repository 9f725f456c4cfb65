"""Clients that poll one job's detail at a fixed interval, in a process of their own (bench_engine.py, part A).

    python bench/pollers.py URL KEY COUNT INTERVAL_SECONDS

Polls until its stdin closes, then prints one JSON line: {"requests": n, "errors": n, "seconds": s, "cpu": s}.

Why a process of its own, with http.client instead of requests: the pollers stand for clients on other machines.
As threads of the bench's own process they held its GIL against the 32 clients whose jobs are measured (64 threads
polling every 100 ms, against 32 threads that each submit and wait), and `requests` cost 0.7 ms of CPU a poll,
more than a third of a core at 500 polls/s, all of it on the two cores the stack runs on. Here each poll costs
what a keep-alive HTTP/1.1 GET costs, and the CPU it took is reported next to the figure.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
from urllib.parse import urlsplit


def poll(url: str, key: str, interval: float, stop: threading.Event, counts: list[int], lock: threading.Lock) -> None:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    done = failed = 0
    while not stop.is_set():
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                done += 1
            else:
                failed += 1
        except (OSError, http.client.HTTPException):
            failed += 1
            connection.close()
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        stop.wait(interval)
    connection.close()
    with lock:
        counts[0] += done
        counts[1] += failed


def main() -> None:
    url, key, count, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    stop, lock, counts = threading.Event(), threading.Lock(), [0, 0]
    threads = [
        threading.Thread(target=poll, args=(url, key, interval, stop, counts, lock), daemon=True) for _ in range(count)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    sys.stdin.read()  # the bench closes our stdin to stop us
    stop.set()
    for thread in threads:
        thread.join(35)
    seconds = time.perf_counter() - start
    times = os.times()
    print(
        json.dumps({"requests": counts[0], "errors": counts[1], "seconds": seconds, "cpu": times.user + times.system}),
        flush=True,
    )


if __name__ == "__main__":
    main()
