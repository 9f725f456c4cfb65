"""Limits tests talk to the session's real Redis (tests/conftest.py starts it) and start each test with clean buckets."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import pytest
from django.test import Client

from aigc_saas.accounts import ratelimit


@pytest.fixture(autouse=True)
def session_redis(settings) -> Iterator[str]:  # noqa: ANN001
    # The session conftest points Celery at its redis-server; the limits read settings.REDIS_URL.
    settings.REDIS_URL = os.environ["REDIS_URL"]
    ratelimit._client.down_until = 0.0
    ratelimit.reset_all()
    yield settings.REDIS_URL


@pytest.fixture
def submit() -> Callable[..., object]:
    def post(client: Client, **extra: str) -> object:
        body = {"generator": "transformers-text", "params": {"prompt": "hello"}}
        return client.post("/api/v1/jobs", json.dumps(body), content_type="application/json", **extra)

    return post
