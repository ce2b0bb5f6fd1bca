"""Averaging summed, re-inflated deltas when the server sees only sums (DESIGN section 4).

Each client uploads ``weight * delta`` (zeros where it pruned) and its coverage (``weight`` on every
unit it trained and on the rest slot, 0 on pruned units); secure aggregation reveals only the two sums.

``coverage`` mode (default) divides each coordinate by the summed weight of the clients that trained
it, so every unit is averaged over its trainers as FLuID does in the clear. A coordinate tied to one
unit (a bias, a BatchNorm entry, a first-layer filter) gets exactly that unit's coverage. A coordinate
tied to two units, out unit ``j`` and in unit ``i``, was trained by the clients that kept *both*;
per-unit sums cannot recover that set's weight, so the divisor is ``min(cov_j, cov_i)``:

* exact when the trainer sets of ``j`` and ``i`` are nested (one contains the other), which covers
  every case where at most one client pruned either unit, and every round in which all stragglers
  pruned the same units (ordered dropout; invariant dropout with agreeing scores);
* otherwise an upper bound of the true divisor, so the update is shrunk, never amplified.

Coordinates nobody trained get a zero update. ``zero-pad`` mode divides everything by the total
weight, as CLIP was published, which dilutes pruned units towards zero.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from clipfl.clip.units import UnitLayout

__all__ = ["AggregationMode", "average_update", "coordinate_divisor"]

AggregationMode = Literal["coverage", "zero-pad"]


def coordinate_divisor(layout: UnitLayout, coverage_sum: np.ndarray) -> np.ndarray:
    """Summed weight of the clients that trained each coordinate (``min`` rule for two-unit ties)."""
    cov = np.asarray(coverage_sum, dtype=np.float64)
    if cov.shape != (layout.units + 1,):
        raise ValueError(f"coverage has shape {cov.shape}, the layout needs ({layout.units + 1},)")
    return np.minimum(cov[layout.out_unit], cov[layout.in_unit])


def average_update(
    layout: UnitLayout,
    delta_sum: np.ndarray,
    coverage_sum: np.ndarray,
    mode: AggregationMode = "coverage",
) -> np.ndarray:
    """The averaged update from the sum of weighted deltas and the sum of coverages.

    The result has ``delta_sum``'s float type (at least float32); coordinates with divisor 0 get 0.
    """
    delta_sum = np.asarray(delta_sum)
    if delta_sum.shape != (layout.spec.size,):
        raise ValueError(f"delta sum has shape {delta_sum.shape}, the model needs ({layout.spec.size},)")
    if mode == "coverage":
        divisor = coordinate_divisor(layout, coverage_sum)
    elif mode == "zero-pad":
        divisor = np.full(delta_sum.shape, float(np.asarray(coverage_sum)[-1]))
    else:
        raise ValueError(f"unknown aggregation mode {mode!r}: use 'coverage' or 'zero-pad'")
    dtype = np.result_type(delta_sum.dtype, np.float32)
    out = np.zeros(delta_sum.shape, dtype=dtype)
    np.divide(delta_sum, divisor, out=out, where=divisor > 0, casting="unsafe")
    return out
