"""Thresholds and graph degrees sized for an actively malicious server (the defaults of ``SecAggConfig``).

SecAgg (complete graph), Bonawitz et al., CCS 2017, section 6 (active security, with the consistency
check): against a server that colludes with fewer than ``n / 3`` clients, ``t > 2n / 3`` shares are
required, ``t = floor(2n / 3) + 1``. The reason in one line: every honest holder reveals one share per
client and per round (a ``b``-share or an ``s``-share, never both), so the server gets both secrets of
one client only if ``t`` holders reveal under one survivor set and ``t`` under another, i.e.
``2t <= holders + corrupted``; ``t > 2n / 3`` with ``corrupted < n / 3`` rules that out. Dropouts
tolerated: ``n - t``, at least ``floor(n / 5)`` for every ``n >= 5`` (see ``DROPOUT_FRACTION``).

SecAgg+ (random k-regular graph), Bell et al., CCS 2020, sections 3.3-3.5 and 4 (their Theorem on
parameters): choose ``k`` and ``t`` from ``n``, the corrupted fraction ``gamma``, the dropout fraction
``delta``, a security parameter ``sigma`` and a correctness parameter ``eta`` so that, over the random
graph, (security) no honest client has so many corrupted neighbours that a split survivor set could
reach ``t`` twice among its ``k + 1`` holders, with probability ``>= 1 - 2^-sigma``, and (correctness)
every neighbourhood keeps ``t`` live holders when a ``delta`` fraction drops, with probability
``>= 1 - 2^-eta``. The bounds below are exact hypergeometric tails for one client's ``k`` neighbours
(a uniform ``k``-subset of the others) and a union bound over the ``n`` clients, the same shape as Bell
et al.'s analysis; ``k`` is the smallest degree for which some ``t`` meets both, and ``t`` the smallest
such (most dropout tolerance). When no ``k < n - 1`` works, the graph is complete and the SecAgg rule
with the same ``gamma`` and ``delta`` applies, deterministically.

Defaults: ``gamma = 1/3`` (Bonawitz's active setting), ``delta = 0.2`` (the 20 % that the deadline
mitigation drops by design), ``sigma = 40`` and ``eta = 30`` (Bell et al.'s choices). They give
(n: k, t) = (5: 4, 4), (10: 9, 7), (20: 16, 12), (100: 75, 55), (1000: 549, 396); a lower ``gamma``
(an operator who trusts more of the clients) buys a sparser graph, e.g. ``gamma = 0.05`` gives
(1000: 182, 109). Bell et al.'s own example is of that order: 10^4 clients, 5 % corrupted, 5 %
dropouts, each client talking to 3 % of the others.

Known limit: the graph seed is a hash of all signed advertised keys, so clients corrupted by the server
can grind it by choosing their keys; each try costs the attacker one graph, and the ``2^-sigma`` bound
degrades by the number of tries. A commit-then-reveal of the keys would remove that at one round trip.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from clipfl.errors import ConfigError

__all__ = [
    "CORRECTNESS_BITS",
    "CORRUPTED_FRACTION",
    "DROPOUT_FRACTION",
    "SECURITY_BITS",
    "ActiveParameters",
    "active_parameters",
    "secagg_threshold",
]

CORRUPTED_FRACTION = 1 / 3
"""gamma: clients that may collude with the server (Bonawitz et al. 2017, section 6: fewer than n/3)."""
DROPOUT_FRACTION = 0.2
"""delta: the defaults complete a round when up to floor(0.2 n) clients drop (deadline mitigation's 20 %)."""
SECURITY_BITS = 40
"""sigma: Bell et al. 2020's statistical security parameter."""
CORRECTNESS_BITS = 30
"""eta: Bell et al. 2020's correctness parameter (a round aborts with probability at most 2^-eta)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveParameters:
    """One round's graph degree ``k`` and Shamir threshold ``t`` (``k = n - 1``: the complete graph)."""

    n: int
    neighbors: int
    threshold: int


def secagg_threshold(n: int, corrupted: float = CORRUPTED_FRACTION) -> int:
    """``t`` for the complete graph: the smallest ``t`` with ``2t > n + floor(corrupted * n)``.

    With ``corrupted = 1/3`` this is Bonawitz et al.'s ``t > 2n / 3`` (``floor(2n / 3) + 1``).
    """
    if abs(corrupted - 1 / 3) < 1e-12:
        return 2 * n // 3 + 1
    return (n + math.floor(corrupted * n)) // 2 + 1


def _log_comb(a: int, b: int) -> float:
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def _upper_tails(population: int, marked: int, draws: int) -> list[float]:
    """``tails[i] = P(X >= i)`` for ``X ~ Hypergeometric(population, marked, draws)``, i = 0..draws+1."""
    total = _log_comb(population, draws)
    pmf = [0.0] * (draws + 2)
    for i in range(max(0, draws - (population - marked)), min(draws, marked) + 1):
        pmf[i] = math.exp(_log_comb(marked, i) + _log_comb(population - marked, draws - i) - total)
    for i in range(draws, -1, -1):
        pmf[i] += pmf[i + 1]
    return pmf


def _threshold_for_degree(n: int, k: int, corrupted: int, dropped: int, sigma: int, eta: int) -> int | None:
    """The smallest ``t`` meeting both bounds at degree ``k``, or ``None``."""
    security, correctness = 2.0**-sigma / n, 2.0**-eta / n
    corrupt_tail = _upper_tails(n - 1, corrupted, k)
    drop_tail = _upper_tails(n - 1, dropped, k)
    # security: P(C >= 2t - k - 1) <= 2^-sigma / n, C = corrupted neighbours of an honest client
    t = 2
    while t <= k and corrupt_tail[max(0, min(2 * t - k - 1, k + 1))] > security:
        t += 1
    # correctness: P(D >= k - t + 1) <= 2^-eta / n, D = dropped neighbours (the owner's k holders)
    if t > k or drop_tail[k - t + 1] > correctness:
        return None
    return t


@functools.lru_cache(maxsize=4096)
def active_parameters(
    n: int,
    *,
    sparse: bool = True,
    corrupted: float = CORRUPTED_FRACTION,
    dropouts: float = DROPOUT_FRACTION,
    sigma: int = SECURITY_BITS,
    eta: int = CORRECTNESS_BITS,
) -> ActiveParameters:
    """The default ``k`` and ``t`` for ``n`` clients; ``sparse=False`` forces the complete graph."""
    if type(n) is not int or n < 2:
        raise ConfigError(f"secure aggregation needs at least 2 clients, got {n!r}")
    if not (0 <= corrupted < 1 / 3 + 1e-12 and 0 <= dropouts < 1):
        raise ConfigError(
            f"corrupted fraction must be below 1/3 and dropouts below 1, got {corrupted}, {dropouts}"
        )
    c, d = math.floor(corrupted * n), math.floor(dropouts * n)
    if sparse:
        # Feasibility grows with k (tails concentrate), so bisect for the smallest feasible even-able k.
        def feasible(k: int) -> int | None:
            if (n * k) % 2:
                k += 1
            return _threshold_for_degree(n, k, c, d, sigma, eta) if k < n - 1 else None

        low, high = 2, n - 2
        if high >= low and feasible(high) is not None:
            while low < high:
                mid = (low + high) // 2
                if feasible(mid) is not None:
                    high = mid
                else:
                    low = mid + 1
            k = high + (n * high) % 2
            t = feasible(high)
            assert t is not None
            return ActiveParameters(n=n, neighbors=k, threshold=t)
    t = secagg_threshold(n, corrupted)
    return ActiveParameters(n=n, neighbors=n - 1, threshold=min(t, n))
