"""Loss values against hand-computed cases."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from distill.losses import align_time, feature_loss, kd_loss, total_loss  # noqa: E402


def test_kd_loss_hand_computed() -> None:
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # teacher softmax at T=1: (0.75, 0.25)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(kd_loss(s, t, 1.0)) == pytest.approx(expected, rel=1e-6)
    # At T=2 the teacher becomes (sqrt3, 1)/(sqrt3+1); the loss is scaled by T².
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    expected_t2 = (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)) * 4
    assert float(kd_loss(s, t, 2.0)) == pytest.approx(expected_t2, rel=1e-6)
    assert float(kd_loss(t, t, 3.0)) == pytest.approx(0.0, abs=1e-7)


def test_total_loss_mixes_parts() -> None:
    s = [torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    y = [torch.tensor([0]), torch.tensor([1])]
    t = [torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([[1.0, 0.0]])]
    ce = -math.log(math.exp(2) / (math.exp(2) + 2)) - math.log(math.e / (math.e + 1))
    loss, parts = total_loss(s, y)
    assert float(loss) == pytest.approx(ce, rel=1e-6)
    loss, parts = total_loss(s, y, t, alpha=0.5, beta=2.0, temperature=1.0)
    kd = float(kd_loss(s[0], t[0], 1.0) + kd_loss(s[1], t[1], 1.0))
    assert float(loss) == pytest.approx(0.5 * ce + 2.0 * kd, rel=1e-6)
    assert parts["kd"] == pytest.approx(kd)
    with pytest.raises(ValueError, match="needs teacher"):
        total_loss(s, y, beta=1.0)


def test_feature_losses() -> None:
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    b = torch.tensor([[[0.0, 1.0], [0.0, 2.0]]])
    assert float(feature_loss(a, b, "mse")) == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert float(feature_loss(a, b, "cosine")) == pytest.approx((1 - 0 + 1 - 1) / 2)
    with pytest.raises(ValueError, match="shapes differ"):
        feature_loss(a, b[:, :1])
    assert align_time(torch.ones(2, 150, 8), 50).shape == (2, 50, 8)
