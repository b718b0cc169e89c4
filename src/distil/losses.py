"""The knowledge-distillation loss, as pure functions (numpy and torch).

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", arXiv:1503.02531::

    L(z, p, y) = T² · KL(p_T ‖ softmax(z / T)) + α · CE(softmax(z), y)

where ``z`` are the student's logits, ``p`` the teacher's probabilities, ``T`` the temperature,
``p_T ∝ p^(1/T)`` the teacher softened to the same temperature (that is the teacher's softmax at
temperature T when ``p`` is a softmax of logits), and ``y`` the hard labels: the gold labels
where given, else the teacher's argmax.  The ``T²`` factor keeps the soft term's gradient
magnitude independent of ``T`` (Hinton et al., section 2).  The loss is averaged over the batch.

``kd_loss`` accepts numpy arrays (returns a float) or torch tensors (returns a scalar tensor
that autograd can differentiate); ``kd_loss_grad`` returns the numpy loss and its gradient with
respect to the logits.  Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EPS = 1e-8


def _soften_np(probs: np.ndarray, temperature: float) -> np.ndarray:
    """p_T ∝ p^(1/T), computed in log space."""
    logp = np.log(np.clip(probs, _EPS, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def log_softmax_np(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in numpy (stable: the row maximum is subtracted first)."""
    z = z - z.max(axis=1, keepdims=True)
    return np.asarray(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))


def _hard_np(teacher_probs: np.ndarray, labels: Any) -> np.ndarray:
    hard = teacher_probs.argmax(axis=1)
    if labels is None:
        return np.asarray(hard, dtype=np.int64)
    lab = np.asarray(labels, dtype=np.int64)
    if lab.shape != hard.shape:
        raise ValueError(f"labels: expected shape {hard.shape}, found {lab.shape}")
    # -1 marks "no gold label here": fall back to the teacher's argmax.
    return np.asarray(np.where(lab >= 0, lab, hard), dtype=np.int64)


def kd_loss_grad(
    student_logits: np.ndarray,
    teacher_probs: np.ndarray,
    *,
    temperature: float,
    alpha: float,
    labels: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Numpy KD loss (see the module docstring) and its gradient with respect to the logits.

    ``labels`` are class indices (``-1`` = use the teacher's argmax for that row).
    d/dz [T²·KL] = T·(softmax(z/T) − p_T);  d/dz [CE] = softmax(z) − onehot(y); both / batch size.
    """
    z = np.asarray(student_logits, dtype=np.float64)
    p = np.asarray(teacher_probs, dtype=np.float64)
    if z.shape != p.shape or z.ndim != 2:
        raise ValueError(f"logits {z.shape} and teacher_probs {p.shape} must be the same (n, k) shape")
    n = z.shape[0]
    t = float(temperature)
    p_t = _soften_np(p, t)
    log_q_t = log_softmax_np(z / t)
    kl = np.where(p_t > 0, p_t * (np.log(np.clip(p_t, 1e-300, 1.0)) - log_q_t), 0.0).sum(axis=1)
    y = _hard_np(p, labels)
    log_q = log_softmax_np(z)
    ce = -log_q[np.arange(n), y]
    loss = float(np.mean(t * t * kl + alpha * ce))
    grad = t * (np.exp(log_q_t) - p_t)
    q = np.exp(log_q)
    q[np.arange(n), y] -= 1.0
    grad = (grad + alpha * q) / n
    return loss, grad.astype(np.float32)


def kd_loss(
    student_logits: Any,
    teacher_probs: Any,
    *,
    temperature: float = 2.0,
    alpha: float = 0.5,
    labels: Any = None,
) -> Any:
    """L = T²·KL(p_T ‖ softmax(z/T)) + α·CE(softmax(z), y), averaged over the batch.

    Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network".
    ``p_T ∝ teacher_probs^(1/T)``; ``y`` = ``labels`` (class indices, ``-1`` = none) where
    given, else the teacher's argmax.  Numpy inputs give a float; torch tensors give a
    differentiable scalar tensor.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, found {temperature}")
    if isinstance(student_logits, np.ndarray):
        return kd_loss_grad(
            student_logits, teacher_probs, temperature=temperature, alpha=alpha, labels=labels
        )[0]
    import torch
    import torch.nn.functional as F

    z = student_logits
    p = teacher_probs.to(z.dtype)
    t = float(temperature)
    p_t = torch.softmax(torch.log(p.clamp_min(_EPS)) / t, dim=1)
    log_q_t = F.log_softmax(z / t, dim=1)
    kl = torch.sum(torch.xlogy(p_t, p_t) - p_t * log_q_t, dim=1)
    hard = p.argmax(dim=1)
    if labels is not None:
        lab = torch.as_tensor(labels, dtype=torch.long, device=z.device)
        hard = torch.where(lab >= 0, lab, hard)
    ce = F.cross_entropy(z, hard, reduction="none")
    return torch.mean(t * t * kl + alpha * ce)
