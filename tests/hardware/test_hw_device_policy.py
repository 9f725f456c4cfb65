"""Device and dtype policy on simulated CUDA and MPS, and on this machine's real CPU."""

from __future__ import annotations

import pytest

from generators.audio_speech import SpeechGenerator
from generators.image_diffusers import ImageGenerator
from hardware import DeviceUnavailable, HardwareNeeds, detect_devices, select_device


def test_cuda_with_bf16_support_gets_bfloat16(fake_cuda) -> None:  # noqa: ANN001
    fake_cuda(major=8)

    choice = select_device(ImageGenerator.needs)

    assert (choice.device, choice.dtype, choice.low_memory) == ("cuda:0", "bfloat16", False)


def test_cuda_without_bf16_support_gets_float16(fake_cuda) -> None:  # noqa: ANN001
    fake_cuda(major=7)

    assert select_device(ImageGenerator.needs).dtype == "float16"


def test_a_plugin_that_allows_only_float32_gets_it_on_cuda(fake_cuda) -> None:  # noqa: ANN001
    fake_cuda()

    choice = select_device(SpeechGenerator.needs)

    assert (choice.device, choice.dtype) == ("cuda:0", "float32")


def test_mps_gets_float16(fake_mps) -> None:  # noqa: ANN001
    choice = select_device(ImageGenerator.needs)

    assert (choice.device, choice.dtype) == ("mps", "float16")


def test_cpu_gets_float32(cpu_only) -> None:  # noqa: ANN001
    choice = select_device(ImageGenerator.needs)

    assert (choice.device, choice.dtype) == ("cpu", "float32")


def test_an_operator_can_force_the_second_gpu(fake_cuda, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    fake_cuda(count=2)
    monkeypatch.setenv("AIGC_DEVICE", "cuda:1")

    assert select_device(ImageGenerator.needs).device == "cuda:1"


def test_forcing_a_gpu_that_is_not_there_fails_loudly(fake_cuda) -> None:  # noqa: ANN001
    fake_cuda(count=1)

    with pytest.raises(DeviceUnavailable) as caught:
        select_device(ImageGenerator.needs, forced_device="cuda:1")
    assert "`cuda:1`" in str(caught.value)


def test_a_forced_dtype_the_plugin_refuses_fails_loudly(fake_cuda) -> None:  # noqa: ANN001
    fake_cuda()

    with pytest.raises(DeviceUnavailable):
        select_device(SpeechGenerator.needs, forced_dtype="float16")


def test_an_accelerator_only_plugin_is_refused_on_a_cpu_worker(cpu_only) -> None:  # noqa: ANN001
    with pytest.raises(DeviceUnavailable):
        select_device(HardwareNeeds(devices=("cuda",), dtypes=("float16",)))


def test_detected_cuda_devices_report_their_memory(fake_cuda) -> None:  # noqa: ANN001
    fake_cuda(count=2, free=3 * 1024**3, total=24 * 1024**3)

    gpus = [d for d in detect_devices() if d.kind == "cuda"]

    assert [g.id for g in gpus] == ["cuda:0", "cuda:1"]
    assert gpus[0].free_memory == 3 * 1024**3 and gpus[0].total_memory == 24 * 1024**3
