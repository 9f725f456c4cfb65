"""The HTTP side of bench_engine.py: clients that submit and follow jobs as users would, the pollers' process, and
what a concurrent run's finished jobs say about where its time went."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import requests


class Client:
    """One API key's client. Submissions and waits go over a keep-alive http.client connection per thread: the
    clients stand for users on other machines, and requests cost 2-3x the CPU a call on the two cores the stack
    is measured on (the client's CPU is reported beside the stack's). `session` (requests) serves the rest."""

    def __init__(self, base: str, key: str) -> None:
        self.base = f"{base}/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        self._address = urlsplit(base)
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._local = threading.local()

    def _call(self, method: str, url: str, body: dict | None = None) -> dict:
        connection = getattr(self._local, "connection", None)
        if connection is not None and time.monotonic() - self._local.used > 1.0:
            connection.close()  # the server drops idle keep-alive connections after 2 s: never send on a stale one
            connection = None
        if connection is None:
            connection = http.client.HTTPConnection(self._address.hostname, self._address.port, timeout=90)
            self._local.connection = connection
        parts = urlsplit(url)
        try:
            connection.request(
                method,
                parts.path + (f"?{parts.query}" if parts.query else ""),
                body=None if body is None else json.dumps(body),
                headers=self._headers,
            )
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            self._local.connection = None
            raise
        self._local.used = time.monotonic()
        if response.status >= 400:
            raise SystemExit(f"{method} {url}: {response.status} {data[:300]!r}")
        return json.loads(data)

    def submit(self, params: dict) -> dict:
        return self._call("POST", f"{self.base}/jobs", {"generator": "transformers-text", "params": params})

    def wait(self, job: dict) -> dict:
        while True:
            current = self._call("GET", f"{job['url']}?wait=60")
            if current["state"] in ("succeeded", "failed", "cancelled"):
                if current["state"] != "succeeded":
                    raise SystemExit(f"job {current['id']} {current['state']}: {current.get('error')}")
                return current

    def run(self, params: dict) -> dict:
        sent = time.time()
        submitted = self.submit(params)
        answered = time.time()
        done = self.wait(submitted)
        done["_client"] = {"sent": sent, "answered": answered, "received": time.time()}
        return done


class WaitingClient(Client):
    """A client that submits with `?wait=` (one request: the answer is the finished job) instead of submitting and
    then long-polling."""

    def run(self, params: dict) -> dict:
        sent = time.time()
        done = self._call("POST", f"{self.base}/jobs?wait=60", {"generator": "transformers-text", "params": params})
        if done["state"] not in ("succeeded", "failed", "cancelled"):
            done = self.wait(done)  # a wait that ran out: long-poll the rest
        received = time.time()
        done["_client"] = {"sent": sent, "answered": received, "received": received}
        return done


def tokens(jobs: list[dict]) -> int:
    return sum(j["result"]["metadata"]["completion_tokens"] for j in jobs)


def concurrent(clients: list[Client], params: list[dict]) -> tuple[float, list[dict]]:
    """Each job by its own client thread: submit, then wait. Returns (wall seconds, finished jobs)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(params)) as pool:
        done = list(pool.map(lambda pair: pair[0].run(pair[1]), zip(clients * len(params), params, strict=False)))
    return time.perf_counter() - start, done


def timeline(done: list[dict]) -> dict[str, float]:
    """Where a concurrent run's wall time went, in ms after the first submission was sent: when the last
    submission was answered, the first and last claims, the last finish, the last result a client received."""
    from datetime import datetime

    def at(stamp: str) -> float:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    zero = min(j["_client"]["sent"] for j in done)
    started = [at(j["started_at"]) - zero for j in done]
    return {
        "last_answered_ms": 1000 * max(j["_client"]["answered"] - zero for j in done),
        "first_claimed_ms": 1000 * min(started),
        "last_claimed_ms": 1000 * max(started),
        "last_finished_ms": 1000 * max(at(j["finished_at"]) - zero for j in done),
        "last_received_ms": 1000 * max(j["_client"]["received"] - zero for j in done),
    }


class Pollers:
    """`count` clients polling a job's detail every `interval` seconds, as naive clients do, from a process of their
    own (bench/pollers.py: clients on other machines would not share this process's GIL with the measured ones)."""

    def __init__(self, key: str, job_url: str, count: int, interval: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("pollers.py")), job_url, key, str(count), str(interval)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.requests = self.errors = 0
        self.seconds = self.cpu_seconds = 0.0

    def close(self) -> None:
        out, _ = self.process.communicate("", timeout=60)
        counts = json.loads(out.strip().splitlines()[-1])
        self.requests, self.errors = counts["requests"], counts["errors"]
        self.seconds, self.cpu_seconds = counts["seconds"], counts["cpu"]


def first_token_seconds(client: Client, params: dict) -> tuple[float, float]:
    """(time to the first `token` event, time to the `end` event), from just before the submission."""
    start = time.perf_counter()
    job = client.submit(params)
    first = None
    with client.session.get(f"{job['url']}/events", stream=True, timeout=120) as response:
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: token") and first is None:
                first = time.perf_counter() - start
            if line.startswith("event: end"):
                return first or 0.0, time.perf_counter() - start
    raise SystemExit("the stream ended without an end event")
