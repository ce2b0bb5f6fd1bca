"""Invariance scores: how much each unit changed between two global models.

A unit's score is the largest relative change ``|W_t - W_{t-1}| / (|W_{t-1}| + eps)`` over every
trainable coordinate tied to it (DESIGN section 5.4): its incoming weights and bias, its norm
parameters, the next layer's weights that read it, an LSTM unit's four gate rows and recurrent column.
Every client holds both global models, so every client computes the same scores without the server
seeing any update. BatchNorm running statistics are left out: they track the data, not learning.

The maximum is a scatter-max over the coordinate-to-unit maps of ``UnitLayout`` (one
``scatter_reduce`` per map), so a 1.5 M parameter model costs a few vector passes.
"""

from __future__ import annotations

import numpy as np
import torch

from clipfl.clip.units import UnitLayout

__all__ = ["DEFAULT_EPS", "unit_scores"]

DEFAULT_EPS = 1e-6
"""Keeps the relative change finite for weights at zero; far below the typical |W| of trained nets (~1e-2)."""


def unit_scores(
    layout: UnitLayout, previous: np.ndarray, current: np.ndarray, *, eps: float = DEFAULT_EPS
) -> np.ndarray:
    """Score of every unit (float64, ``layout.units`` entries) from two flat states of the full model."""
    n = layout.spec.size
    if previous.shape != (n,) or current.shape != (n,):
        raise ValueError(f"states have shapes {previous.shape} and {current.shape}, the model needs ({n},)")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    prev = torch.from_numpy(np.asarray(previous, dtype=np.float64))
    cur = torch.from_numpy(np.asarray(current, dtype=np.float64))
    change = (cur - prev).abs_().div_(prev.abs().add_(eps))
    change.masked_fill_(torch.from_numpy(~layout.trainable), 0.0)  # buffers: 0 never raises a maximum
    scores = torch.zeros(layout.units + 1, dtype=torch.float64)
    for units in (layout.out_unit, layout.in_unit):
        scores.scatter_reduce_(0, torch.from_numpy(units), change, reduce="amax", include_self=True)
    return scores[:-1].numpy()
