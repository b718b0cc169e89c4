"""Golden values for the KD loss (numbers worked out by hand), torch/numpy agreement, gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distil.calibrate import ece, fit_temperature
from distil.losses import kd_loss, kd_loss_grad

Z = np.array([[1.0, 0.0]])
P = np.array([[0.8, 0.2]])


def _by_hand(gold: int | None) -> float:
    # T=2: p_T ∝ sqrt(p) = (2/3, 1/3); q_T = softmax(z/2) = (e^.5, 1)/(e^.5 + 1)
    e = math.exp(0.5)
    kl = (2 / 3) * math.log((2 / 3) / (e / (e + 1))) + (1 / 3) * math.log((1 / 3) / (1 / (e + 1)))
    q1 = math.exp(1) / (math.exp(1) + 1)
    ce = -math.log(q1) if gold in (None, 0) else -math.log(1 - q1)
    return 4 * kl + 0.5 * ce


def test_golden_value_teacher_argmax() -> None:
    assert _by_hand(None) == pytest.approx(0.173549, abs=1e-6)
    assert kd_loss(Z, P, temperature=2.0, alpha=0.5) == pytest.approx(_by_hand(None), rel=1e-9)


def test_golden_value_gold_labels_override_argmax() -> None:
    assert _by_hand(1) == pytest.approx(0.673549, abs=1e-6)
    assert kd_loss(Z, P, temperature=2.0, alpha=0.5, labels=np.array([1])) == pytest.approx(_by_hand(1), rel=1e-9)
    # -1 means "no gold label": falls back to the teacher's argmax
    assert kd_loss(Z, P, temperature=2.0, alpha=0.5, labels=np.array([-1])) == pytest.approx(_by_hand(None))


def test_zero_when_student_matches_teacher_and_alpha_zero() -> None:
    p = np.array([[0.7, 0.2, 0.1]])
    assert kd_loss(np.log(p), p, temperature=3.0, alpha=0.0) == pytest.approx(0.0, abs=1e-9)


def test_torch_matches_numpy_and_gradient() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 4))
    p = rng.dirichlet(np.ones(4), size=5)
    lab = np.array([0, -1, 2, -1, 3])
    zt = torch.tensor(z, requires_grad=True)
    lt = kd_loss(zt, torch.tensor(p), temperature=2.5, alpha=0.3, labels=torch.tensor(lab))
    lt.backward()
    ln, g = kd_loss_grad(z, p, temperature=2.5, alpha=0.3, labels=lab)
    assert float(lt) == pytest.approx(ln, rel=1e-6)
    np.testing.assert_allclose(zt.grad.numpy(), g, rtol=1e-4, atol=1e-6)
    # finite differences on the numpy loss
    eps = 1e-6
    z2 = z.copy()
    z2[1, 2] += eps
    num = (kd_loss(z2, p, temperature=2.5, alpha=0.3, labels=lab) - ln) / eps
    assert num == pytest.approx(float(g[1, 2]), rel=1e-3, abs=1e-6)


def test_temperature_scaling_and_ece() -> None:
    rng = np.random.default_rng(0)
    n, k = 2000, 5
    true_logits = rng.normal(size=(n, k)) * 2
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    targets = np.eye(k)[y]
    t = fit_temperature(true_logits * 3.0, targets)  # overconfident by 3x
    assert t == pytest.approx(3.0, rel=0.15)
    over = np.exp(true_logits * 3)
    over /= over.sum(1, keepdims=True)
    assert ece(p, y) < ece(over, y)
    # perfectly confident and always right: ECE 0; always wrong at confidence 1: ECE 1
    onehot = np.eye(k)[y]
    assert ece(onehot, y) == pytest.approx(0.0)
    assert ece(onehot, (y + 1) % k) == pytest.approx(1.0)
