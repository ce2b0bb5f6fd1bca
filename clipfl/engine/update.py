"""What a round's collection produces and what the strategy consumes: value objects, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ClientInfo", "UpdateSum"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A registered client as the server knows it: its id and the weight it claimed."""

    client_id: int
    num_samples: int
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UpdateSum:
    """The weighted sum of the contributors' deltas: Σ w_i Δ_i, with Σ w_i (and per-unit coverage).

    ``coverage_sum`` (DESIGN section 4) has one entry per prunable unit and a last one for the
    parameters no unit owns, each the summed weight of the clients that trained it; None when no
    client of the round could prune.
    """

    delta_sum: np.ndarray
    weight_sum: float
    contributors: tuple[int, ...]
    coverage_sum: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
