"""Simulated accelerators at the torch boundary: this machine has no GPU, so torch is told it has some."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest

GIB = 1024**3


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """Install N fake CUDA devices; returns the list `empty_cache` calls are recorded in."""
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("AIGC_DEVICE", raising=False)
    monkeypatch.delenv("AIGC_DTYPE", raising=False)
    calls: list[str] = []

    def install(count: int = 2, *, major: int = 8, free: int = 40 * GIB, total: int = 80 * GIB) -> list[str]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(
            torch.cuda,
            "get_device_properties",
            lambda index: SimpleNamespace(name=f"Fake GPU {index}", major=major, minor=0, total_memory=total),
        )
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (free, total))
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
        return calls

    return install


@pytest.fixture
def fake_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("AIGC_DEVICE", raising=False)
    monkeypatch.delenv("AIGC_DTYPE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * GIB, raising=False)


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("AIGC_DEVICE", raising=False)
    monkeypatch.delenv("AIGC_DTYPE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
