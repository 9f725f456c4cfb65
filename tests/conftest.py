"""Test session wiring: a real Redis (REDIS_URL, else a private redis-server), a file database the worker
subprocess can share, and media in a temporary folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.stack", "tests.fixtures.accounts", "tests.fixtures.models"]

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="aigc-tests-"))


def pytest_configure(config) -> None:  # noqa: ANN001
    from django.conf import settings

    from aigc_saas.celery import app as celery_app
    from tests.fixtures import stack

    url = os.environ.get("REDIS_URL") or stack.start_session_redis(_SESSION_DIR / "redis")
    os.environ["REDIS_URL"] = url
    settings.CELERY_BROKER_URL = url
    settings.REDIS_URL = url  # the event channel
    celery_app.conf.broker_url = url
    settings.MEDIA_ROOT = _SESSION_DIR / "media"
    settings.AIGC_WEBHOOK_ALLOW_PRIVATE = True
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = str(_SESSION_DIR / "test.sqlite3")


def pytest_unconfigure(config) -> None:  # noqa: ANN001
    from tests.fixtures import stack

    stack.stop_session_redis()


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    """Every test starts with full token buckets: the suite shares one Redis and one client address."""
    from aigc_saas.accounts.ratelimit import reset_all

    reset_all()
