"""The settings that cross the wire, as frozen value objects validated in their constructors.

``RunSettings`` is what every client must know of the run (``Welcome`` carries it); ``TrainSettings``
and ``CodecParams`` are what one round's ``FitIns`` tells a client to train with and how to encode its
update. They are built once from the command line (``clipfl.config.RunConfig``) on the server, and
decoded field for field on the client: a setting the peer does not know, or one it leaves out, is a
``RemoteProtocolError`` (``clipfl.wire``), never a default filled in by the receiver. Each default is
written once, on ``RunConfig``; these classes have none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from clipfl.secagg import SecAggConfig

__all__ = [
    "MITIGATIONS",
    "OPTIMIZERS",
    "PRUNING_MITIGATIONS",
    "WEIGHTINGS",
    "CodecParams",
    "Mitigation",
    "RunSettings",
    "TrainSettings",
    "Weighting",
]

Mitigation = Literal["none", "deadline", "random", "ordered", "clip-compute", "clip", "fluid"]
MITIGATIONS: tuple[Mitigation, ...] = (
    "none",
    "deadline",
    "random",
    "ordered",
    "clip-compute",
    "clip",
    "fluid",
)
PRUNING_MITIGATIONS: frozenset[Mitigation] = frozenset({"random", "ordered", "clip-compute", "clip", "fluid"})
"""The strategies under which a straggler trains a sub-model (DESIGN section 5.6)."""

Weighting = Literal["samples", "uniform"]
WEIGHTINGS: tuple[Weighting, ...] = ("samples", "uniform")
OPTIMIZERS = ("sgd", "adam")


def _in(value: object, allowed: tuple[object, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainSettings:
    """Local training of one round (the learning layer's knobs)."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"learning rate must be positive and finite, got {self.lr}")
        _in(self.optimizer, OPTIMIZERS, "optimizer")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CodecParams:
    """The public numbers both ends build secure aggregation's fixed-point codec from, for one round.

    ``clients`` in the round and the largest weight among them bound the sum so that it cannot wrap
    (``clipfl.secagg.FixedPoint.for_federation``); the server sends them, each client checks them
    against its own limits before it encodes anything.
    """

    clients: int
    max_weight: int
    clip_range: float

    def __post_init__(self) -> None:
        if self.clients < 2:
            raise ValueError(f"a secure round needs at least 2 clients, got {self.clients}")
        if self.max_weight < 1:
            raise ValueError(f"max_weight must be >= 1, got {self.max_weight}")
        if not (math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ValueError(f"clip_range must be positive and finite, got {self.clip_range}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    """What a client must know of the run, announced once in ``Welcome``.

    - ``straggler_fraction`` f: the round target T* is the (1 - f) quantile of the peers' predicted
      latencies (DESIGN 5.2); f = 0 means no client ever calls itself a straggler.
    - ``weighting``: how a client's delta is weighted in the sum; ``weight_of`` is the one place that
      turns a sample count into a weight, run by the server (plain mode, codec bounds) and by each
      client (secure mode: it encodes its own weight, so the server cannot choose one per client).
    - ``max_weight``: the largest weight (sample count) a client may claim; the server refuses larger
      claims at registration, a client refuses a codec sized for more.
    - ``secagg``: secure aggregation, or None for plain FedAvg.
    """

    model: str
    rounds: int
    mitigation: Mitigation
    straggler_fraction: float
    min_keep_ratio: float
    weighting: Weighting
    max_weight: int
    secagg: SecAggConfig | None

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        _in(self.mitigation, MITIGATIONS, "mitigation")
        _in(self.weighting, WEIGHTINGS, "weighting")
        if not 0 <= self.straggler_fraction < 1:
            raise ValueError(f"straggler-fraction must be in [0, 1), got {self.straggler_fraction}")
        if not 0 < self.min_keep_ratio <= 1:
            raise ValueError(f"min-keep-ratio must be in (0, 1], got {self.min_keep_ratio}")
        if self.max_weight < 1:
            raise ValueError(f"max-weight must be >= 1, got {self.max_weight}")
        if self.mitigation == "fluid" and self.secagg is not None:
            raise ValueError(
                "mitigation 'fluid' prunes on the server, which must see each update: "
                "use it with --secagg off"
            )

    @property
    def prunes(self) -> bool:
        """Whether stragglers train sub-models (and every update carries per-unit coverage)."""
        return self.mitigation in PRUNING_MITIGATIONS

    def weight_of(self, num_samples: int) -> int:
        """A client's weight in the sum: its sample count (FedAvg) or 1 (uniform)."""
        if not 1 <= num_samples <= self.max_weight:
            raise ValueError(f"a client's sample count must be in [1, {self.max_weight}], got {num_samples}")
        return num_samples if self.weighting == "samples" else 1
