"""A client's straggler mitigation, round by round: plan, select units, build the sub-model.

Synchronous glue between the CLIP core (``clipfl.clip``) and the client driver. Per round the
driver calls, in order:

1. ``observe_global(weights)`` with the global model of the round (it scores invariance against the
   previous round's global model);
2. ``plan(deadline)``: straggler or not, and the keep ratio, from this client's latency history and
   the peers' timing reports (``receive_report``), which arrive over the client-to-client channel;
3. ``select()`` then ``build(global_state)``: which units to drop and the physically smaller model;
4. after the round, ``record(timing)``; ``report(round)`` is what the client tells its peers.

Strategies (``--mitigation``): ``clip`` (network-aware) and ``clip-compute`` (compute-aware) drop
invariant units; ``random`` (Federated Dropout) and ``ordered`` (FjORD) drop random or trailing
units with the same keep-ratio rule as ``clip``, so that the comparison is at equal speed-up;
``fluid`` drops invariant units too, but the server picks the stragglers and their keep ratios from
the upload times it sees in the clear (so it exists only without secure aggregation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgpack
import numpy as np
from torch import nn

from clipfl.clip import (
    LatencyHistory,
    Plan,
    PlannerConfig,
    PlannerMode,
    RoundTiming,
    Selection,
    SubModel,
    ThresholdCalibrator,
    TimingReport,
    UnitLayout,
    build_submodel,
    flop_ratio,
    kept_counts,
    plan_round,
    select_invariant,
    select_ordered,
    select_random,
    unit_scores,
)
from clipfl.errors import RemoteProtocolError
from clipfl.settings import PRUNING_MITIGATIONS

__all__ = ["ClientPruner", "RoundChoice", "decode_report", "encode_report"]

log = logging.getLogger(__name__)


def encode_report(report: TimingReport) -> bytes:
    return msgpack.packb(report.to_dict(), use_bin_type=True)


def decode_report(payload: bytes) -> TimingReport:
    """A peer's report; anything that does not parse is that peer's fault (``RemoteProtocolError``)."""
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise RemoteProtocolError(f"timing report is not msgpack: {exc.__class__.__name__}") from None
    return TimingReport.from_dict(data)


@dataclass(frozen=True, slots=True)
class RoundChoice:
    """What this client trains in a round, and why (the fields of its per-round record)."""

    plan: Plan
    selection: Selection | None

    @property
    def keep_ratio(self) -> float:
        return self.plan.keep_ratio if self.selection is not None else 1.0

    def record(self) -> dict[str, object]:
        s = self.selection
        return {
            "straggler": self.plan.straggler,
            "keep_ratio": self.keep_ratio,
            "predicted_fit_seconds": self.plan.predicted_fit_s,
            "target_seconds": self.plan.target_s,
            "units_dropped": s.units_dropped if s else 0,
            "units_dropped_invariant": s.units_dropped_invariant if s else 0,
        }


class ClientPruner:
    def __init__(
        self,
        mitigation: str,
        model: nn.Module,
        input_shape: tuple[int, ...],
        *,
        seed: int,
        straggler_fraction: float,
        min_keep_ratio: float,
    ) -> None:
        if mitigation not in PRUNING_MITIGATIONS:
            raise ValueError(f"{mitigation!r} does not prune on the client")
        self.mitigation = mitigation
        self.model = model
        self.layout = UnitLayout.of(model, input_shape)  # ConfigError naming an unsupported layer
        mode: PlannerMode = "clip-compute" if mitigation == "clip-compute" else "clip"
        self.config = PlannerConfig(
            mode=mode, straggler_fraction=straggler_fraction, min_keep_ratio=min_keep_ratio
        )
        self.history = LatencyHistory()
        self.calibrator = ThresholdCalibrator()
        self.peers: dict[int, TimingReport] = {}
        self._rng = np.random.default_rng(seed)
        self._previous: np.ndarray | None = None
        self._current: np.ndarray | None = None
        self._scores: np.ndarray | None = None
        self._dropped: tuple[np.ndarray, ...] | None = None
        self._ratio_cache: dict[float, float] = {}

    @property
    def coverage_size(self) -> int:
        return self.layout.units + 1

    def _flop_ratio(self, p: float) -> float:
        if p not in self._ratio_cache:
            self._ratio_cache[p] = flop_ratio(self.layout, p)
        return self._ratio_cache[p]

    # ------------------------------------------------------------------------------ inputs

    def observe_global(self, weights: np.ndarray) -> None:
        """The round's global model (flat); invariance is scored against the previous one."""
        self._previous, self._current = self._current, weights
        if self._previous is not None:
            self._scores = unit_scores(self.layout, self._previous, self._current)

    def receive_report(self, peer: int, payload: bytes) -> None:
        """A peer's timing report; a malformed one is logged and ignored."""
        try:
            report = decode_report(payload)
        except RemoteProtocolError as exc:
            log.warning("timing report from client %d ignored: %s", peer, exc)
            return
        known = self.peers.get(peer)
        if known is None or report.round >= known.round:
            self.peers[peer] = report

    def record(self, timing: RoundTiming) -> None:
        self.history.record(timing)

    def report(self, round_number: int) -> bytes | None:
        report = self.history.report(round_number)
        return encode_report(report) if report is not None else None

    # ---------------------------------------------------------------------------- decisions

    def plan(self, deadline_s: float | None = None) -> Plan:
        return plan_round(self.config, self.history, list(self.peers.values()), self._flop_ratio, deadline_s)

    def choose(
        self, deadline_s: float | None = None, assigned_keep_ratio: float | None = None
    ) -> RoundChoice:
        """Plan the round and, for a straggler, pick the units to drop.

        Under ``fluid`` the server chose the keep ratio (``assigned_keep_ratio``); the client only
        builds the invariant sub-model of that size.
        """
        if self.mitigation == "fluid":
            p = (
                1.0
                if assigned_keep_ratio is None
                else min(1.0, max(self.config.min_keep_ratio, assigned_keep_ratio))
            )
            ratio = self._flop_ratio(p) if p < 1.0 else 1.0
            plan = Plan(
                straggler=p < 1.0,
                keep_ratio=p,
                flop_ratio=ratio,
                target_s=None,
                predicted_fit_s=self.history.predict_fit(ratio),
            )
        else:
            plan = self.plan(deadline_s)
        if not plan.straggler or plan.keep_ratio >= 1.0:
            self._dropped = None
            return RoundChoice(plan, None)
        p = plan.keep_ratio
        invariant = None
        threshold = None
        if self._scores is not None:
            needed = self.layout.units - sum(kept_counts(self.layout, p))
            threshold = self.calibrator.update(self._scores, needed)
            invariant = self._scores <= threshold
        if self.mitigation == "random":
            selection = select_random(self.layout, p, self._rng, invariant)
        elif self.mitigation == "ordered":
            selection = select_ordered(self.layout, p, invariant)
        elif self._scores is not None and threshold is not None:
            selection = select_invariant(self.layout, self._scores, threshold, p, self._rng, self._dropped)
        else:  # no second global model yet to score invariance: random fill, as DESIGN 5.4's last resort
            selection = select_random(self.layout, p, self._rng)
        self._dropped = selection.dropped
        return RoundChoice(plan, selection)

    def build(self, selection: Selection, global_flat: np.ndarray) -> SubModel:
        return build_submodel(self.model, self.layout, selection.kept, global_flat)
