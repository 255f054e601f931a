"""The recognizer on the session's tiny bundle (built in test_bundle.py): decisions, odd input, streaming."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from assistant.bundle import MANIFEST, Bundle, load_bundle
from assistant.errors import AudioError, BundleError, ConfigError
from assistant.messages import InferenceResult
from assistant.recognizer import Recognizer
from assistant.wav import read_wav

pytest.importorskip("torch")  # the tiny bundle is built with distill
from tests.assistant.test_bundle import COMMANDS, tiny_bundle, tone_clip  # noqa: E402  (builds once per session)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return load_bundle(tiny_bundle(tmp_path_factory))


@pytest.fixture(scope="module")
def recognizer(bundle: Bundle) -> Recognizer:
    return Recognizer(bundle)


def decision(result: InferenceResult) -> tuple[str | None, dict[str, str]]:
    return result.intent, result.slots


def probabilities(recognizer: Recognizer, audio: np.ndarray) -> list[np.ndarray]:
    return [p[0] for p in recognizer.session.run(None, {"audio": audio[None].astype(np.float32)})]


def test_recognize_decides_each_command(recognizer: Recognizer) -> None:
    for k, command in enumerate(COMMANDS):
        result = recognizer.recognize(tone_clip(k, 14000 + 77 * k, 500 + k), f"clip{k}")
        assert decision(result) == command
        assert result.input == f"clip{k}" and result.understood == (command[0] is not None)
        assert 0.3 <= result.confidence <= 1.0 and result.latency_ms > 0


def test_samples_match_the_manifest(bundle: Bundle, recognizer: Recognizer) -> None:
    for sample in bundle.manifest.samples:
        result = recognizer.recognize(read_wav(bundle.path / sample.audio.file)).to_dict()
        assert {k: result[k] for k in ("understood", "intent", "slots")} == \
            {k: sample.expected[k] for k in ("understood", "intent", "slots")}


def test_threshold_rejects_unsure_commands(bundle: Bundle) -> None:
    clip = tone_clip(0, 16000, 1)
    assert Recognizer(bundle, threshold=0.0).recognize(clip).understood
    strict = Recognizer(bundle, threshold=1.0).recognize(clip)
    assert not strict.understood and strict.intent is None and strict.slots == {} and strict.confidence < 1.0


def test_batch_equals_one_by_one(recognizer: Recognizer) -> None:
    clips = [tone_clip(k % len(COMMANDS), n, k) for k, n in enumerate((16000, 12000, 16000, 9999, 16000, 12000))]
    batch = recognizer.recognize_batch(clips, [f"c{i}" for i in range(len(clips))])
    single = [recognizer.recognize(c, f"c{i}") for i, c in enumerate(clips)]
    assert [(r.input, decision(r)) for r in batch] == [(r.input, decision(r)) for r in single]
    assert [r.confidence for r in batch] == pytest.approx([r.confidence for r in single], abs=1e-4)
    with pytest.raises(ValueError, match="3 clips but 1 input names"):
        recognizer.recognize_batch(clips[:3], ["x"])


def test_nan_and_inf_are_replaced_and_logged_once(bundle: Bundle, caplog: pytest.LogCaptureFixture) -> None:
    recognizer = Recognizer(bundle)
    clip = tone_clip(2, 16000, 3)
    clean = recognizer.recognize(clip)
    dirty = clip.copy()
    dirty[100:110] = np.nan
    dirty[5000] = np.inf
    with caplog.at_level(logging.WARNING, logger="assistant.recognizer"):
        first = recognizer.recognize(dirty, "dirty.wav")
        second = recognizer.recognize(dirty, "dirty.wav")
    assert decision(first) == decision(second) == decision(clean)
    assert np.isfinite(first.confidence)
    warnings = [r for r in caplog.records if "NaN" in r.getMessage()]
    assert len(warnings) == 1 and "dirty.wav" in warnings[0].getMessage()


def test_short_and_empty_audio_are_zero_padded(recognizer: Recognizer) -> None:
    short = tone_clip(1, 700, 4)
    padded = np.pad(short, (0, 1600 - 700))
    assert recognizer.recognize(short).confidence == recognizer.recognize(padded).confidence
    empty = recognizer.recognize(np.zeros(0, np.float32), "empty")
    assert empty.input == "empty" and empty.confidence == recognizer.recognize(np.zeros(1600, np.float32)).confidence


def test_quiet_around_a_clip_is_trimmed_before_the_model(bundle: Bundle, recognizer: Recognizer) -> None:
    """Quiet beyond the margins (0.3 s before, 0.3 s after) never reaches the model unless trim=None."""
    clip = tone_clip(1, 14000, 7)
    padded = np.concatenate([np.zeros(32000, np.float32), clip, np.zeros(24000, np.float32)])
    kept = recognizer.prepare(padded)
    assert len(clip) < len(kept) <= len(clip) + 9600 + 320 and np.array_equal(kept[4800:4800 + len(clip)], clip)
    assert decision(recognizer.recognize(padded)) == decision(recognizer.recognize(clip)) == COMMANDS[1]
    whole = Recognizer(bundle, trim=None).prepare(padded)
    assert len(whole) == min(len(padded), bundle.manifest.max_samples)


def test_long_audio_is_cropped_to_the_manifest_maximum(bundle: Bundle, caplog: pytest.LogCaptureFixture) -> None:
    recognizer = Recognizer(bundle)
    limit = bundle.manifest.max_samples
    long = np.concatenate([tone_clip(3, limit, 5), tone_clip(0, 32000, 6)])
    with caplog.at_level(logging.WARNING, logger="assistant.recognizer"):
        cropped = recognizer.recognize(long, "long.wav")
    assert cropped.confidence == recognizer.recognize(long[:limit]).confidence
    assert decision(cropped) == COMMANDS[3]
    assert any("only the first 10.0 s are used" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("audio", "message"), [
    (np.zeros(1600, np.int16), r"expected float PCM in \[-1, 1\] at 16000 Hz, got dtype int16 \(divide int16"),
    (np.zeros((2, 1600), np.float32), r"expected 1-D mono audio \[samples\], got shape \(2, 1600\)"),
    ("not audio", "expected float PCM"),
])
def test_bad_input_says_what_was_expected(recognizer: Recognizer, audio: object, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        recognizer.recognize(audio, "input")


def test_settings_are_validated(bundle: Bundle) -> None:
    with pytest.raises(ConfigError, match="threads: expected a positive integer, got 0"):
        Recognizer(bundle, threads=0)
    with pytest.raises(ConfigError, match=r"threshold: expected a number in \[0, 1\], got 2"):
        Recognizer(bundle, threshold=2)
    with pytest.raises(ConfigError, match=r"gate: expected a number in \[0, 1\], got -0.5"):
        Recognizer(bundle, gate=-0.5)
    with pytest.raises(ConfigError, match="no grammar decoder"):  # a heads-only bundle has no gate to override
        Recognizer(bundle, gate=0.5)


# --- streaming -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(bundle: Bundle) -> Recognizer:
    """The bundle's fp32 reference model (the streaming model is fp32 too)."""
    return Recognizer(bundle, reference=True)


