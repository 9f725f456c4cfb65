"""The built-in `transformers-speech` plugin, run on tiny real VITS models."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from generators.audio_speech import SpeechGenerator
from generators.base import LocalContext
from generators.errors import JobCancelled, ModelLoadFailed, ParamsInvalid
from hardware import DeviceChoice

CPU = DeviceChoice(device="cpu", dtype="float32")


def params(**overrides: object):  # noqa: ANN201
    return SpeechGenerator.validate_params({"text": "Our spring sale starts today.", "seed": 1} | overrides)


def decode(data: bytes) -> tuple:
    return soundfile.read(io.BytesIO(data))


@pytest.fixture(scope="module")
def multi_speaker_plugin(tiny_multi_speaker_model: Path) -> SpeechGenerator:
    plugin = SpeechGenerator(SpeechGenerator.Config(model_id=str(tiny_multi_speaker_model)))
    plugin.setup(CPU)
    return plugin


def test_module_import_does_not_import_torch() -> None:
    code = "import generators.audio_speech, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_model_id_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGC_MODEL_TRANSFORMERS_SPEECH", "facebook/mms-tts-deu")
    assert SpeechGenerator.default_config().model_id == "facebook/mms-tts-deu"


def test_wav_decodes_and_its_length_matches_the_recorded_duration(speech_plugin: SpeechGenerator) -> None:
    result = speech_plugin.generate(params(), LocalContext())

    [file] = result.files
    samples, sample_rate = decode(file.data)
    info = soundfile.info(io.BytesIO(file.data))
    assert (file.filename, file.content_type, info.format, info.subtype) == ("speech.wav", "audio/wav", "WAV", "PCM_16")
    assert sample_rate == file.metadata["sample_rate"] == 16000
    assert len(samples) == file.metadata["frames"] > 0
    assert file.metadata["duration_seconds"] == pytest.approx(len(samples) / sample_rate, abs=1e-3)
    assert file.metadata["channels"] == info.channels == 1
    for key in ("format", "model_id", "device", "dtype", "seed"):
        assert key in file.metadata


@pytest.mark.parametrize(
    ("fmt", "container", "content_type"), [("flac", "FLAC", "audio/flac"), ("ogg", "OGG", "audio/ogg")]
)
def test_flac_and_ogg_decode_to_the_same_length(
    speech_plugin: SpeechGenerator, fmt: str, container: str, content_type: str
) -> None:
    wav = speech_plugin.generate(params(), LocalContext()).files[0]
    other = speech_plugin.generate(params(format=fmt), LocalContext()).files[0]

    samples, sample_rate = decode(other.data)
    assert soundfile.info(io.BytesIO(other.data)).format == container
    assert other.content_type == content_type and other.filename == f"speech.{fmt}"
    assert sample_rate == 16000
    assert len(samples) == wav.metadata["frames"] == other.metadata["frames"]


def test_same_seed_gives_the_same_audio(speech_plugin: SpeechGenerator) -> None:
    assert speech_plugin.generate(params(), LocalContext()).files[0].data == (
        speech_plugin.generate(params(), LocalContext()).files[0].data
    )


def test_a_faster_speaking_rate_gives_shorter_audio(speech_plugin: SpeechGenerator) -> None:
    slow = speech_plugin.generate(params(speaking_rate=0.5), LocalContext()).metadata["frames"]
    fast = speech_plugin.generate(params(speaking_rate=2.0), LocalContext()).metadata["frames"]

    assert fast < slow


def test_progress_ends_at_one_and_never_goes_back(speech_plugin: SpeechGenerator) -> None:
    ctx = LocalContext()
    speech_plugin.generate(params(), ctx)

    fractions = [fraction for fraction, _ in ctx.reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_a_cancelled_job_raises_job_cancelled(speech_plugin: SpeechGenerator) -> None:
    with pytest.raises(JobCancelled):
        speech_plugin.generate(params(), LocalContext(cancel_after=0))


def test_speaker_id_on_a_single_voice_model_is_refused_naming_the_field(speech_plugin: SpeechGenerator) -> None:
    with pytest.raises(ParamsInvalid) as caught:
        speech_plugin.generate(params(speaker_id=1), LocalContext())

    assert caught.value.errors[0]["field"] == "speaker_id"
    assert "`speaker_id`" in caught.value.message and "single voice" in caught.value.message


def test_each_voice_of_a_multi_speaker_model_sounds_different(multi_speaker_plugin: SpeechGenerator) -> None:
    voice_0 = multi_speaker_plugin.generate(params(speaker_id=0), LocalContext()).files[0]
    voice_2 = multi_speaker_plugin.generate(params(speaker_id=2), LocalContext()).files[0]

    assert voice_2.metadata["speaker_id"] == 2
    assert voice_0.data != voice_2.data


def test_a_speaker_id_beyond_the_model_voices_is_refused(multi_speaker_plugin: SpeechGenerator) -> None:
    with pytest.raises(ParamsInvalid) as caught:
        multi_speaker_plugin.generate(params(speaker_id=3), LocalContext())

    assert caught.value.errors[0]["field"] == "speaker_id"
    assert "0-2" in caught.value.message


def test_text_without_a_pronounceable_character_is_refused(speech_plugin: SpeechGenerator) -> None:
    with pytest.raises(ParamsInvalid) as caught:
        speech_plugin.generate(params(text="日本語"), LocalContext())

    assert caught.value.errors[0]["field"] == "text"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"text": ""}, "text"),
        ({"text": "a" * 1001}, "text"),
        ({"speaking_rate": 0.4}, "speaking_rate"),
        ({"speaking_rate": 2.5}, "speaking_rate"),
        ({"format": "mp3"}, "format"),
        ({"speaker_id": -1}, "speaker_id"),
        ({"voice": "alice"}, "voice"),
    ],
)
def test_bad_params_are_refused_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ParamsInvalid) as caught:
        params(**overrides)

    assert [e["field"] for e in caught.value.errors] == [field]


def test_a_phoneme_model_without_phonemizer_fails_to_load_with_a_sentence(
    tiny_speech_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    model = shutil.copytree(tiny_speech_model, tmp_path / "phoneme-model")
    config_file = model / "tokenizer_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"phonemize": True}))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "phonemizer" else real_find_spec(name, *a)
    )

    plugin = SpeechGenerator(SpeechGenerator.Config(model_id=str(model)))
    with pytest.raises(ModelLoadFailed) as caught:
        plugin.setup(CPU)
    assert "`phonemizer`" in caught.value.message and "espeak-ng" in caught.value.message
