"""Model cost accounting: parameters and MACs per second of audio."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from distill.nets.profile import count_parameters, macs_per_second, whisper_encoder_cost  # noqa: E402
from distill.nets.student import Student, StudentConfig  # noqa: E402


def test_macs_of_a_linear_layer_are_exact() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(48000, 10))  # 3 s of 16 kHz audio in, 10 out
    assert macs_per_second(model, seconds=3.0) == pytest.approx(48000 * 10 / 3.0)
    assert count_parameters(model) == 48000 * 10 + 10


def test_student_macs_grow_with_width_and_include_the_frontend() -> None:
    small = macs_per_second(Student([3, 4], StudentConfig(channels=32)))
    large = macs_per_second(Student([3, 4], StudentConfig(channels=64)))
    assert 1e6 < small < large < 1e8
    frontend_only = (16000 // 160 + 1) * (2 * 129 * 512 + 40 * 129)  # DFT conv + mel matmul per second
    assert small > frontend_only * 0.9


def test_whisper_base_encoder_size() -> None:
    params, macs = whisper_encoder_cost(512, 30.0)
    assert 19e6 < params < 21e6  # Whisper base's encoder: ~20 M parameters (Radford et al. 2022)
    assert whisper_encoder_cost(512, 3.0)[1] < macs  # per second: a short window wastes less on attention
