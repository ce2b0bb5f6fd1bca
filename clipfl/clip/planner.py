"""Round target, straggler self-identification and keep ratio (DESIGN sections 5.1-5.3).

Plain synchronous arithmetic: the client driver measures, exchanges reports over the encrypted peer
channel, and asks ``plan_round`` what to train. Rules, in the order they apply:

1. **Own prediction.** ``LatencyHistory`` keeps the last ``window`` rounds of this client. The
   full-model fit time ``F`` is the median fit time of full-model rounds in the window (else of the
   last full-model round ever). The correction ``c`` is the median, over pruned rounds in the window,
   of ``actual fit / (F * flop ratio)``: how far the FLOP prediction missed (1 without pruned rounds).
   ``fit(p) = F`` for ``p = 1`` and ``F * flop_ratio(p) * c`` below. Download and upload are window
   medians ``D`` and ``U``. A client reports ``F`` and ``D + F + U`` to its peers: the *full-model*
   predictions, so a straggler's pruning does not hide it from the quantile.
2. **Target.** Over the ``n`` predictions of this client and its peers, sorted ascending, the target
   is the ``k``-th smallest with ``k = n - floor(f * n)`` (at least 1): the slowest of the clients
   that are not the ``floor(f * n)`` slowest. With 20 clients and ``f = 0.2`` it is the 16th fastest.
3. **Modes.** Network-aware ``clip`` takes the quantile of the total latencies ``D + F + U``, capped
   by the server's deadline; the client is a straggler if ``D + F + U > T*`` and picks the largest
   ``p`` with ``fit(p) + D + U <= T*``. Compute-aware ``clip-compute`` leaves the network terms out on
   both sides: the target is the quantile of the peers' fit times ``F`` (capped by the deadline minus
   the client's own ``D + U``, the only way to compare a fit with a total deadline); the client is a
   straggler if ``F > T*`` and picks the largest ``p`` with ``fit(p) <= T*``.
4. **Search.** ``p`` runs over the grid ``1 - k * step`` down to ``p_min`` (``p_min`` included);
   ``flop_ratio(p)`` is the exact ratio of the sub-model that ``p`` would build. If no grid point
   meets the target, ``p_min`` (best effort). A client with no history or no peer report yet trains
   the full model and is not a straggler.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from clipfl.errors import ConfigError, RemoteProtocolError

__all__ = [
    "LatencyHistory",
    "Plan",
    "PlannerConfig",
    "PlannerMode",
    "RoundTiming",
    "TimingReport",
    "plan_round",
    "round_target",
]

PlannerMode = Literal["clip", "clip-compute"]


def _check_seconds(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundTiming:
    """One round as this client measured it; ``flop_ratio`` is that of the model it fit (1.0: full)."""

    round: int
    download_s: float
    fit_s: float
    upload_s: float
    flop_ratio: float = 1.0

    def __post_init__(self) -> None:
        _check_seconds(download_s=self.download_s, fit_s=self.fit_s, upload_s=self.upload_s)
        if not 0.0 < self.flop_ratio <= 1.0:
            raise ValueError(f"flop_ratio must be in (0, 1], got {self.flop_ratio}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimingReport:
    """What a client tells its peers after a round: last measurements and full-model predictions."""

    round: int
    download_s: float
    fit_s: float
    upload_s: float
    predicted_fit_s: float
    predicted_total_s: float

    def __post_init__(self) -> None:
        if not isinstance(self.round, int) or isinstance(self.round, bool) or self.round < 0:
            raise ValueError(f"round must be an integer >= 0, got {self.round!r}")
        _check_seconds(
            download_s=self.download_s,
            fit_s=self.fit_s,
            upload_s=self.upload_s,
            predicted_fit_s=self.predicted_fit_s,
            predicted_total_s=self.predicted_total_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TimingReport:
        """Parse a peer's decoded report; anything malformed is the peer's fault."""
        if not isinstance(data, Mapping):
            raise RemoteProtocolError(f"timing report is a {type(data).__name__}, expected a map")
        fields = set(cls.__dataclass_fields__)
        if set(data) != fields:
            raise RemoteProtocolError(
                f"timing report fields {sorted(map(str, data))} differ from {sorted(fields)}"
            )
        try:
            return cls(**{k: data[k] for k in fields})
        except (TypeError, ValueError) as exc:
            raise RemoteProtocolError(f"bad timing report: {exc}") from exc


class LatencyHistory:
    """This client's recent rounds and the predictions made from them (rule 1 of the module doc)."""

    def __init__(self, window: int = 5) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._rounds: deque[RoundTiming] = deque(maxlen=window)
        self._last_full_fit: float | None = None

    def record(self, timing: RoundTiming) -> None:
        self._rounds.append(timing)
        if timing.flop_ratio == 1.0:
            self._last_full_fit = timing.fit_s

    def __len__(self) -> int:
        return len(self._rounds)

    @property
    def full_fit_s(self) -> float | None:
        full = [t.fit_s for t in self._rounds if t.flop_ratio == 1.0]
        if full:
            return statistics.median(full)
        if self._last_full_fit is not None:
            return self._last_full_fit
        if self._rounds:  # never trained the full model: scale pruned fits up by their FLOP ratio
            return statistics.median(t.fit_s / t.flop_ratio for t in self._rounds)
        return None

    @property
    def correction(self) -> float:
        full = self.full_fit_s
        if full is None or full <= 0:
            return 1.0
        ratios = [t.fit_s / (full * t.flop_ratio) for t in self._rounds if t.flop_ratio < 1.0]
        return statistics.median(ratios) if ratios else 1.0

    @property
    def download_s(self) -> float | None:
        return statistics.median(t.download_s for t in self._rounds) if self._rounds else None

    @property
    def upload_s(self) -> float | None:
        return statistics.median(t.upload_s for t in self._rounds) if self._rounds else None

    def predict_fit(self, flop_ratio: float) -> float | None:
        """Predicted fit seconds of a model with this FLOP ratio (``None`` without history)."""
        full = self.full_fit_s
        if full is None:
            return None
        return full if flop_ratio >= 1.0 else full * flop_ratio * self.correction

    def predicted_total_s(self) -> float | None:
        full, down, up = self.full_fit_s, self.download_s, self.upload_s
        if full is None or down is None or up is None:
            return None
        return down + full + up

    def report(self, round_number: int) -> TimingReport | None:
        """The report for peers after round ``round_number``, or ``None`` before any measured round."""
        total = self.predicted_total_s()
        if total is None:
            return None
        last = self._rounds[-1]
        return TimingReport(
            round=round_number,
            download_s=last.download_s,
            fit_s=last.fit_s,
            upload_s=last.upload_s,
            predicted_fit_s=self.full_fit_s or 0.0,
            predicted_total_s=total,
        )