def test_int8_agrees_with_fp32(recognizer: Recognizer, reference: Recognizer) -> None:
    """Measured on 40 fresh clips (8 per class, new seeds, lengths and gains); on this tiny model the
    int8 (static QDQ) decisions are expected to equal the fp32 ones on every clip."""
    clips = [tone_clip(k % len(COMMANDS), 6000 + 1237 * k, 900 + k) * (0.4 + 0.03 * k) for k in range(40)]
    int8 = [decision(r) for r in recognizer.recognize_batch(clips)]
    fp32 = [decision(r) for r in reference.recognize_batch(clips)]
    same = sum(a == b for a, b in zip(int8, fp32, strict=True))
    print(f"int8 vs fp32: same decision on {same}/{len(clips)} clips")
    assert same == len(clips)
    assert fp32 == [COMMANDS[k % len(COMMANDS)] for k in range(40)]


@pytest.mark.parametrize("chunk", [320, 1000, 4321, 16000])
def test_streaming_equals_whole_utterance(recognizer: Recognizer, reference: Recognizer, chunk: int) -> None:
    """The streaming graph is fp32: it must match the fp32 whole-utterance model to float precision
    (and decide like the int8 one on these clips)."""
    stream = recognizer.stream()
    for k in range(len(COMMANDS)):
        clip = tone_clip(k, 15000 + 123 * k, 40 + k)
        stream.reset()
        for start in range(0, len(clip), chunk):
            stream.feed(clip[start : start + chunk])
        streamed = stream.result(f"clip{k}")
        whole = reference.recognize(clip, f"clip{k}")
        assert decision(streamed) == decision(whole) == decision(recognizer.recognize(clip)) == COMMANDS[k]
        assert streamed.confidence == pytest.approx(whole.confidence, abs=1e-4)
        assert stream.probs is not None
        for got, want in zip(stream.probs, probabilities(reference, clip), strict=True):
            np.testing.assert_allclose(got, want, atol=1e-4)


def test_streaming_pads_short_audio_and_crops_long_audio_like_recognize(recognizer: Recognizer,
                                                                        reference: Recognizer) -> None:
    stream = recognizer.stream()
    short = tone_clip(1, 900, 8)
    stream.feed(short)
    assert stream.result().confidence == pytest.approx(reference.recognize(short).confidence, abs=1e-4)
    stream.feed(tone_clip(1, 500, 9))  # result() did not consume the padding: more audio can follow
    assert stream.heard == 1400
    stream.reset()
    limit = recognizer.manifest.max_samples
    long = np.concatenate([tone_clip(2, limit - 1000, 10), tone_clip(4, 40000, 11)])
    for start in range(0, len(long), 8000):
        stream.feed(long[start : start + 8000])
    assert stream.heard == limit
    assert stream.result().confidence == pytest.approx(reference.recognize(long).confidence, abs=1e-4)
    stream.reset()
    with pytest.raises(AudioError, match="expected 1-D mono audio"):
        stream.feed(np.zeros((320, 2), np.float32))


def test_a_bundle_without_a_streaming_model(bundle: Bundle, tmp_path: Path) -> None:
    folder = tmp_path / "no-stream"
    shutil.copytree(bundle.path, folder)
    (folder / "model_stream.onnx").unlink()
    data = json.loads((folder / MANIFEST).read_text())
    data["streaming"] = None
    (folder / MANIFEST).write_text(json.dumps(data))
    recognizer = Recognizer(load_bundle(folder))
    assert decision(recognizer.recognize(tone_clip(0, 16000, 2))) == COMMANDS[0]
    with pytest.raises(BundleError, match="this bundle has no streaming model"):
        recognizer.stream()


def test_a_bundle_without_a_reference_model(bundle: Bundle, tmp_path: Path) -> None:
    folder = tmp_path / "int8-only"
    shutil.copytree(bundle.path, folder)
    (folder / "model.fp32.onnx").unlink()
    data = json.loads((folder / MANIFEST).read_text())
    data["reference_model"] = None
    (folder / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="kept no float reference model"):
        Recognizer(load_bundle(folder), reference=True)
