"""Each process checks the shared registry stamp at most once a second, and re-scans only when it moved."""

from __future__ import annotations

import time

import pytest

from aigc_saas.plugins import services


@pytest.fixture
def stamp_reads(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Count the real Redis reads of the stamp (the read itself still happens)."""
    reads: list[float] = []
    real = services.read_stamp

    def counted() -> tuple[bytes | None, bool]:
        reads.append(time.monotonic())
        return real()

    monkeypatch.setattr(services, "read_stamp", counted)
    services.reload_registry()
    return reads


def test_the_stamp_is_read_at_most_once_a_second_however_often_the_registry_is_asked(stamp_reads) -> None:  # noqa: ANN001
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        assert "transformers-text" in services.registry()

    assert 1 <= len(stamp_reads) <= 2  # 1.5 s of calls: one read, maybe a second after the first second


def test_a_bump_elsewhere_makes_this_process_rescan_once(stamp_reads, monkeypatch) -> None:  # noqa: ANN001
    rescans: list[int] = []
    real = services._rescan
    monkeypatch.setattr(services, "_rescan", lambda previous: rescans.append(1) or real(previous))
    before = services.registry()

    services._redis().incr(services.STAMP_KEY)  # another process re-scanned
    time.sleep(services.STAMP_CHECK_SECONDS + 0.1)
    after = services.registry()
    services.registry()

    assert rescans == [1]
    assert after is not before and set(after.plugins) == set(before.plugins)


def test_this_process_takes_its_own_bump_without_rescanning_again(stamp_reads, monkeypatch) -> None:  # noqa: ANN001
    rescans: list[int] = []
    real = services._rescan
    monkeypatch.setattr(services, "_rescan", lambda previous: rescans.append(1) or real(previous))

    services.bump_stamp()
    time.sleep(services.STAMP_CHECK_SECONDS + 0.1)
    services.registry()

    assert rescans == []
