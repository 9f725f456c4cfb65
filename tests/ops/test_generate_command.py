"""`manage.py generate <plugin> key=value …`: one job in this process, outputs in a folder, result and timings."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import soundfile
from django.core.management import CommandError, call_command
from PIL import Image

from aigc_saas.plugins.services import plugin_class
from hardware import select_device

pytestmark = pytest.mark.django_db


def generate(*args: str, **options: str) -> tuple[dict, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("generate", *args, stdout=out, stderr=err, **options)
    return json.loads(out.getvalue()), err.getvalue()


def test_a_text_job_writes_its_text_and_prints_the_result_and_timings(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    summary, err = generate(
        "transformers-text", "prompt=Three slogans", "max_new_tokens=5", "seed=3", output=str(tmp_path)
    )

    assert (tmp_path / "result.txt").read_text() == summary["text"]
    assert summary["params"]["max_new_tokens"] == 5 and summary["params"]["seed"] == 3  # JSON values parsed
    assert summary["metadata"]["completion_tokens"] == 5
    assert summary["model_id"] == str(tiny_models["transformers-text"])
    assert summary["timings"]["setup_seconds"] > 0 and summary["timings"]["generate_seconds"] > 0
    # Where it ran is the hardware module's choice (CUDA on a GPU machine), not a hard-coded cpu.
    assert summary["device"] == select_device(plugin_class("transformers-text").needs).device
    assert json.loads((tmp_path / "result.json").read_text())["text"] == summary["text"]
    assert "setup" in err and "result.txt" in err


def test_an_image_job_writes_a_png_on_the_device_asked_for(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    summary, _ = generate(
        "diffusers-image", "prompt=a red mug", "width=64", "height=64", "steps=2", output=str(tmp_path), device="cpu"
    )

    assert (summary["device"], summary["dtype"]) == ("cpu", "float32")  # pinned by --device cpu
    [file] = summary["files"]
    with Image.open(tmp_path / Path(file["filename"]).name) as image:
        assert image.size == (64, 64)


def test_a_speech_job_writes_audio(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    summary, _ = generate("transformers-speech", "text=Fresh bread", output=str(tmp_path), device="cpu")

    [file] = summary["files"]
    data, rate = soundfile.read(tmp_path / Path(file["filename"]).name)
    assert rate > 0 and len(data) > 0


def test_bad_params_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="max_new_tokens"):
        generate("transformers-text", "prompt=x", "max_new_tokens=999999", output=str(tmp_path))
    with pytest.raises(CommandError, match="key=value"):
        generate("transformers-text", "prompt", output=str(tmp_path))


def test_an_unknown_plugin_lists_the_installed_ones(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="transformers-text"):
        generate("no-such-plugin", output=str(tmp_path))


def test_a_device_the_machine_lacks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cuda:7"):
        generate("transformers-text", "prompt=x", output=str(tmp_path), device="cuda:7")