def round_target(latencies: Sequence[float], straggler_fraction: float) -> float:
    """The ``k``-th smallest latency, ``k = n - floor(f * n)`` (at least 1): the slowest non-straggler."""
    if not latencies:
        raise ValueError("no latencies")
    if not 0.0 <= straggler_fraction < 1.0:
        raise ValueError(f"straggler fraction must be in [0, 1), got {straggler_fraction}")
    n = len(latencies)
    k = max(1, n - math.floor(straggler_fraction * n + 1e-9))
    return sorted(latencies)[k - 1]


DEFAULT_STRAGGLER_FRACTION = 0.2
"""f of DESIGN 5.2: 4 of 20 clients may straggle, as in the CLIP paper's fleets."""
DEFAULT_MIN_KEEP_RATIO = 0.5
"""p_min of DESIGN 5.3: no straggler trains less than half of each layer's units."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannerConfig:
    """CLIP planner settings; defaults from DESIGN section 5 (f = 0.2, p_min = 0.5)."""

    mode: PlannerMode = "clip"
    straggler_fraction: float = DEFAULT_STRAGGLER_FRACTION
    min_keep_ratio: float = DEFAULT_MIN_KEEP_RATIO
    grid_step: float = 0.01

    def __post_init__(self) -> None:
        if self.mode not in ("clip", "clip-compute"):
            raise ConfigError(f"planner mode must be 'clip' or 'clip-compute', got {self.mode!r}")
        if not 0.0 <= self.straggler_fraction < 1.0:
            raise ConfigError(f"straggler fraction must be in [0, 1), got {self.straggler_fraction}")
        if not 0.0 < self.min_keep_ratio <= 1.0:
            raise ConfigError(f"minimum keep ratio must be in (0, 1], got {self.min_keep_ratio}")
        if not 0.0 < self.grid_step <= 0.5:
            raise ConfigError(f"keep-ratio grid step must be in (0, 0.5], got {self.grid_step}")

    def grid(self) -> list[float]:
        """Candidate keep ratios below 1, descending, ending with ``min_keep_ratio``."""
        points = []
        k = 1
        while (p := round(1.0 - k * self.grid_step, 9)) > self.min_keep_ratio:
            points.append(p)
            k += 1
        if self.min_keep_ratio < 1.0:
            points.append(self.min_keep_ratio)
        return points


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What to train this round. ``target_s`` is T* (a fit time in compute mode), ``None`` without reports."""

    straggler: bool
    keep_ratio: float
    flop_ratio: float
    target_s: float | None
    predicted_fit_s: float | None


def plan_round(
    config: PlannerConfig,
    own: LatencyHistory,
    peers: Sequence[TimingReport],
    flop_ratio: Callable[[float], float],
    deadline_s: float | None = None,
) -> Plan:
    """Decide straggler status and keep ratio for the coming round (rules 2-4 of the module doc)."""
    full_fit = own.predict_fit(1.0)
    own_total = own.predicted_total_s()
    down, up = own.download_s, own.upload_s
    if full_fit is None or own_total is None or down is None or up is None or not peers:
        return Plan(straggler=False, keep_ratio=1.0, flop_ratio=1.0, target_s=None, predicted_fit_s=full_fit)
    f = config.straggler_fraction
    if config.mode == "clip":
        target = round_target([own_total, *(r.predicted_total_s for r in peers)], f)
        if deadline_s is not None:
            target = min(target, deadline_s)
        network, own_latency = down + up, own_total
    else:
        target = round_target([full_fit, *(r.predicted_fit_s for r in peers)], f)
        if deadline_s is not None:
            target = min(target, max(0.0, deadline_s - down - up))
        network, own_latency = 0.0, full_fit
    if own_latency <= target:
        return Plan(
            straggler=False, keep_ratio=1.0, flop_ratio=1.0, target_s=target, predicted_fit_s=full_fit
        )
    chosen = config.min_keep_ratio
    for p in config.grid():
        fit = own.predict_fit(flop_ratio(p))
        assert fit is not None
        if fit + network <= target:
            chosen = p
            break
    ratio = flop_ratio(chosen)
    return Plan(
        straggler=True,
        keep_ratio=chosen,
        flop_ratio=ratio,
        target_s=target,
        predicted_fit_s=own.predict_fit(ratio),
    )
