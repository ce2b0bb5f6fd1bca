"""The paper's table (issue 12): each workload at its preset's size, on the paper's fleet and on a drawn
one, every strategy side by side over several seeds, in virtual time; one report.

    python -m benchmarks.paper                                    # 3 workloads x 2 fleets x 8 x 3 seeds
    python -m benchmarks.paper --workloads femnist --seeds 1 --backend ray
    python -m benchmarks.paper --report-only                      # the report from the runs made so far

Every run is a ``benchmarks.harness --engine sim`` run of ``paper-<workload>``, made into
``--runs/<workload>-<fleet>/`` (the harness's layout and per-pair report); a run that finished in an
earlier invocation is kept, so the command can be stopped and started again. The report goes to
``--out`` (default ``benchmarks/results/paper``): ``results.json``, ``report.md`` and PNG plots.

**Fleets.** ``paper``: the scenario's own (4 of 20 clients straggle: 2 in compute at 3x, 2 behind capped
links). ``drawn``: no client is picked: compute speeds are log-normal around the scenario's base speed
(sigma ``DRAWN_SPEED_SIGMA``) and links fall into two classes, the base links for four clients in five
and the scenario's straggler links for one in five, drawn per seed (``drawn_variant``). The ideal of
both is every client at the base speed on base links.

**Figures, per seed then medianed** (the spread is the range over seeds):

* *target*: 95 % of the final test accuracy of the ideal run of the same seed and fleet, fixed before
  any strategy's result is read, so every strategy that learns can reach it;
* *time to target*: virtual seconds from the end of the warm-up round to the first round at or above
  the target; *faster than none*: ``1 - T / T_none``;
* *final accuracy* and its *delta* from ``none`` in points; *round time / ideal*: mean round time over
  the ideal's;
* *stragglers' keep ratio*: the mean keep ratio of the stragglers' sub-models over the timed rounds;
  the stragglers are the scenario's named ones on the paper fleet, and on a drawn fleet the slowest
  fifth of the clients by their mean client time (download + fit + upload) in the ``none`` run;
* *stragglers' own accuracy*: the final model on the stragglers' own test splits (natural partitions:
  the same writers' or roles' test samples), weighted by their samples: what ``deadline`` costs the
  clients it drops, on non-IID data (simulated runs write ``local_accuracy.json``; "-" without it).

**The goal** (issue 12) is checked and printed, never arranged: ``clip`` at least 40 % faster to the
target than ``none`` (and reaching it in every seed) at no more than 1 point of accuracy lost, its mean
round time within 1.10x the ideal's, its final accuracy at least that of ``random`` and of
``ordered``, and, where the clients have their own test splits (natural partitions), the stragglers'
own accuracy clearly above ``deadline``'s: by at least 1 point (the stragglers' splits are small:
FEMNIST's four hold 76 samples, 1.3 points each).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import math
import operator
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.report import BASELINE, IDEAL, RunRecord, load_run, mean_keep_ratio, run_figures
from benchmarks.scenario import BandwidthSpec, Scenario, load_scenario
from clipfl.clip import DEFAULT_MIN_KEEP_RATIO
from clipfl.errors import ClipflError, ConfigError
from clipfl.sim import BACKENDS, SECAGG_COSTS

__all__ = ["DRAWN_SPEED_SIGMA", "FLEETS", "WORKLOADS", "drawn_variant", "main", "paper_table"]

WORKLOADS = ("femnist", "shakespeare", "cifar10")
FLEETS = ("paper", "drawn")
STRATEGIES = ("none", "deadline", "random", "ordered", "clip-compute", "clip", "fluid", IDEAL)
DRAWN_SPEED_SIGMA = 0.5
"""The drawn fleet's spread of compute speeds: the standard deviation of their natural logarithm."""
TARGET_FRACTION = 0.95
STRAGGLER_FRACTION = 0.2
GOAL_FASTER, GOAL_POINTS_LOST, GOAL_VS_IDEAL, GOAL_STRAGGLERS_POINTS = 0.40, 1.0, 1.10, 1.0
ROOT = Path(__file__).resolve().parent.parent


