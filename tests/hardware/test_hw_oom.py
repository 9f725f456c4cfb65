"""Out-of-memory handling, simulated at the torch boundary: recognise, retry in low-memory mode, plan ahead."""

from __future__ import annotations

import pytest

from hardware import DeviceChoice, HardwareNeeds
from hardware.cache import ModelCache
from hardware.oom import DeviceOutOfMemory, is_oom, oom_as_device_error, plan_memory_mode, run_with_oom_retry

MIB = 1024 * 1024
GPU = DeviceChoice(device="cuda:0", dtype="float16")


@pytest.fixture
def torch():  # noqa: ANN201
    return pytest.importorskip("torch")


def cuda_oom(torch):  # noqa: ANN001, ANN201
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")


class Coded(Exception):
    code = "out_of_memory"


@pytest.mark.parametrize(
    "make",
    [
        lambda t: t.cuda.OutOfMemoryError("CUDA out of memory"),
        lambda t: RuntimeError("CUDA error: out of memory"),
        lambda t: RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB)"),
        lambda t: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
        lambda t: RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        lambda t: MemoryError(),
        lambda t: Coded("the device ran out of memory"),
    ],
)
def test_out_of_memory_errors_are_recognised(torch, make) -> None:  # noqa: ANN001
    assert is_oom(make(torch))


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch"), ValueError("out of memory"), KeyError("x")])
def test_other_errors_are_not_out_of_memory(exc: Exception) -> None:
    assert not is_oom(exc)


def test_an_out_of_memory_error_wrapped_by_a_plugin_is_still_recognised(torch) -> None:  # noqa: ANN001
    try:
        try:
            raise cuda_oom(torch)
        except RuntimeError as inner:
            raise ValueError("generation failed") from inner
    except ValueError as outer:
        assert is_oom(outer)


def test_oom_retry_clears_the_cache_and_retries_once_in_low_memory_mode(torch, fake_cuda) -> None:  # noqa: ANN001
    empty_cache_calls = fake_cuda()
    cache = ModelCache()
    cache.get_or_load("resident", object, device="cuda:0", estimate_bytes=10)
    attempts: list[DeviceChoice] = []
    retried: list[DeviceChoice] = []

    def run(choice: DeviceChoice) -> str:
        attempts.append(choice)
        if not choice.low_memory:
            raise cuda_oom(torch)
        return "made it"

    result = run_with_oom_retry(run, GPU, cache=cache, on_retry=lambda c, exc: retried.append(c))

    assert result == "made it"
    assert [a.low_memory for a in attempts] == [False, True]
    assert retried == [DeviceChoice(device="cuda:0", dtype="float16", low_memory=True)]
    assert "resident" not in cache and empty_cache_calls


def test_a_second_oom_raises_device_out_of_memory(torch, fake_cuda) -> None:  # noqa: ANN001
    fake_cuda()
    attempts = []

    def run(choice: DeviceChoice) -> None:
        attempts.append(choice)
        raise cuda_oom(torch)

    with pytest.raises(DeviceOutOfMemory) as caught:
        run_with_oom_retry(run, GPU)

    assert len(attempts) == 2
    assert caught.value.code == "out_of_memory"
    assert caught.value.device == "cuda:0" and caught.value.low_memory is True
    assert "`cuda:0`" in caught.value.message


def test_an_oom_already_in_low_memory_mode_is_not_retried(torch, fake_cuda) -> None:  # noqa: ANN001
    fake_cuda()
    attempts = []

    def run(choice: DeviceChoice) -> None:
        attempts.append(choice)
        raise cuda_oom(torch)

    with pytest.raises(DeviceOutOfMemory):
        run_with_oom_retry(run, DeviceChoice(device="cuda:0", dtype="float16", low_memory=True))
    assert len(attempts) == 1


def test_errors_that_are_not_oom_pass_through_untouched() -> None:
    attempts = []

    def run(choice: DeviceChoice) -> None:
        attempts.append(choice)
        raise ValueError("`width` must be a multiple of 8")

    with pytest.raises(ValueError, match="multiple of 8"):
        run_with_oom_retry(run, GPU)
    assert len(attempts) == 1


def test_a_loader_that_runs_out_of_memory_through_the_cache_leaves_no_entry(torch, fake_cuda) -> None:  # noqa: ANN001
    fake_cuda()
    cache = ModelCache({"cuda:0": 1000 * MIB})

    def run(choice: DeviceChoice) -> str:
        def loader() -> str:
            if not choice.low_memory:
                raise cuda_oom(torch)
            return "low-memory pipeline"

        return cache.get_or_load(("image", choice.low_memory), loader, device=choice.device, estimate_bytes=MIB)

    assert run_with_oom_retry(run, GPU, cache=cache) == "low-memory pipeline"
    assert [e["key"] for e in cache.snapshot()["entries"]] == ["('image', True)"]


def test_oom_as_device_error_converts_only_oom(torch) -> None:  # noqa: ANN001
    with pytest.raises(DeviceOutOfMemory), oom_as_device_error(GPU):
        raise cuda_oom(torch)
    with pytest.raises(KeyError), oom_as_device_error(GPU):
        raise KeyError("unrelated")


def test_low_memory_mode_is_chosen_up_front_when_the_gpu_lacks_free_memory(fake_cuda) -> None:  # noqa: ANN001
    fake_cuda(free=2000 * MIB)

    choice = plan_memory_mode(GPU, HardwareNeeds(memory_mb=3000))

    assert choice == DeviceChoice(device="cuda:0", dtype="float16", low_memory=True)


def test_normal_mode_is_kept_when_the_gpu_has_room(fake_cuda) -> None:  # noqa: ANN001
    fake_cuda(free=4000 * MIB)

    assert plan_memory_mode(GPU, HardwareNeeds(memory_mb=3000)) is GPU


def test_memory_the_cache_can_evict_counts_as_free(fake_cuda) -> None:  # noqa: ANN001
    fake_cuda(free=2000 * MIB)
    cache = ModelCache()
    cache.get_or_load("other-model", object, device="cuda:0", estimate_bytes=1500 * MIB)

    assert plan_memory_mode(GPU, HardwareNeeds(memory_mb=3000), cache=cache).low_memory is False


def test_cpu_never_switches_to_low_memory_mode() -> None:
    cpu = DeviceChoice(device="cpu", dtype="float32")

    assert plan_memory_mode(cpu, HardwareNeeds(memory_mb=10**9)) is cpu
