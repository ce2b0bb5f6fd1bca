"""Settings of secure aggregation, validated once, with defaults resolved per round.

A ``SecAggConfig`` is what an operator writes (``--secagg secagg+ --threshold 4``); a ``ResolvedSecAgg``
is what one round uses once the number of clients ``n`` is known: the graph degree ``k`` and the Shamir
threshold ``t``. Server and clients resolve the same config for the same ``n`` and must agree exactly;
a client refuses a round whose announced parameters differ from its own resolution, so a server cannot
quietly lower the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from clipfl.errors import ConfigError

__all__ = ["MODES", "Mode", "ResolvedSecAgg", "SecAggConfig"]

Mode = Literal["secagg", "secagg+"]
MODES: tuple[Mode, ...] = ("secagg", "secagg+")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedSecAgg:
    """The parameters of one round: ``k`` neighbours per client and a ``t``-of-``holders`` sharing.

    ``holders`` is the number of parties holding shares of one client's secrets: its ``k`` neighbours
    and itself (Bonawitz et al. share among all of U1, the client included).
    """

    n: int
    mode: Mode
    neighbors: int
    threshold: int

    @property
    def holders(self) -> int:
        return self.neighbors + 1

    @property
    def complete_graph(self) -> bool:
        return self.neighbors >= self.n - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggConfig:
    """Secure aggregation settings; ``None`` means "the safe default for the round's ``n``".

    - ``threshold``: shares needed to rebuild a secret. Default: a strict majority of the holders,
      ``holders // 2 + 1``. Bonawitz et al. (CCS 2017, sections 4 and 6) require ``t`` larger than any
      coalition the server may form with clients; a majority also means that two disjoint groups of
      holders can never both reach ``t``, so a server that shows different survivor lists to different
      clients cannot obtain both ``b_u`` and ``s_u`` of one client. For SecAgg+ the same majority rule is
      applied inside each neighbourhood of ``k + 1`` holders, as Bell et al. (CCS 2020, section 3) set
      ``t`` to a constant fraction of ``k``. An explicit ``threshold`` may go lower (at least 2), e.g. the
      ``k = 3, t = 2`` of Flower's SecAgg+ benchmark, trading privacy for dropout tolerance.
    - ``neighbors``: SecAgg+ graph degree ``k``. Default ``max(2, ceil(log2 n))`` (Bell et al. prove
      ``k = O(log n)`` suffices); raised by one when ``n * k`` is odd (no ``k``-regular graph exists), and
      capped at ``n - 1``, where the graph is complete and SecAgg+ is plain SecAgg.
    - ``clip_range``: each coordinate of a client's delta is clipped to ``[-clip_range, clip_range]``
      before fixed-point encoding (see ``encoding.FixedPoint``).
    - ``max_weight``: the largest weight (sample count) a client may put on its update; the fixed-point
      scale is chosen so that ``n`` clients of this weight cannot wrap the 32-bit sum. 1000 as Flower's
      ``SecAggPlusWorkflow(max_weight=1000.0)``.
    - ``identities``: clients sign their advertised keys with Ed25519 and verify their peers'.
    - ``max_private_bytes``: the largest payload of the client-to-client channel (CLIP's timing
      reports are about 100 bytes).
    """

    mode: Mode = "secagg+"
    threshold: int | None = None
    neighbors: int | None = None
    clip_range: float = 1.0
    max_weight: float = 1000.0
    identities: bool = False
    max_private_bytes: int = 4096

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
        if not (math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ConfigError(f"clip_range must be a positive finite number, got {self.clip_range!r}")
        if not (math.isfinite(self.max_weight) and self.max_weight > 0):
            raise ConfigError(f"max_weight must be a positive finite number, got {self.max_weight!r}")
        if type(self.max_private_bytes) is not int or not 1 <= self.max_private_bytes <= 1 << 20:
            raise ConfigError(
                f"max_private_bytes must be an integer in [1, 1 MiB], got {self.max_private_bytes!r}"
            )

    def resolved(self, n: int) -> ResolvedSecAgg:
        """The ``k`` and ``t`` of a round with ``n`` clients; raises ``ConfigError`` if impossible."""
        if type(n) is not int or n < 2:
            raise ConfigError(f"secure aggregation needs at least 2 clients, got {n!r}")
        if self.mode == "secagg":
            k = n - 1
        else:
            k = self.neighbors if self.neighbors is not None else max(2, math.ceil(math.log2(n)))
            if k < n - 1 and (n * k) % 2 == 1:
                k += 1
            k = min(k, n - 1)
        holders = k + 1
        t = self.threshold if self.threshold is not None else holders // 2 + 1
        if t > holders:
            raise ConfigError(
                f"threshold {t} exceeds the {holders} holders of each secret (n={n}, k={k}): "
                "no secret could ever be rebuilt; lower --threshold or raise --neighbors"
            )
        return ResolvedSecAgg(n=n, mode=self.mode, neighbors=k, threshold=t)