def drawn_variant(scenario: Scenario) -> Scenario:
    """The scenario's federation on a fleet drawn from distributions instead of named stragglers."""
    d, s = scenario.devices, scenario.stragglers
    base = BandwidthSpec(upload_rate=d.upload_rate, download_rate=d.download_rate, weight=4.0)
    slow = BandwidthSpec(
        upload_rate=s.upload_rate or d.upload_rate,
        download_rate=s.download_rate or d.download_rate,
        weight=1.0,
    )
    sim = dataclasses.replace(
        scenario.sim, fleet="drawn", speed_sigma=DRAWN_SPEED_SIGMA, bandwidth=(base, slow)
    )
    return dataclasses.replace(
        scenario,
        name=f"{scenario.name}-drawn",
        description=f"The federation of {scenario.name} on a drawn fleet: no client is named; compute "
        f"speeds log-normal around the base (sigma {DRAWN_SPEED_SIGMA}), one client in five behind the "
        "scenario's straggler links.",
        sim=sim,
    )


def sample_caps(text: str | None, workloads: Sequence[str]) -> dict[str, int]:
    """``--max-client-samples``: ``N`` for every workload, or ``workload=N,...`` for some."""
    if text is None or not text.strip():
        return {}
    every: dict[str, int] = {}
    named: dict[str, int] = {}
    for item in text.split(","):
        name, _, value = item.rpartition("=")
        name = name.strip()
        if name and name not in WORKLOADS:
            raise ConfigError(
                f"--max-client-samples: unknown workload {name!r}; known: {', '.join(WORKLOADS)}"
            )
        try:
            cap = int(value)
        except ValueError:
            raise ConfigError(
                f"--max-client-samples: {item.strip()!r} is not N or WORKLOAD=N (e.g. shakespeare=250)"
            ) from None
        if cap < 1:
            raise ConfigError(f"--max-client-samples must be >= 1, got {cap}")
        if name in named or (not name and every):
            raise ConfigError(f"--max-client-samples: {name or 'N for every workload'} is given twice")
        if name:
            named[name] = cap
        else:
            every = dict.fromkeys(workloads, cap)
    return {**every, **named}  # a workload's own cap wins over N, wherever each is written


def pair_scenario(
    workload: str,
    fleet: str,
    seeds: int,
    max_client_samples: int | None = None,
    rounds: int | None = None,
    slowdown: float | None = None,
) -> Scenario:
    """``paper-<workload>`` on ``fleet``, with ``seeds`` seeds; ``max_client_samples`` shrinks the data,
    ``rounds`` the run (smoke tests only: a shortened run says nothing about time to target),
    ``slowdown`` replaces the base compute slowdown (every device slower alike; the stragglers' multiple
    stays)."""
    scenario = load_scenario(f"paper-{workload}").with_seeds(seeds)
    if rounds is not None:
        scenario = scenario.with_rounds(rounds)
    if slowdown is not None:
        scenario = dataclasses.replace(
            scenario, devices=dataclasses.replace(scenario.devices, slowdown=slowdown)
        )
    if max_client_samples is not None:
        federation = dict(scenario.federation)
        federation["max_client_samples"] = max_client_samples
        scenario = dataclasses.replace(scenario, federation=tuple(federation.items()))
    return drawn_variant(scenario) if fleet == "drawn" else scenario


# ---------------------------------------------------------------------------------------- figures


def _stragglers(scenario: Scenario, records: Mapping[tuple[str, int], RunRecord], seed: int) -> list[int]:
    if scenario.sim.fleet != "drawn" and scenario.stragglers.all_ids is not None:
        return list(scenario.stragglers.all_ids)
    base = records.get((BASELINE, seed))
    if base is None:
        return []
    timed = {
        cid: statistics.fmean(
            float(r["download_seconds"]) + float(r["fit_seconds"]) + float(r["upload_seconds"])
            for r in rows
            if int(r["round"]) > scenario.warmup_rounds
        )
        for cid, rows in base.clients.items()
        if any(int(r["round"]) > scenario.warmup_rounds for r in rows)
    }
    count = max(1, math.ceil(STRAGGLER_FRACTION * len(timed)))
    return sorted(sorted(timed, key=lambda c: (-timed[c], c))[:count])


def _own_accuracy(record: RunRecord, ids: Sequence[int]) -> float | None:
    """The final model's accuracy on the clients' own test splits, weighted by their samples
    (``local_accuracy.json`` of a simulated run on a natural partition; None without it)."""
    path = record.path / "local_accuracy.json"
    if not ids or not path.exists():
        return None
    local = json.loads(path.read_text(encoding="utf-8"))
    rows = [local[str(c)] for c in ids if str(c) in local]
    samples = sum(int(r["samples"]) for r in rows)
    return sum(float(r["accuracy"]) * int(r["samples"]) for r in rows) / samples if samples else None


