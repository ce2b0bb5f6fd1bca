"""Strategies: who trains each round, with what settings, and how the sum becomes the next model.

Flower's vocabulary (``configure_fit`` / ``aggregate_fit``, rounds counted from 1, aggregation that
receives both the result and the failures), but one small interface. Aggregation never sees an
individual update: it receives an ``UpdateSum``, the weighted sum of the contributors' deltas, which
is all that secure aggregation reveals. In plain mode the server computes the same sum itself, so
every strategy works unchanged with and without secure aggregation.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipfl.clip import AggregationMode, PlannerConfig, UnitLayout, average_update, flop_ratio, round_target
from clipfl.config import RunConfig
from clipfl.engine.update import ClientInfo, UpdateSum
from clipfl.settings import TrainSettings

__all__ = ["FedAvg", "FitPlan", "Strategy"]


@dataclass(frozen=True, slots=True)
class FitPlan:
    """What ``configure_fit`` decides for one round."""

    clients: tuple[int, ...]
    train: TrainSettings
    seed: int
    deadline_seconds: float
    """How long the server waits for updates before it stops waiting (an asyncio timer); announced
    to the clients as the cap on their round target."""
    keep_ratios: dict[int, float] = field(default_factory=dict)
    """FLuID's server-chosen keep ratio per client (empty for every other strategy)."""


class Strategy(abc.ABC):
    @abc.abstractmethod
    def configure_fit(self, round: int, clients: Sequence[ClientInfo]) -> FitPlan: ...

    @abc.abstractmethod
    def aggregate_fit(
        self, round: int, weights: np.ndarray, update: UpdateSum | None, failures: Mapping[int, str]
    ) -> np.ndarray:
        """The next global model (flat float32) from the current one and the round's sum.

        ``update`` is None when no update survived the round: the model stays as it is.
        """

    def record_arrivals(self, round: int, arrivals: Mapping[int, float], late: Sequence[int]) -> None:
        """When each client's update arrived (seconds into the round), and who missed the deadline."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep of this strategy to resume it (JSON values)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()``'s output after ``--resume``."""
        return None


DEADLINE_SLACK = 0.10
"""The ``deadline`` strategy waits this fraction longer than the slowest non-straggler took last time."""


class FedAvg(Strategy):
    """Federated averaging (McMahan et al., 2017): the sample-weighted mean of the deltas.

    With a unit ``layout`` and a coverage sum (clients that pruned), each coordinate is averaged over
    the clients that trained it (``aggregation="coverage"``), or over everyone (``"zero-pad"``, CLIP
    as published). With ``mitigation="deadline"`` the round's deadline follows live measurements: the
    (1 - f) quantile of the clients' last upload times (the slowest non-straggler), plus a margin.
    """

    def __init__(self, config: RunConfig, layout: UnitLayout | None = None) -> None:
        self.config = config
        self.layout = layout
        self._train = config.train_settings()
        self._last_arrival: dict[int, float] = {}
        self._full_latency: dict[int, float] = {}  # FLuID: upload time scaled to the full model
        self._assigned: dict[int, float] = {}  # FLuID: the keep ratio each client was given

    def round_deadline(self) -> float:
        c = self.config
        if c.mitigation != "deadline" or len(self._last_arrival) < 2:
            return c.round_timeout
        target = round_target(list(self._last_arrival.values()), c.straggler_fraction)
        return min(c.round_timeout, target * (1 + DEADLINE_SLACK) + 0.05)

    def record_arrivals(self, round: int, arrivals: Mapping[int, float], late: Sequence[int]) -> None:
        deadline = self.round_deadline()
        self._last_arrival.update(arrivals)
        if self.layout is not None:
            for client_id, seconds in arrivals.items():
                ratio = flop_ratio(self.layout, self._assigned.get(client_id, 1.0))
                self._full_latency[client_id] = seconds / ratio
        for client_id in late:  # censored: it would have taken at least the deadline
            self._last_arrival[client_id] = max(deadline, self._last_arrival.get(client_id, 0.0))

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_arrival": {str(k): v for k, v in self._last_arrival.items()},
            "full_latency": {str(k): v for k, v in self._full_latency.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._last_arrival = {int(k): float(v) for k, v in dict(state.get("last_arrival", {})).items()}
        self._full_latency = {int(k): float(v) for k, v in dict(state.get("full_latency", {})).items()}

    def fluid_keep_ratios(self, clients: Sequence[int]) -> dict[int, float]:
        """FLuID (Wang et al., NeurIPS 2023) decides on the server, from latencies it sees in the clear.

        Clients slower than the (1 - f) quantile of the full-model latencies get the largest keep
        ratio whose sub-model's FLOP ratio brings them to that target (at least ``min_keep_ratio``).
        """
        known = {i: self._full_latency[i] for i in clients if i in self._full_latency}
        if self.layout is None or len(known) < 2:
            return {}
        c = self.config
        target = round_target(list(known.values()), c.straggler_fraction)
        grid = PlannerConfig(
            straggler_fraction=c.straggler_fraction, min_keep_ratio=c.min_keep_ratio
        ).grid()  # the clients' own planner's candidates, largest first
        ratios = {}
        for client_id, latency in known.items():
            if latency <= target:
                continue
            fits = [p for p in grid if latency * flop_ratio(self.layout, p) <= target]
            ratios[client_id] = fits[0] if fits else c.min_keep_ratio
        return ratios

    def configure_fit(self, round: int, clients: Sequence[ClientInfo]) -> FitPlan:
        c = self.config
        ids = tuple(sorted(x.client_id for x in clients))
        keep_ratios: dict[int, float] = {}
        if c.mitigation == "fluid":
            ratios = self.fluid_keep_ratios(ids)
            self._assigned = {i: ratios.get(i, 1.0) for i in ids}
            keep_ratios = dict(self._assigned)
        return FitPlan(ids, self._train, c.seed * 100_003 + round, self.round_deadline(), keep_ratios)

    def aggregate_fit(
        self, round: int, weights: np.ndarray, update: UpdateSum | None, failures: Mapping[int, str]
    ) -> np.ndarray:
        if update is None or update.weight_sum <= 0:
            return weights
        if update.coverage_sum is not None and self.layout is not None:
            mode: AggregationMode = "zero-pad" if self.config.aggregation == "zero-pad" else "coverage"
            step = average_update(self.layout, update.delta_sum, update.coverage_sum, mode)
        else:
            step = update.delta_sum / update.weight_sum
        return (weights + step).astype(np.float32)
