"""CLIP: deadline-aware invariant-unit pruning, without sockets or crypto (DESIGN sections 4 and 5).

The pieces, in the order a round uses them:

* ``units``: the prunable units of a model and which state coordinates tie to each;
* ``scores``: invariance score per unit from the previous and current global model;
* ``selection``: threshold calibration and the drop set (invariant, random, ordered);
* ``flops``: exact MAC counts, full and pruned;
* ``planner``: latency history, round target T*, straggler status and keep ratio;
* ``submodel``: the physically smaller model, and its delta and coverage re-inflated to full size;
* ``aggregation``: per-coordinate averaging of the secure sums (coverage or zero-pad).

Everything is synchronous and deterministic given an injected ``numpy.random.Generator``.
"""

from clipfl.clip.aggregation import AggregationMode, average_update, coordinate_divisor
from clipfl.clip.flops import flop_ratio, forward_macs, layout_macs
from clipfl.clip.planner import (
    DEFAULT_MIN_KEEP_RATIO,
    DEFAULT_STRAGGLER_FRACTION,
    LatencyHistory,
    Plan,
    PlannerConfig,
    PlannerMode,
    RoundTiming,
    TimingReport,
    plan_round,
    round_target,
)
from clipfl.clip.scores import DEFAULT_EPS, unit_scores
from clipfl.clip.selection import (
    Selection,
    ThresholdCalibrator,
    drop_count,
    kept_counts,
    select_invariant,
    select_ordered,
    select_random,
)
from clipfl.clip.submodel import Inflated, SubModel, build_submodel, full_coverage, unit_coverage
from clipfl.clip.units import Axis, Layer, TensorTie, UnitGroup, UnitLayout

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_MIN_KEEP_RATIO",
    "DEFAULT_STRAGGLER_FRACTION",
    "AggregationMode",
    "Axis",
    "Inflated",
    "LatencyHistory",
    "Layer",
    "Plan",
    "PlannerConfig",
    "PlannerMode",
    "RoundTiming",
    "Selection",
    "SubModel",
    "TensorTie",
    "ThresholdCalibrator",
    "TimingReport",
    "UnitGroup",
    "UnitLayout",
    "average_update",
    "build_submodel",
    "coordinate_divisor",
    "drop_count",
    "flop_ratio",
    "forward_macs",
    "full_coverage",
    "kept_counts",
    "layout_macs",
    "plan_round",
    "round_target",
    "select_invariant",
    "select_ordered",
    "select_random",
    "unit_coverage",
    "unit_scores",
]
