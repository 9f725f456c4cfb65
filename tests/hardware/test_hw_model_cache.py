"""The per-worker model cache: reuse, LRU eviction under a budget, and memory really released."""

from __future__ import annotations

import gc
import weakref

import pytest

from hardware.cache import DoesNotFit, ModelCache, default_budgets
from hardware.devices import DeviceInfo
from hardware.memory import module_bytes, process_rss_bytes

MIB = 1024 * 1024


class Loaded:
    """Stands in for a loaded plugin: something weak-referenceable with a size and a teardown."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.torn_down = False

    def teardown(self) -> None:
        self.torn_down = True


def load(cache: ModelCache, key: str, size: int, device: str = "cpu") -> Loaded:
    return cache.get_or_load(key, lambda: Loaded(key, size), device=device, measure=lambda v: v.size)


def test_a_loaded_model_is_reused_without_loading_again() -> None:
    cache = ModelCache()
    loads = []

    def loader() -> Loaded:
        loads.append(1)
        return Loaded("a", 1)

    first = cache.get_or_load("a", loader, device="cpu")
    second = cache.get_or_load("a", loader, device="cpu")

    assert first is second and len(loads) == 1
    assert cache.snapshot()["entries"][0]["hits"] == 1


def test_the_least_recently_used_model_is_evicted_when_the_budget_is_full() -> None:
    cache = ModelCache({"cpu": 300})
    a, b = load(cache, "a", 100), load(cache, "b", 100)
    load(cache, "a", 100)  # touch a: b is now the least recently used

    load(cache, "c", 150)

    assert "a" in cache and "c" in cache and "b" not in cache
    assert b.torn_down and not a.torn_down
    assert cache.used("cpu") == 250


def test_budgets_are_per_device() -> None:
    cache = ModelCache({"cuda:0": 100, "cuda:1": 100})
    load(cache, "on-0", 80, device="cuda:0")

    load(cache, "on-1", 80, device="cuda:1")

    assert "on-0" in cache and "on-1" in cache


def test_a_kind_wide_budget_applies_to_each_device_of_that_kind() -> None:
    cache = ModelCache({"cuda": 100})
    load(cache, "x", 80, device="cuda:1")

    load(cache, "y", 80, device="cuda:1")

    assert "x" not in cache and cache.budget_for("cuda:1") == 100


def test_an_estimate_larger_than_the_budget_does_not_fit_and_loads_nothing() -> None:
    cache = ModelCache({"cpu": 100})
    loads = []

    with pytest.raises(DoesNotFit) as caught:
        cache.get_or_load("big", lambda: loads.append(1), device="cpu", estimate_bytes=101)

    assert caught.value.code == "model_exceeds_budget" and loads == []


def test_a_model_measured_larger_than_the_budget_is_dropped_not_kept() -> None:
    cache = ModelCache({"cpu": 100})
    kept = load(cache, "small", 50)

    with pytest.raises(DoesNotFit):
        load(cache, "huge", 500)

    assert "huge" not in cache and cache.used("cpu") == 50 and not kept.torn_down


def test_a_low_estimate_is_settled_with_the_measured_size() -> None:
    cache = ModelCache({"cpu": 100})
    load(cache, "a", 60)

    cache.get_or_load("b", lambda: Loaded("b", 60), device="cpu", estimate_bytes=10, measure=lambda v: v.size)

    assert "a" not in cache and cache.used("cpu") == 60


def test_without_a_measure_the_size_is_the_bytes_of_its_torch_modules() -> None:
    torch = pytest.importorskip("torch")
    cache = ModelCache()

    model = cache.get_or_load("linear", lambda: torch.nn.Linear(256, 256), device="cpu")

    assert cache.used("cpu") == module_bytes(model) == (256 * 256 + 256) * 4


def test_eviction_drops_the_last_reference_to_the_model() -> None:
    cache = ModelCache()
    ref = weakref.ref(load(cache, "a", 1))
    assert ref() is not None

    assert cache.evict("a") is True
    gc.collect()

    assert ref() is None and "a" not in cache


@pytest.mark.skipif(process_rss_bytes() is None, reason="needs /proc to read resident memory")
def test_eviction_gives_the_memory_back_to_the_operating_system() -> None:
    torch = pytest.importorskip("torch")
    size = 2 * 64 * MIB

    def loader() -> torch.nn.Module:
        model = torch.nn.Sequential(torch.nn.Linear(4096, 4096, bias=False), torch.nn.Linear(4096, 4096, bias=False))
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(1.0)  # touch every page so it is resident
        return model

    cache = ModelCache({"cpu": 4 * size})
    cache.get_or_load("big", loader, device="cpu")
    gc.collect()
    loaded_rss = process_rss_bytes()
    assert cache.used("cpu") == size

    cache.evict("big")
    released_rss = process_rss_bytes()

    assert cache.used("cpu") == 0
    assert loaded_rss - released_rss >= 0.8 * size, (loaded_rss, released_rss)


def test_clear_evicts_only_the_given_device() -> None:
    cache = ModelCache()
    load(cache, "c", 1, device="cpu")
    load(cache, "g", 1, device="cuda:0")

    assert cache.clear("cuda:0") == 1
    assert "c" in cache and "g" not in cache


def test_a_failed_load_leaves_nothing_behind() -> None:
    cache = ModelCache()

    def broken() -> None:
        raise OSError("weights not found")

    with pytest.raises(OSError):
        cache.get_or_load("broken", broken, device="cpu")
    assert len(cache) == 0


def test_snapshot_reports_budget_occupancy_and_entries() -> None:
    cache = ModelCache({"cpu": 1000, "cuda:0": 5000})
    load(cache, "a", 100)
    load(cache, "b", 200)
    cache.evict("a")

    snapshot = cache.snapshot()

    assert snapshot["devices"]["cpu"]["budget_bytes"] == 1000
    assert snapshot["devices"]["cpu"]["used_bytes"] == 200
    assert snapshot["devices"]["cpu"]["entries"] == 1
    assert snapshot["devices"]["cuda:0"]["used_bytes"] == 0
    assert [e["key"] for e in snapshot["entries"]] == ["b"]
    assert snapshot["evictions"] == 1


def test_default_budgets_take_a_fraction_of_memory_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [
        DeviceInfo(id="cuda:0", kind="cuda", name="gpu", total_memory=1000 * MIB),
        DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=8000 * MIB),
    ]
    monkeypatch.setenv("AIGC_CACHE_BUDGET_MB_CPU", "2048")

    budgets = default_budgets(devices, fraction=0.5)

    assert budgets == {"cuda:0": 500 * MIB, "cpu": 2048 * MIB}


def test_evicting_a_loaded_image_plugin_frees_its_pipeline(tmp_path) -> None:  # noqa: ANN001
    from generators.image_diffusers import ImageGenerator
    from generators.testing.tiny_models import build_tiny_image_model
    from hardware import DeviceChoice

    path = build_tiny_image_model(tmp_path / "image")
    cache = ModelCache({"cpu": 512 * MIB})

    def loader() -> ImageGenerator:
        plugin = ImageGenerator(ImageGenerator.Config(model_id=str(path)))
        plugin.setup(DeviceChoice(device="cpu", dtype="float32"))
        return plugin

    unet = weakref.ref(cache.get_or_load(("diffusers-image", str(path), "cpu"), loader, device="cpu").pipe.unet)
    assert cache.used("cpu") > 0

    cache.clear()
    gc.collect()

    assert unet() is None and cache.used("cpu") == 0
