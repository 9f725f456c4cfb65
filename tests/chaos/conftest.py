"""Chaos fixtures: a whole stack of real processes (a private Redis, the ASGI web server, a control worker with
beat, generation workers) on the test database, faults to inject into it, and a webhook receiver that counts.

The stack has its own Redis, so a fault here (a restart, a hang) touches nothing else of the session, and no
other test's worker can take these jobs' doorbells."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

from aigc_saas import stack
from tests.durability.hung_redis import HungRedis
from tests.fixtures.stack import TERMINAL, worker_env


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2) -> float:  # noqa: ANN001
    """Seconds until `predicate()` held; fails the test after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s")


class Process:
    """One stack process, started with the same command the run command and compose use, logging to a file."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str], ready: bytes | None) -> None:
        self.command, self.log_path, self.env = command, log_path, env
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = stack.spawn(command, env, stdout=self._log, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR)
        if ready is not None:
            wait_for(lambda: ready in log_path.read_bytes() or self.process.poll() is not None, 90, f"{log_path.name}")
            if self.process.poll() is not None:
                raise RuntimeError(f"{log_path.name} exited early:\n{self.log()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def signal(self, sig: int) -> None:
        """To the whole process group: a worker's engine threads and a web server's workers with it."""
        os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGCONT)  # a paused process cannot stop politely
        stack.stop(self.process, timeout=10)
        self._log.close()


class Stack:
    """Processes sharing one private Redis and the test database; `env` overrides settings for all of them."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.redis_port = stack.free_port()
        self.redis = stack.start_redis(self.redis_port, root / "redis")
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env = {"AIGC_WORKER_CONCURRENCY": "4", "AIGC_WEB_WORKERS": "1", "AIGC_METRICS_PORT": "0", **env}
        self.processes: list[Process] = []
        self._count = 0

    def environment(self, **extra: str) -> dict[str, str]:
        return worker_env(**{"REDIS_URL": self.redis_url, **self.env, **extra})

    def _name(self, kind: str) -> Path:
        self._count += 1
        return self.root / f"{self._count:02d}-{kind}.log"

    def control(self, **env: str) -> Process:
        """Webhooks, run advances and the sweeps, with beat (as `make run` and compose start it)."""
        env = {"AIGC_DATA_DIR": str(self.root), **env}
        command = stack.control_worker_command(beat=True)
        return self._start(command, "control", b" ready.", env)

    def worker(self, **env: str) -> Process:
        """A generation worker on queue `cpu`; `AIGC_WORKER_CONCURRENCY` sets its threads, as in the run command."""
        command = stack.worker_command(stack.GENERATION_QUEUES, name=f"gen{self._count}")
        command[command.index("--concurrency") + 1] = {**self.env, **env}["AIGC_WORKER_CONCURRENCY"]
        return self._start(command, "gen", b" ready.", env)

    def web(self, **env: str) -> Web:
        port = stack.free_port()
        process = self._start(stack.web_command(port), "web", None, env)
        web = Web(process, port)
        wait_for(lambda: stack.port_open(port) or process.process.poll() is not None, 60, "web server")
        return web

    def _start(self, command: list[str], kind: str, ready: bytes | None, env: dict[str, str]) -> Process:
        process = Process(command, self._name(kind), self.environment(**env), ready)
        self.processes.append(process)
        return process

    def restart_redis(self, down_seconds: float = 0, until: Any = None) -> float:
        """Kill Redis (no persistence: every queued message is lost) and start a fresh one on the same port,
        after `down_seconds` or once `until()` holds."""
        started = time.monotonic()
        self.redis.kill()
        self.redis.wait(10)
        if until is not None:
            wait_for(until, 90, "the condition to restart Redis on")
        time.sleep(down_seconds)
        self.redis = stack.start_redis(self.redis_port, self.root / "redis")
        return time.monotonic() - started

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        stack.stop(self.redis)

    def logs(self) -> str:
        return "\n".join(f"==== {p.log_path.name}\n{p.log()[-3000:]}" for p in self.processes)


class Web:
    def __init__(self, process: Process, port: int) -> None:
        self.process, self.port = process, port
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def chaos_stack(transactional_db, tiny_models, request) -> Iterator[Stack]:  # noqa: ANN001
    """Logs go to a folder of their own (printed), kept after a failure for reading."""
    root = Path(tempfile.mkdtemp(prefix=f"aigc-chaos-{request.node.name[:40]}-"))
    print(f"\nchaos stack logs: {root}")
    started = Stack(root)
    yield started
    started.stop()
    if not getattr(request.node, "chaos_failed", False):
        shutil.rmtree(root, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ANN001, ANN201
    report = yield
    if report.when == "call" and report.failed:
        item.chaos_failed = True
    return report


class Receiver:
    """A webhook receiver: every POST recorded as (job id, event, delivery id)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append((body["job"]["id"], body["type"], self.headers["X-AIGC-Delivery"]))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def by_job(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = defaultdict(list)
        for job_id, event, _ in list(self.received):
            found[job_id].append(event)
        return found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.server.shutdown()


def client(base_url: str, key: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    session.base = base_url.rstrip("/") + "/api/v1"  # type: ignore[attr-defined]
    return session


def terminal(job_ids: list[str]) -> bool:
    from aigc_saas.jobs.models import Job

    return Job.objects.filter(pk__in=job_ids, state__in=TERMINAL).count() == len(job_ids)


def check_outcome(job_ids: list[str], *, artifacts_per_job: int = 0) -> list[Any]:
    """Every job in exactly one terminal state, succeeded, with exactly its artifacts (rows and files)."""
    from aigc_saas.jobs.models import Artifact, Job

    jobs = list(Job.objects.filter(pk__in=job_ids))
    assert len(jobs) == len(job_ids), "a job was lost"
    for job in jobs:
        assert job.state == "succeeded", (job.pk, job.state, job.error_code, job.error_message)
        assert job.finished_at is not None and job.lease_expires_at is None
        rows = Artifact.objects.filter(job=job)
        assert rows.count() == artifacts_per_job, f"job {job.pk}: {rows.count()} artifacts"
        folder = Path(settings.MEDIA_ROOT) / "artifacts" / str(job.tenant_id) / str(job.pk)
        files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        assert len(files) == artifacts_per_job, f"job {job.pk}: files {files} (a stale attempt wrote some)"
    return jobs


@pytest.fixture
def hung_redis() -> Iterator[HungRedis]:
    server = HungRedis()
    yield server
    server.close()
