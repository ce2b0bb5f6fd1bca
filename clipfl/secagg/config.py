"""Settings of secure aggregation, validated once, with defaults resolved per round.

A ``SecAggConfig`` is what an operator writes (``--secagg secagg+ --threshold 4``); a ``ResolvedSecAgg``
is what one round uses once the number of clients ``n`` is known: the graph degree ``k`` and the Shamir
threshold ``t``. Each client holds its own ``SecAggConfig`` (never one built from the server's
messages) and refuses a round that is weaker than what its own config resolves to (``check_setup``):
another mode, a lower threshold, fewer neighbours, or fewer clients than its minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from clipfl.errors import ConfigError
from clipfl.secagg import params

__all__ = ["MODES", "Mode", "ResolvedSecAgg", "SecAggConfig"]

Mode = Literal["secagg", "secagg+"]
MODES: tuple[Mode, ...] = ("secagg", "secagg+")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedSecAgg:
    """The parameters of one round: ``k`` neighbours per client and a ``t``-of-``holders`` sharing.

    ``holders`` is the number of parties holding shares of one client's secrets: its ``k`` neighbours
    and itself (Bonawitz et al. share among all of U1, the client included). ``consistency`` is how
    many valid signatures on one survivor set a client needs before it reveals anything: more than
    ``(n + corrupted) / 2`` of the round's clients, so two different sets can never both gather
    enough (honest clients sign once), and every honest revealer works from the same set. In the
    complete graph this is Bonawitz's ``t``; in SecAgg+ it is what stops the neighbour trick
    (attack 3), which a per-neighbourhood count could not.
    """

    n: int
    mode: Mode
    neighbors: int
    threshold: int
    consistency: int

    @property
    def holders(self) -> int:
        return self.neighbors + 1

    @property
    def complete_graph(self) -> bool:
        return self.neighbors >= self.n - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggConfig:
    """Secure aggregation settings; ``None`` means "the safe default for the round's ``n``".

    - ``threshold``: shares needed to rebuild a secret. Default: sized for an actively malicious server
      colluding with a ``corrupted_fraction`` of the clients, and for a ``dropout_fraction`` of dropouts
      (``params.active_parameters``): ``t = floor(2n/3) + 1`` in SecAgg (Bonawitz et al., CCS 2017,
      section 6), Bell et al.'s (CCS 2020) bounds in SecAgg+. An explicit ``threshold`` may go lower
      (at least 2), trading privacy for dropout tolerance; a client refuses any round below its own.
    - ``neighbors``: SecAgg+ graph degree ``k``. Default: the smallest ``k`` that meets Bell et al.'s
      security and correctness bounds at ``n`` (``n - 1``, the complete graph, when none smaller does);
      raised by one when ``n * k`` is odd, capped at ``n - 1``.
    - ``min_clients``: the smallest round this client joins; a sum of two reveals each input to the
      other, so the default is 3.
    - ``corrupted_fraction``, ``dropout_fraction``: gamma and delta of the defaults (1/3 and 0.2).
    - ``clip_range``: each coordinate of a client's delta is clipped to ``[-clip_range, clip_range]``
      before fixed-point encoding (see ``encoding.FixedPoint``).
    - ``max_weight``: the largest weight (sample count) a client may put on its update, and the cap
      on the encoding range a client accepts: it refuses a codec built for a larger weight, which
      would round honest deltas towards zero (attack 6). 1000 as Flower's
      ``SecAggPlusWorkflow(max_weight=1000.0)``.
    - ``max_accusations``: how many peers one client may accuse (reject keys or shares of) in one
      round. An accusation cannot be checked by the server, so each is honoured (the accused leaves
      the round) only within this budget; a client naming more is failed itself and its accusations
      ignored. With 1, a lying accuser trades itself for one honest peer, no worse than two dropouts.
    - ``min_coverage``: the fewest clients whose sealed plans must cover a unit (or a weight between
      two units) before this client puts its delta for it in the sum (``coverage.contributable``,
      attack 8): a sum of two reveals each to the other, so 3 holds against one colluding client.
      1 turns the rule off.
    - ``max_private_bytes``: the largest payload of the client-to-client channel (CLIP's timing
      reports are about 100 bytes, coverage plans one bit per unit: 64 KiB holds 500,000 units).
    """

    mode: Mode = "secagg+"
    threshold: int | None = None
    neighbors: int | None = None
    min_clients: int = 3
    corrupted_fraction: float = params.CORRUPTED_FRACTION
    dropout_fraction: float = params.DROPOUT_FRACTION
    clip_range: float = 1.0
    max_weight: float = 1000.0
    max_accusations: int = 1
    min_coverage: int = 3
    max_private_bytes: int = 65536

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"secure aggregation mode must be one of {MODES}, not {self.mode!r}")
        if self.threshold is not None and (type(self.threshold) is not int or self.threshold < 2):
            raise ConfigError(
                f"threshold must be an integer >= 2 (one share must never suffice), got {self.threshold!r}"
            )
        if self.neighbors is not None:
            if self.mode == "secagg":
                raise ConfigError("neighbors applies to secagg+ only; secagg uses the complete graph")
            if type(self.neighbors) is not int or self.neighbors < 2:
                raise ConfigError(
                    f"neighbors must be an integer >= 2 (k=1 is disconnected), got {self.neighbors!r}"
                )
        if type(self.min_clients) is not int or self.min_clients < 2:
            raise ConfigError(f"min_clients must be an integer >= 2, got {self.min_clients!r}")
        if not 0 <= self.corrupted_fraction <= 1 / 3 + 1e-12:
            raise ConfigError(
                "corrupted_fraction must lie in [0, 1/3] (Bonawitz et al.'s bound), "
                f"got {self.corrupted_fraction!r}"
            )
        if not 0 <= self.dropout_fraction < 0.5:
            raise ConfigError(f"dropout_fraction must lie in [0, 0.5), got {self.dropout_fraction!r}")
        if not (math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ConfigError(f"clip_range must be a positive finite number, got {self.clip_range!r}")
        if not (math.isfinite(self.max_weight) and self.max_weight > 0):
            raise ConfigError(f"max_weight must be a positive finite number, got {self.max_weight!r}")
        if type(self.max_accusations) is not int or self.max_accusations < 0:
            raise ConfigError(f"max_accusations must be a non-negative integer, got {self.max_accusations!r}")
        if type(self.min_coverage) is not int or self.min_coverage < 1:
            raise ConfigError(f"min_coverage must be an integer >= 1 (1: off), got {self.min_coverage!r}")
        if type(self.max_private_bytes) is not int or not 1 <= self.max_private_bytes <= 1 << 20:
            raise ConfigError(
                f"max_private_bytes must be an integer in [1, 1 MiB], got {self.max_private_bytes!r}"
            )

    def resolved(self, n: int) -> ResolvedSecAgg:
        """The ``k`` and ``t`` of a round with ``n`` clients; raises ``ConfigError`` if impossible."""
        if type(n) is not int or n < 2:
            raise ConfigError(f"secure aggregation needs at least 2 clients, got {n!r}")
        default = params.active_parameters(
            n,
            sparse=self.mode == "secagg+",
            corrupted=self.corrupted_fraction,
            dropouts=self.dropout_fraction,
        )
        if self.mode == "secagg":
            k = n - 1
        elif self.neighbors is None:
            k = default.neighbors
        else:
            k = self.neighbors
            if k < n - 1 and (n * k) % 2 == 1:
                k += 1
            k = min(k, n - 1)
        holders = k + 1
        if self.threshold is not None:
            t = self.threshold
        elif k == default.neighbors:
            t = default.threshold
        else:  # an explicit degree: the active-security rule inside each neighbourhood
            t = (holders + math.floor(self.corrupted_fraction * holders)) // 2 + 1
        if t > holders:
            raise ConfigError(
                f"threshold {t} exceeds the {holders} holders of each secret (n={n}, k={k}): "
                "no secret could ever be rebuilt; lower --threshold or raise --neighbors"
            )
        consistency = params.secagg_threshold(n, self.corrupted_fraction)
        return ResolvedSecAgg(n=n, mode=self.mode, neighbors=k, threshold=t, consistency=consistency)

    def check_setup(self, *, mode: str, n: int, threshold: int, neighbors: int) -> ResolvedSecAgg:
        """This client's parameters for a round the server announced; ``ConfigError`` naming what is
        weaker than this client's own rule (another mode, too few clients, a lower ``t`` or ``k``)."""
        if mode != self.mode:
            raise ConfigError(f"server runs {mode!r}, this client is configured for {self.mode!r}")
        if n < self.min_clients:
            raise ConfigError(
                f"round of {n} clients, this client joins only rounds of {self.min_clients} or more"
            )
        own = self.resolved(n)
        if threshold < own.threshold or neighbors < own.neighbors:
            raise ConfigError(
                f"server announced t={threshold}, k={neighbors}; this client requires "
                f"t>={own.threshold}, k>={own.neighbors} for n={n}"
            )
        if neighbors > n - 1 or threshold > neighbors + 1:
            raise ConfigError(f"impossible round: t={threshold}, k={neighbors} for n={n}")
        return ResolvedSecAgg(
            n=n, mode=self.mode, neighbors=neighbors, threshold=threshold, consistency=own.consistency
        )
