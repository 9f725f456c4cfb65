"""The per-worker model cache: reuse, LRU eviction under a budget, memory really released, and no busy engine
torn down (a load waits for it to drain)."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from hardware.cache import DeviceBusy, DoesNotFit, ModelCache, default_budgets
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


class Engine(Loaded):
    """A loaded model with jobs in its engine (`busy`) or none."""

    def __init__(self, name: str, size: int, busy: bool = False) -> None:
        super().__init__(name, size)
        self.jobs = busy

    def busy(self) -> bool:
        return self.jobs


def test_a_busy_entry_is_not_evicted_the_load_waits_while_it_drains_then_takes_its_room() -> None:
    cache = ModelCache({"cpu": 10})
    cache.DRAIN_POLL_SECONDS = 0.01
    old = cache.get_or_load("a", lambda: Engine("a", 8, busy=True), device="cpu", measure=lambda v: v.size)
    loaded: list[Engine] = []
    loader = threading.Thread(
        target=lambda: loaded.append(
            cache.get_or_load("b", lambda: Engine("b", 8), device="cpu", estimate_bytes=8, wait_seconds=30)
        )
    )
    loader.start()
    deadline = time.monotonic() + 10
    while not cache.draining("a") and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cache.draining("a") and "a" in cache and not old.torn_down  # waiting, not tearing it down
    assert loaded == []

    old.jobs = False  # its last job ends
    loader.join(10)
    assert [v.name for v in loaded] == ["b"] and old.torn_down and "a" not in cache


def test_a_wait_that_runs_out_fails_the_load_and_the_busy_entry_serves_on() -> None:
    cache = ModelCache({"cpu": 10})
    cache.DRAIN_POLL_SECONDS = 0.01
    old = cache.get_or_load("a", lambda: Engine("a", 8, busy=True), device="cpu", measure=lambda v: v.size)

    with pytest.raises(DeviceBusy, match="busy") as refused:
        cache.get_or_load("b", lambda: Engine("b", 8), device="cpu", estimate_bytes=8, wait_seconds=0.05)

    assert refused.value.code == "device_busy"
    assert "a" in cache and "b" not in cache and not old.torn_down and not cache.draining("a")


def test_only_as_many_busy_entries_as_the_room_needs_drain_least_recently_used_first_and_idle_ones_go_first() -> None:
    cache = ModelCache({"cpu": 12})
    for name in ("a", "b", "c"):
        cache.get_or_load(name, lambda n=name: Engine(n, 4, busy=n != "b"), device="cpu", measure=lambda v: v.size)

    assert cache.make_room("cpu", 8) == ["a"]  # idle "b" is evicted; then 4 more bytes: the oldest busy one
    assert "b" not in cache and "a" in cache and "c" in cache


def test_clear_leaves_busy_entries() -> None:
    cache = ModelCache()
    busy = cache.get_or_load("a", lambda: Engine("a", 1, busy=True), device="cpu", measure=lambda v: v.size)
    idle = cache.get_or_load("b", lambda: Engine("b", 1), device="cpu", measure=lambda v: v.size)

    assert cache.clear("cpu") == 1
    assert idle.torn_down and not busy.torn_down and "a" in cache


def test_whether_an_entry_drains_is_answered_while_another_model_loads() -> None:
    """Claims ask it of every engine; a load holds the cache for as long as a model takes to load."""
    cache = ModelCache()
    cache.get_or_load("a", lambda: Engine("a", 1), device="cpu", measure=lambda v: v.size)
    release = threading.Event()
    loading = threading.Thread(
        target=lambda: cache.get_or_load("b", lambda: release.wait(30) and Engine("b", 1), device="cpu")
    )
    loading.start()
    answers: list[bool] = []
    asking = threading.Thread(target=lambda: answers.append(cache.draining("a")))
    time.sleep(0.05)  # the load holds the cache now
    asking.start()
    asking.join(2)
    release.set()
    loading.join(10)
    assert answers == [False]  # answered while the load still ran
