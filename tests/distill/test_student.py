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


def test_config_roundtrip() -> None:
    cfg = StudentConfig(channels=32, dilations=(1, 2))
    assert StudentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="dilations"):
        StudentConfig(dilations=(0,))