PRUNING = ("random", "ordered", "clip-compute", "clip", "fluid")
"""The strategies whose stragglers train sub-models (their diagnostics): the first four plan their keep
ratio with CLIP's planner; ``fluid``'s server assigns it (no round target at the client: its
``over_target`` is None)."""


def pruning_diagnostics(record: RunRecord, ids: Sequence[int], warmup_rounds: int) -> dict[str, Any]:
    """Why a pruning strategy is as fast as it is, from its stragglers' own records (issue 12's list):

    * ``first_pruned_round``: the first round any straggler trained a sub-model (None: never);
    * over the stragglers' timed rounds that trained a sub-model: ``at_floor``, the share at the
      minimum keep ratio (the straggler wanted to prune more than it may); ``fit_over_predicted``, the
      median of fit / the planner's predicted fit - 1 (the prediction error; > 0: slower than
      predicted); ``over_target``, the share whose client time (download + fit + upload; the fit alone
      for ``clip-compute``, whose target leaves the network out) exceeded the round target T*; and
      ``invariant_share``, the invariant units among those dropped (the rest is random fill).
    """
    config = record.path / "config.json"
    floor = (
        float(json.loads(config.read_text(encoding="utf-8")).get("min_keep_ratio", DEFAULT_MIN_KEEP_RATIO))
        if config.exists()
        else DEFAULT_MIN_KEEP_RATIO
    )
    rows = [r for c in ids for r in record.clients.get(c, ())]
    pruned_rounds = [int(r["round"]) for r in rows if float(r.get("keep_ratio", 1.0)) < 1.0]
    timed = [r for r in rows if int(r["round"]) > warmup_rounds and float(r.get("keep_ratio", 1.0)) < 1.0]
    predicted = [r for r in timed if r.get("predicted_fit_seconds")]
    targeted = [r for r in timed if r.get("target_seconds") is not None]
    network = record.strategy != "clip-compute"

    def client_time(r: Mapping[str, Any]) -> float:
        fit = float(r["fit_seconds"])
        return fit + float(r["download_seconds"]) + float(r["upload_seconds"]) if network else fit

    dropped = sum(int(r.get("units_dropped", 0)) for r in timed)
    return {
        "first_pruned_round": min(pruned_rounds) if pruned_rounds else None,
        "pruned_rounds": len(timed),
        "at_floor": sum(float(r["keep_ratio"]) <= floor + 1e-9 for r in timed) / len(timed)
        if timed
        else None,
        "fit_over_predicted": statistics.median(
            float(r["fit_seconds"]) / float(r["predicted_fit_seconds"]) - 1 for r in predicted
        )
        if predicted
        else None,
        "over_target": sum(client_time(r) > float(r["target_seconds"]) * (1 + 1e-9) for r in targeted)
        / len(targeted)
        if targeted
        else None,
        "invariant_share": sum(int(r.get("units_dropped_invariant", 0)) for r in timed) / dropped
        if dropped
        else None,
    }


DIAGNOSTICS = ("first_pruned_round", "at_floor", "fit_over_predicted", "over_target", "invariant_share")


