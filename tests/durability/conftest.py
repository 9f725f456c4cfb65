"""Durability fixtures: the seeded scenario catalogue, and a broker that accepts connections and never answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.durability.hung_redis import HungRedis


@pytest.fixture
def catalogue(db) -> None:  # noqa: ANN001
    from scenarios.core.catalogue import load_catalogue

    load_catalogue()


@pytest.fixture
def hung_redis() -> Iterator[HungRedis]:
    server = HungRedis()
    yield server
    server.close()
