"""`manage.py worker_health [--name worker@host]`: exit 0 when that Celery worker answers a ping, else 1.

The compose healthcheck of each worker container: the worker's hostname is `<name>@<container hostname>`.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from aigc_saas.celery import app


class Command(BaseCommand):
    help = "Ping this host's Celery worker (the compose healthcheck of a worker container)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument(
            "--name",
            default="worker",
            help="The worker's node name, or its prefix before @ (default: worker, i.e. worker@<this host>).",
        )
        parser.add_argument("--timeout", type=float, default=5.0, help="Seconds to wait for the answer.")

    def handle(self, name: str, timeout: float, **options: Any) -> None:
        node = name if "@" in name else f"{name}@{socket.gethostname()}"
        replies = app.control.ping(destination=[node], timeout=timeout)
        answered = {worker: reply for entry in replies for worker, reply in entry.items()}
        self.stdout.write(json.dumps({"worker": node, "answered": node in answered}))
        if node not in answered:
            raise CommandError(f"worker {node} did not answer a ping within {timeout} s")
