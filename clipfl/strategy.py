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

import numpy as np

from clipfl.config import RunConfig
from clipfl.messages import ConfigValue

__all__ = ["ClientInfo", "FedAvg", "FitPlan", "Strategy", "UpdateSum"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    client_id: int
    num_samples: int
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FitPlan:
    """What ``configure_fit`` decides for one round."""

    clients: tuple[int, ...]
    config: dict[str, ConfigValue]
    deadline_seconds: float
    """How long the server waits for updates before it stops waiting (an asyncio timer)."""


@dataclass(frozen=True, slots=True)
class UpdateSum:
    """The weighted sum of the contributors' deltas: Σ w_i Δ_i, with Σ w_i (and per-unit coverage)."""

    delta_sum: np.ndarray
    weight_sum: float
    contributors: tuple[int, ...]
    coverage_sum: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)


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

    def client_weight(self, client: ClientInfo) -> float:
        """The weight w_i of a client's delta in the sum (FedAvg: its number of samples)."""
        return float(client.num_samples)


class FedAvg(Strategy):
    """Federated averaging (McMahan et al., 2017): the sample-weighted mean of the deltas."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def configure_fit(self, round: int, clients: Sequence[ClientInfo]) -> FitPlan:
        c = self.config
        settings: dict[str, ConfigValue] = {
            "epochs": c.local_epochs,
            "batch_size": c.batch_size,
            "lr": c.lr,
            "optimizer": c.optimizer,
            "momentum": c.momentum,
            "seed": c.seed * 100_003 + round,
        }
        return FitPlan(tuple(sorted(x.client_id for x in clients)), settings, c.round_timeout)

    def aggregate_fit(
        self, round: int, weights: np.ndarray, update: UpdateSum | None, failures: Mapping[int, str]
    ) -> np.ndarray:
        if update is None or update.weight_sum <= 0:
            return weights
        step = update.delta_sum / update.weight_sum
        return (weights + step).astype(np.float32)