def _spread(values: Sequence[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(present), "min": min(present), "max": max(present), "n": len(present)}


def paper_table(scenario: Scenario, records: Sequence[RunRecord]) -> dict[str, Any]:
    """Per strategy, the figures of the module docstring over the seeds of ``records``."""
    by = {(r.strategy, r.seed): r for r in records}
    seeds = sorted({r.seed for r in records})
    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    targets: dict[int, float] = {}
    for seed in seeds:
        ideal = by.get((IDEAL, seed))
        if ideal is None or not ideal.rounds:
            continue  # no target without the ideal of this seed
        targets[seed] = TARGET_FRACTION * float(ideal.rounds[-1]["test_accuracy"])
        ids = _stragglers(scenario, by, seed)
        for (strategy, s), record in by.items():
            if s != seed:
                continue
            fig = run_figures(record, target=targets[seed], warmup_rounds=scenario.warmup_rounds)
            per_seed.setdefault(strategy, {})[seed] = {
                "time_to_target": fig.time_to_target_seconds,
                "final_accuracy": fig.final_accuracy,
                "mean_round_seconds": fig.mean_round_seconds,
                "straggler_keep_ratio": None
                if strategy == IDEAL
                else mean_keep_ratio(record, ids, lambda r: r > scenario.warmup_rounds),
                "straggler_own_accuracy": _own_accuracy(record, ids),
                "stragglers": ids,
            }
            if strategy in PRUNING:
                per_seed[strategy][seed]["diagnostics"] = pruning_diagnostics(
                    record, ids, scenario.warmup_rounds
                )
    table: dict[str, Any] = {}
    order = [s for s in STRATEGIES if s in per_seed] + sorted(set(per_seed) - set(STRATEGIES))
    for strategy in order:
        rows = per_seed[strategy]
        faster, delta, vs_ideal = [], [], []
        for seed, row in rows.items():
            base, best = per_seed.get(BASELINE, {}).get(seed), per_seed.get(IDEAL, {}).get(seed)
            if base is not None and row["time_to_target"] is not None and base["time_to_target"]:
                faster.append(1 - row["time_to_target"] / base["time_to_target"])
            if base is not None and row["final_accuracy"] is not None and base["final_accuracy"] is not None:
                delta.append(100 * (row["final_accuracy"] - base["final_accuracy"]))
            if best is not None and row["mean_round_seconds"] and best["mean_round_seconds"]:
                vs_ideal.append(row["mean_round_seconds"] / best["mean_round_seconds"])
        table[strategy] = {
            "seeds": sorted(rows),
            "target_reached": sum(r["time_to_target"] is not None for r in rows.values()),
            "time_to_target_seconds": _spread([r["time_to_target"] for r in rows.values()]),
            "faster_than_none": _spread(faster),
            "final_accuracy": _spread([r["final_accuracy"] for r in rows.values()]),
            "accuracy_delta_points": _spread(delta),
            "round_time_vs_ideal": _spread(vs_ideal),
            "straggler_keep_ratio": _spread([r["straggler_keep_ratio"] for r in rows.values()]),
            "straggler_own_accuracy": _spread([r["straggler_own_accuracy"] for r in rows.values()]),
            "per_seed": {str(seed): row for seed, row in sorted(rows.items())},
        }
        if strategy in PRUNING:
            table[strategy]["diagnostics"] = {
                key: _spread([r["diagnostics"][key] for r in rows.values()]) for key in DIAGNOSTICS
            }
    return {"targets": {str(s): t for s, t in sorted(targets.items())}, "strategies": table}


def goal_check(table: Mapping[str, Any]) -> dict[str, Any]:
    """Issue 12's goal for ``clip`` on one workload and fleet: each part, met or not, with its figure."""
    rows = table["strategies"]
    clip = rows.get("clip")
    if clip is None or BASELINE not in rows or IDEAL not in rows:
        return {"complete": False}
    med = lambda row, key: row[key]["median"]  # noqa: E731 - a local shorthand
    parts = {
        "faster_than_none >= 0.40": med(clip, "faster_than_none"),
        "points_lost <= 1": med(clip, "accuracy_delta_points"),
        "round_time_vs_ideal <= 1.10": med(clip, "round_time_vs_ideal"),
    }
    every_seed = clip["target_reached"] == len(clip["seeds"])  # a missed seed is in no median
    met = {
        "faster_than_none >= 0.40": every_seed
        and parts["faster_than_none >= 0.40"] is not None
        and parts["faster_than_none >= 0.40"] >= GOAL_FASTER,
        "points_lost <= 1": parts["points_lost <= 1"] is not None
        and parts["points_lost <= 1"] >= -GOAL_POINTS_LOST,
        "round_time_vs_ideal <= 1.10": parts["round_time_vs_ideal <= 1.10"] is not None
        and parts["round_time_vs_ideal <= 1.10"] <= GOAL_VS_IDEAL,
    }
    for other in ("random", "ordered"):
        if other in rows:
            key = f"final_accuracy >= {other}"
            mine, theirs = med(clip, "final_accuracy"), med(rows[other], "final_accuracy")
            parts[key] = None if mine is None or theirs is None else mine - theirs
            met[key] = mine is not None and theirs is not None and mine >= theirs
    deadline = rows.get("deadline")
    if deadline is not None and (
        clip["straggler_own_accuracy"]["n"] or deadline["straggler_own_accuracy"]["n"]
    ):
        # a part where the clients have their own test splits (runs wrote local_accuracy.json)
        key = "stragglers_own_accuracy >= deadline + 1 point"
        mine, theirs = med(clip, "straggler_own_accuracy"), med(deadline, "straggler_own_accuracy")
        parts[key] = None if mine is None or theirs is None else 100 * (mine - theirs)
        met[key] = parts[key] is not None and parts[key] >= GOAL_STRAGGLERS_POINTS
    return {"complete": True, "figures": parts, "met": met, "all_met": all(met.values())}


# ---------------------------------------------------------------------------------------- report


def fmt_spread(spread: Mapping[str, Any], spec: str, scale: float = 1.0, suffix: str = "") -> str:
    """A ``_spread`` as the reports print it: the median, then [min, max] over more than one seed."""
    if spread["median"] is None:
        return "-"
    m = format(scale * spread["median"], spec) + suffix
    if spread["n"] > 1:
        m += f" [{format(scale * spread['min'], spec)}, {format(scale * spread['max'], spec)}]"
    return m


def render(results: Mapping[str, Any], plots: Sequence[str]) -> str:
    simulated = results.get("engine", "sim") == "sim"
    lines = [
        "# The paper's table" + (", in virtual time" if simulated else ", live"),
        "",
        f"Command: `{results['command']}`. Seeds: {results['seeds']}. "
        + (
            "Engine: sim (virtual time, real training, real secure aggregation unless noted). "
            if simulated
            else "Engine: live (real processes and sockets on this machine, emulated devices). "
        )
        + "Medians over seeds, [min, max] in brackets. "
        "The target is 95 % of the ideal run's final accuracy (same seed, same fleet); 'faster' is "
        "1 - time to target / none's. Stragglers: the scenario's named ones (paper fleet), the slowest "
        "fifth in the none run (drawn fleet). See `benchmarks/paper.py` for every definition.",
        "",
    ]
    for pair in results["pairs"]:
        lines += [
            f"## {pair['workload']}, {pair['fleet']} fleet",
            "",
            f"{pair['description']}",
            "",
            f"{pair['clients']} clients, {pair['rounds']} rounds, secure aggregation `{pair['secagg']}`"
            + (
                f", at most {pair['max_client_samples']} samples per client"
                if pair["max_client_samples"]
                else ""
            )
            + (f", base slowdown {pair['slowdown']:g}x (overridden)" if pair.get("slowdown_override") else "")
            + f". Runs: {pair['runs_ok']} of {pair['runs_planned']} planned"
            + (f" (missing: {', '.join(pair['missing'])})" if pair["missing"] else "")
            + (
                "; the table uses the seeds with every strategy's run ("
                + (", ".join(map(str, pair["seeds_used"])) or "none yet")
                + f"), not {', '.join(pair['runs_unused'])}"
                if pair.get("runs_unused")
                else ""
            )
            + ". Targets: "
            + ", ".join(f"seed {s}: {t:.4f}" for s, t in pair["table"]["targets"].items())
            + ".",
            "",
            "| strategy | time to target (s) | faster than none | final accuracy | delta (points) "
            "| round time / ideal | stragglers' keep ratio | stragglers' own accuracy | reached |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, row in pair["table"]["strategies"].items():
            lines.append(
                f"| {name} | {fmt_spread(row['time_to_target_seconds'], '.0f')} "
                f"| {fmt_spread(row['faster_than_none'], '.1f', 100, ' %')} "
                f"| {fmt_spread(row['final_accuracy'], '.4f')} "
                f"| {fmt_spread(row['accuracy_delta_points'], '+.2f')} "
                f"| {fmt_spread(row['round_time_vs_ideal'], '.2f')} "
                f"| {fmt_spread(row['straggler_keep_ratio'], '.2f')} "
                f"| {fmt_spread(row['straggler_own_accuracy'], '.4f')} "
                f"| {row['target_reached']}/{len(row['seeds'])} |"
            )
        diagnosed = {
            k: v["diagnostics"] for k, v in pair["table"]["strategies"].items() if "diagnostics" in v
        }
        if diagnosed:
            lines += [
                "",
                "Why the pruning strategies are as fast as they are (the stragglers' timed rounds that "
                "trained a sub-model): the first round any straggler pruned; the share of those rounds at "
                "the minimum keep ratio; the fit over the planner's prediction - 1; the share whose client "
                "time exceeded the round target; the invariant units among those dropped (the rest is "
                "random fill).",
                "",
                "| strategy | first pruned round | at the keep-ratio floor | fit / predicted - 1 "
                "| over the target | invariant share of dropped units |",
                "|---|---|---|---|---|---|",
            ]
            for name, d in diagnosed.items():
                lines.append(
                    f"| {name} | {fmt_spread(d['first_pruned_round'], 'g')} "
                    f"| {fmt_spread(d['at_floor'], '.0f', 100, ' %')} "
                    f"| {fmt_spread(d['fit_over_predicted'], '+.1f', 100, ' %')} "
                    f"| {fmt_spread(d['over_target'], '.0f', 100, ' %')} "
                    f"| {fmt_spread(d['invariant_share'], '.0f', 100, ' %')} |"
                )
        goal = pair["goal"]
        if goal.get("complete"):
            lines += [
                "",
                "CLIP's goal (issue 12): "
                + "; ".join(
                    f"{k}: {'met' if goal['met'][k] else 'NOT met'} ({goal_figure(k, v)})"
                    for k, v in goal["figures"].items()
                )
                + ".",
            ]
        lines.append("")
    lines += [f"![{p}]({p})" for p in plots]
    lines += [
        "",
        f"Wall time of the runs made by this invocation and before: {results['wall_seconds']:.0f} s "
        f"on {results['cpu_count']} CPUs (backend {results['backend']}).",
        "",
    ]
    return "\n".join(lines)


def goal_figure(key: str, value: float | None) -> str:
    """One part's figure of ``goal_check``, as the report prints it."""
    if value is None:
        return "-"
    if key.startswith("faster"):
        return f"{100 * value:.1f} %"
    if key.startswith("final_accuracy"):
        return f"{100 * value:+.2f} points"
    if key.startswith(("points", "stragglers")):
        return f"{value:+.2f} points"
    return f"{value:.2f}x"


Series = Callable[[RunRecord, Mapping[str, Any]], tuple[list[float], list[float]] | None]


def _accuracy_series(record: RunRecord, table: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    return [float(r["elapsed_seconds"]) for r in record.rounds], [
        float(r["test_accuracy"]) for r in record.rounds
    ]


def _round_time_series(record: RunRecord, table: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    return [float(r["round"]) for r in record.rounds], [float(r["round_seconds"]) for r in record.rounds]


def _keep_series(record: RunRecord, table: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    if record.strategy == IDEAL:
        return None
    row = table["strategies"].get(record.strategy, {}).get("per_seed", {}).get(str(record.seed))
    ids = row["stragglers"] if row else []
    rounds = [int(r["round"]) for r in record.rounds]
    keeps = [mean_keep_ratio(record, ids, functools.partial(operator.eq, x)) for x in rounds]
    return [float(x) for x in rounds], [math.nan if k is None else k for k in keeps]


_PLOTS: tuple[tuple[str, str, str, str, Series], ...] = (
    (
        "accuracy_vs_time.png",
        "Accuracy against {clock}",
        "{clock} (s)",
        "test accuracy",
        _accuracy_series,
    ),
    ("round_time.png", "Round time per round", "round", "round time (s)", _round_time_series),
    (
        "straggler_keep_ratio.png",
        "Keep ratio of the stragglers' sub-models",
        "round",
        "stragglers' mean keep ratio",
        _keep_series,
    ),
)


def write_plots(
    pairs: Sequence[tuple[str, str, list[RunRecord], Mapping[str, Any]]], out: Path, *, engine: str = "sim"
) -> list[str]:
    """Accuracy against time (virtual for ``engine`` sim, wall-clock for live), round time per round and
    stragglers' keep ratio, one panel per workload and fleet (the first seed's runs; every seed's are in
    the per-pair reports of ``--runs``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not pairs:
        return []
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(STRATEGIES)}
    order = {name: i for i, name in enumerate(STRATEGIES)}
    clock = "virtual time" if engine == "sim" else "wall-clock time"
    for file, title_spec, xlabel_spec, ylabel, series in _PLOTS:
        title, xlabel = title_spec.format(clock=clock), xlabel_spec.format(clock=clock)
        fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4.5), squeeze=False)
        for ax, (workload, fleet, records, table) in zip(axes[0], pairs, strict=True):
            seed = min(r.seed for r in records)
            for record in sorted(
                (r for r in records if r.seed == seed), key=lambda r: order.get(r.strategy, 99)
            ):
                line = series(record, table)
                if line is not None:
                    ax.plot(*line, color=colors.get(record.strategy), label=record.strategy, lw=1.2)
            target = table["targets"].get(str(seed))
            if series is _accuracy_series and target is not None:
                ax.axhline(target, color="grey", ls="--", lw=1, label="target")
            ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{workload}, {fleet} fleet (seed {seed})")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize="x-small")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out / file, dpi=90)
        plt.close(fig)
    files = [file for file, *_ in _PLOTS]
    if _plot_straggler_accuracy(plt, pairs, out / STRAGGLER_ACCURACY_PLOT):
        files.append(STRAGGLER_ACCURACY_PLOT)
    return files


STRAGGLER_ACCURACY_PLOT = "straggler_accuracy.png"


def _plot_straggler_accuracy(
    plt: Any, pairs: Sequence[tuple[str, str, list[RunRecord], Mapping[str, Any]]], path: Path
) -> bool:
    """Per strategy, the final model's accuracy on the stragglers' own test splits beside its test
    accuracy: medians over the seeds, bars from min to max. Drawn for the pairs whose clients have
    their own splits (natural partitions); False, and no file, when none has."""
    shown = [
        (w, f, t)
        for w, f, _, t in pairs
        if any(row["straggler_own_accuracy"]["n"] for row in t["strategies"].values())
    ]
    if not shown:
        return False
    fig, axes = plt.subplots(1, len(shown), figsize=(6 * len(shown), 4.5), squeeze=False)
    for ax, (workload, fleet, table) in zip(axes[0], shown, strict=True):
        names = list(table["strategies"])
        lowest = min(
            row[key]["min"]
            for row in table["strategies"].values()
            for key in ("straggler_own_accuracy", "final_accuracy")
            if row[key]["n"]
        )
        for offset, (key, label) in enumerate(
            (("straggler_own_accuracy", "stragglers' own test data"), ("final_accuracy", "test set"))
        ):
            spreads = [table["strategies"][n][key] for n in names]
            xs = [i + 0.4 * offset - 0.2 for i, sp in enumerate(spreads) if sp["n"]]
            med = [sp["median"] for sp in spreads if sp["n"]]
            low = [sp["median"] - sp["min"] for sp in spreads if sp["n"]]
            high = [sp["max"] - sp["median"] for sp in spreads if sp["n"]]
            ax.bar(xs, med, width=0.4, yerr=[low, high], capsize=3, label=label)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        seeds = max(row["straggler_own_accuracy"]["n"] for row in table["strategies"].values())
        ax.set_ylim(bottom=max(0.0, lowest - 0.05))  # the differences are points, not tens of points
        ax.set(
            ylabel="final accuracy (axis cut)", title=f"{workload}, {fleet} fleet ({seeds} seed(s), min-max)"
        )
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize="x-small")
    fig.suptitle("The stragglers' own accuracy: what each strategy costs the slow clients")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------- CLI


def split_names(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """A ``--what`` list of names, each from ``allowed``, in order, without repeats."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ConfigError(f"--{what}: unknown {unknown or text!r}; known: {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"from {','.join(WORKLOADS)} (default: all)"
    )
    parser.add_argument("--fleets", default=",".join(FLEETS), help="paper, drawn (default: both)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="default: all eight")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 (default 3)")
    parser.add_argument(
        "--max-client-samples",
        help="shrink every client's data to at most this many samples, for every workload (N) or per "
        "workload (shakespeare=250,cifar10=64); the table says so (default: none)",
    )
    parser.add_argument(
        "--slowdown",
        type=float,
        help="override the base compute slowdown (a live check: fits emulated long enough that this "
        "machine's contention does not overrun them; the table says so)",
    )
    parser.add_argument("--rounds", type=int, help="override the rounds (smoke tests only)")
    parser.add_argument(
        "--engine",
        choices=harness.ENGINES,
        default="sim",
        help="sim (default): virtual time; live: real processes, sockets and emulated devices on this "
        "machine, the paper fleet only (the live check of a simulated headline, at reduced size)",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="local", help="where fits train")
    parser.add_argument("--ray-address", help="--backend ray: a running Ray cluster")
    parser.add_argument("--secagg-cost", choices=tuple(SECAGG_COSTS), default="real")
    parser.add_argument("--runs", default="runs/paper", help="where the runs go (default runs/paper)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "paper"), help="the report")
    parser.add_argument("--report-only", action="store_true", help="run nothing: report the runs made so far")
    return parser


def load_pair(runs: Path, scenario: Scenario, strategies: Sequence[str]) -> tuple[list[RunRecord], list[str]]:
    """The finished runs of one workload and fleet under ``runs`` (the harness's layout), and the
    planned ones that are not (``strategy/seed N``)."""
    records, missing = [], []
    for plan in harness.plan_runs(scenario, strategies, runs, "virtual"):  # the harness's layout
        if (plan.run_dir / "summary.json").exists():
            records.append(load_run(plan.run_dir, strategy=plan.strategy, seed=plan.seed))
        else:
            missing.append(f"{plan.strategy}/seed {plan.seed}")
    return records, missing


def check_kept(
    pairs: Sequence[tuple[Scenario, Path]], strategies: Sequence[str], sim: harness.SimOptions
) -> None:
    """Every kept simulated run of every pair (scenario, runs folder) is the run it would make now:
    checked before the hours of runs of the first pair, not when the last pair starts."""
    for scenario, runs in pairs:
        harness.check_kept_runs(harness.plan_runs(scenario, strategies, runs, "virtual"), scenario, sim)


def make_runs(
    pairs: Sequence[tuple[Scenario, Path]],
    strategies: Sequence[str],
    *,
    sim: harness.SimOptions,
    engine: str = "sim",
    shaping: str = "virtual",
) -> None:
    """Each pair's runs that are not made yet, pair after pair (the harness's resume keeps the rest)."""
    for scenario, runs in pairs:
        runs.mkdir(parents=True, exist_ok=True)
        asyncio.run(
            harness.run_until_signalled(scenario, strategies, runs, shaping, engine, sim, resume=True)
        )


def complete_seeds(
    records: Sequence[RunRecord], strategies: Sequence[str]
) -> tuple[list[RunRecord], list[RunRecord]]:
    """``(used, unused)``: the records of the seeds that have a run of every strategy, and the rest.

    Strategies are compared on the same seeds only: a seed half made (a benchmark still running, or
    stopped) would otherwise give some rows a median over more seeds than others."""
    have: dict[int, set[str]] = {}
    for record in records:
        have.setdefault(record.seed, set()).add(record.strategy)
    whole = {seed for seed, names in have.items() if set(strategies) <= names}
    return [r for r in records if r.seed in whole], [r for r in records if r.seed not in whole]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "python -m benchmarks.paper " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        workloads = split_names(args.workloads, WORKLOADS, "workloads")
        fleets = split_names(args.fleets, FLEETS, "fleets")
        strategies = split_names(args.strategies, STRATEGIES, "strategies")
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
        caps = sample_caps(args.max_client_samples, workloads)
        if args.slowdown is not None and not args.slowdown >= 1:
            raise ConfigError(f"--slowdown must be >= 1, got {args.slowdown:g}")
        if args.engine == "live" and "drawn" in fleets:
            raise ConfigError("--engine live runs the paper fleet only (a drawn fleet has no live emulation)")
        shaping = harness.detect_shaping() if args.engine == "live" else "virtual"
        sim = harness.SimOptions(
            backend=args.backend, ray_address=args.ray_address, secagg_cost=args.secagg_cost
        )
        plan = [
            (
                w,
                f,
                pair_scenario(w, f, args.seeds, caps.get(w), args.rounds, args.slowdown),
                Path(args.runs) / f"{w}-{f}",
            )
            for w in workloads
            for f in fleets
        ]
        pair_runs = [(scenario, runs) for _, _, scenario, runs in plan]
        if args.engine == "sim":
            check_kept(pair_runs, strategies, sim)
        started = time.monotonic()
        if not args.report_only:
            make_runs(pair_runs, strategies, sim=sim, engine=args.engine, shaping=shaping)
    except ClipflError as exc:
        print(f"benchmarks.paper: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM
        print(
            "benchmarks.paper: interrupted; the finished runs are kept (run again to go on)", file=sys.stderr
        )
        return 130
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs, plotted = [], []
    for workload, fleet, scenario, runs in plan:
        kept, missing = load_pair(runs, scenario, strategies)
        records, unused = complete_seeds(kept, strategies)
        table = paper_table(scenario, records)
        pairs.append(
            {
                "workload": workload,
                "fleet": fleet,
                "scenario": scenario.name,
                "description": scenario.description,
                "clients": scenario.clients,
                "rounds": scenario.rounds,
                "secagg": scenario.secagg,
                "max_client_samples": caps.get(workload),
                "slowdown": scenario.devices.slowdown,
                "slowdown_override": args.slowdown,
                "rounds_override": args.rounds,
                "runs_planned": scenario.seeds * len(strategies),
                "runs_ok": len(kept),
                "missing": missing,
                "seeds_used": sorted({r.seed for r in records}),
                "runs_unused": [f"{r.strategy}/seed {r.seed}" for r in unused],
                "wall_seconds": sum(harness.recorded_wall_seconds(runs).values()),
                "table": table,
                "goal": goal_check(table),
            }
        )
        if records:
            plotted.append((workload, fleet, records, table))
    results = {
        "command": command.strip(),
        "seeds": list(range(args.seeds)),
        "strategies": strategies,
        "engine": args.engine,
        "backend": args.backend,
        "secagg_cost": args.secagg_cost,
        "cpu_count": os.cpu_count(),
        "wall_seconds": sum(p["wall_seconds"] for p in pairs),
        "this_invocation_seconds": time.monotonic() - started,
        "pairs": pairs,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    plots = write_plots(plotted, out, engine=args.engine)
    report = out / "report.md"
    report.write_text(render(results, plots), encoding="utf-8")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
