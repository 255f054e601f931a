"""The student: shapes, size, and streaming = whole-utterance output."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from assistant.errors import ConfigError  # noqa: E402
from distill.nets.frontend import FrontendConfig  # noqa: E402
from distill.nets.profile import count_parameters  # noqa: E402
from distill.nets.student import StreamingStudent, Student, StudentConfig  # noqa: E402


def test_shapes_and_size() -> None:
    model = Student([4, 3, 6]).eval()
    logits, feats = model.forward_features(torch.randn(2, 16000))
    assert [tuple(t.shape) for t in logits] == [(2, 4), (2, 3), (2, 6)]
    assert feats.shape == (2, 50, 64)  # 100 frames of 10 ms, merged in pairs by the stem
    assert 10_000 <= count_parameters(model) <= 200_000


@pytest.mark.parametrize("stem", ["conv1d", "conv2d"])
@pytest.mark.parametrize("chunk", [320, 1600, 4800])
def test_streaming_equals_whole_utterance(chunk: int, stem: str) -> None:
    torch.manual_seed(0)
    model = Student([5, 3], StudentConfig(stem=stem)).eval()
    with torch.no_grad():
        for p in model.parameters():  # make BN statistics non-trivial
            p.add_(0.05 * torch.randn_like(p))
        audio = 0.1 * torch.randn(2, 9600)
        whole = model(audio)
        stream = StreamingStudent(model)
        state = stream.initial_state(batch=2)
        for start in range(0, audio.shape[1], chunk):
            logits, state = stream.step(audio[:, start : start + chunk], state)
    for a, b in zip(whole, logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_streaming_rejects_ragged_chunks() -> None:
    stream = StreamingStudent(Student([3]).eval())
    with pytest.raises(ValueError, match="multiple of 320"):
        stream.step(torch.zeros(1, 480), stream.initial_state())


def test_streaming_needs_causal_frontend() -> None:
    model = Student([3], StudentConfig(frontend=FrontendConfig(normalize="utterance")))
    with pytest.raises(ConfigError, match="causal"):
        StreamingStudent(model)


def test_a_centred_student_looks_ahead_and_cannot_stream() -> None:
    torch.manual_seed(0)
    causal = Student([3], StudentConfig(channels=8, dilations=(1, 2))).eval()
    centred = Student([3], StudentConfig(channels=8, dilations=(1, 2), causal=False)).eval()
    centred.load_state_dict(causal.state_dict())  # the same weights: only the padding differs
    mel = torch.randn(1, causal.cfg.frontend.n_mels, 40)
    later = mel.clone()
    later[:, :, 30:] += 5.0  # change only the frames from step 15 on
    with torch.no_grad():
        for model, ahead in ((causal, False), (centred, True)):
            a, b = model.frames(mel), model.frames(later)
            assert torch.equal(a[:, :, :10], b[:, :, :10]) is not ahead  # steps 0-9 see step 15 only if centred
            assert a.shape == b.shape == (1, 8, 20)  # same length either way
    with pytest.raises(ConfigError, match="causal student"):
        StreamingStudent(centred)
    assert StudentConfig.from_dict(centred.cfg.to_dict()).causal is False


def test_config_roundtrip() -> None:
    cfg = StudentConfig(channels=32, dilations=(1, 2))
    assert StudentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="dilations"):
        StudentConfig(dilations=(0,))


@pytest.mark.parametrize("stem", ["conv1d", "conv2d"])
def test_padded_batch_with_lengths_equals_each_clip_alone(stem: str) -> None:
    """Training and evaluation batch clips of different lengths; with ``lengths`` the padding stays out."""
    torch.manual_seed(0)
    model = Student([5, 3, 4], StudentConfig(channels=16, stem=stem, dilations=(1, 2, 4))).eval()
    clips = [torch.randn(16000) * 0.1, torch.randn(9000) * 0.1, torch.randn(1700) * 0.1]
    n = max(len(c) for c in clips)
    batch = torch.stack([torch.nn.functional.pad(c, (0, n - len(c))) for c in clips])
    with torch.no_grad():
        masked = model(batch, torch.tensor([len(c) for c in clips]))
        unmasked = model(batch)
        for i, clip in enumerate(clips):
            alone = model(clip[None])
            assert max(float((m[i] - a[0]).abs().max()) for m, a in zip(masked, alone, strict=True)) < 1e-5
        # without lengths the padded clips' results differ: the mask is what makes them equal
        assert max(float((u[2] - a[0]).abs().max()) for u, a in zip(unmasked, model(clips[2][None]), strict=True)) > 1e-3


def test_pad_mel_valid_marks_real_frames_and_pads_quietly() -> None:
    from distill.distillation import MelStudent, pad_mel_valid

    mels = [torch.randn(8, 10) - 2.0, torch.randn(8, 4) - 2.0]
    x = pad_mel_valid(mels, floor=-13.8, multiple=4)
    assert x.shape == (2, 9, 12)
    assert x[0, -1].tolist() == [1.0] * 10 + [0.0] * 2
    assert x[1, -1].tolist() == [1.0] * 4 + [0.0] * 8
    assert torch.equal(x[1, :-1, :4], mels[1])
    pad = x[1, :-1, 4:]
    assert bool((pad >= mels[1].min(dim=1).values[:, None] - 1e-6).all())  # a quiet level of the clip, not log(0)
    assert bool((pad <= mels[1].max(dim=1).values[:, None]).all())
    torch.manual_seed(0)
    student = Student([3, 2], StudentConfig(channels=8, dilations=(1, 2), frontend=FrontendConfig(
        n_mels=8, normalize="none", padding="causal"))).eval()
    with torch.no_grad():
        both = MelStudent(student)(x)
        alone = student.forward_mel(mels[1][None])[0]
    assert max(float((b[1] - a[0]).abs().max()) for b, a in zip(both, alone, strict=True)) < 1e-5


def test_spec_augment_masks_only_real_frames_and_repeats_per_step() -> None:
    from distill.distillation import pad_mel_valid, spec_augment
    from distill.train import TrainConfig

    mels = [torch.randn(8, 30) + 5.0, torch.randn(8, 6) + 5.0]  # no value is 0 before masking
    x = pad_mel_valid(mels, floor=-13.8, multiple=4)
    cfg = TrainConfig(time_masks=2, time_mask_frames=5, freq_masks=1, freq_mask_bins=3)
    a = spec_augment(x, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(a, spec_augment(x, cfg, torch.Generator().manual_seed(7)))  # a resumed step masks alike
    assert not torch.equal(a, spec_augment(x, cfg, torch.Generator().manual_seed(8)))
    assert torch.equal(a[:, -1], x[:, -1])  # the validity row is never masked
    assert torch.equal(a[1, :-1, 6:], x[1, :-1, 6:])  # padding untouched
    masked = a[:, :-1] == 0.0
    assert bool(masked.any()) and not bool(masked.all(dim=2).all(dim=1).any())  # some, never a whole clip
    frames_hit = masked[0].all(dim=0).sum()  # whole time columns zeroed in clip 0: at most 2 masks of 5
    assert int(frames_hit) <= 10
    assert torch.equal(spec_augment(x, TrainConfig(), torch.Generator()), x)  # off by default


def test_teacher_correction_replaces_only_wrong_heads() -> None:
    import numpy as np

    from distill.distillation import corrected

    intent = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)  # clip 1: teacher says 2, truth 1
    slot = np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)  # clip 0: teacher says 1, truth 0
    targets = np.array([[0, 0], [1, 0]])
    fixed = corrected([intent, slot], targets)
    assert np.array_equal(fixed[0][0], intent[0]) and np.array_equal(fixed[0][1], [0.0, 1.0, 0.0])
    assert np.array_equal(fixed[1][0], [1.0, 0.0]) and np.array_equal(fixed[1][1], slot[1])
    assert intent[1, 2] == np.float32(0.6)  # the teacher's own arrays are left as they were


def test_mel_warp_stretches_time_and_moves_formants() -> None:
    from distill.distillation import mel_warp
    from distill.train import TrainConfig

    mel = torch.zeros(10, 50)
    mel[4] = 1.0  # one "formant" band
    lengths = {mel_warp(mel, TrainConfig(time_stretch=0.2), torch.Generator().manual_seed(s)).shape[1]
               for s in range(10)}
    assert min(lengths) >= 40 and max(lengths) <= 60 and len(lengths) > 3
    stretched = mel_warp(mel, TrainConfig(time_stretch=0.2), torch.Generator().manual_seed(3))
    assert stretched.shape[0] == 10
    assert torch.allclose(stretched[4], torch.ones(stretched.shape[1]))  # a steady band stays steady
    warped = mel_warp(mel, TrainConfig(freq_warp=0.3), torch.Generator().manual_seed(1))
    assert warped.shape == mel.shape and not torch.equal(warped, mel)
    assert abs(float(warped.sum(dim=1).argmax()) - 4) <= 2  # the band moved by at most 30% of its index
    assert torch.equal(mel_warp(mel, TrainConfig(), torch.Generator()), mel)
    with pytest.raises(ConfigError, match="time_stretch"):
        TrainConfig(time_stretch=1.5)
    with pytest.raises(ConfigError, match="line up in time"):
        TrainConfig(time_stretch=0.1, gamma=1.0)
