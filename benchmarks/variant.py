"""A change to the method measured against the paper's table (issue 12: keep what improves the table,
record what did not, with figures).

    python -m benchmarks.variant --set min_keep_ratio=0.4 --workloads femnist --seeds 3 \\
        --secagg-cost model --base-runs runs/paper --runs runs/variant-floor --out runs/variant-floor

``--set KEY=VALUE`` changes one setting of the paper scenarios among those that act only where a
client trains a sub-model (``CHANGEABLE``): the pruning strategies are remade under it into ``--runs``,
and the strategies that never prune (``none``, ``deadline``, the ideal, which set the baseline and the
target) are the very runs the change would make again, so both tables share them from ``--base-runs``,
the paper table's own runs. This command makes only the changed runs: the base runs are
``benchmarks.paper``'s, made with the same ``--seeds``, ``--max-client-samples`` and ``--secagg-cost``
(a kept base run made with other settings is refused; a pair with no complete seed of base runs is
refused before anything runs). ``--strategies`` remakes some of the pruning strategies first; a
decision waits for all of them. Both tables are ``benchmarks.paper.paper_table`` over the seeds where
both sides have every run, and both are checked against the goal (``benchmarks.paper.goal_check``).

**The rule** (``decide``): the change is adopted when every pruning strategy was remade under it and,
on every pair measured, it meets every part of the goal that the base meets and ``clip`` reaches the
target no later (the median over the seeds of its time to target, a seed that never reached it
counting as infinitely late), and when over all pairs it meets at least one part more; otherwise the
base stays. The clause on time keeps a change that is slower to the target, CLIP's point, from being
adopted for an accuracy part crossed by a fraction of a point. Either way the report holds both tables.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import statistics
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.paper import (
    FLEETS,
    PRUNING,
    STRATEGIES,
    WORKLOADS,
    check_kept,
    complete_seeds,
    fmt_spread,
    goal_check,
    goal_figure,
    load_pair,
    make_runs,
    pair_scenario,
    paper_table,
    sample_caps,
    split_names,
)
from benchmarks.scenario import Scenario
from benchmarks.simulated import run_config_of
from clipfl.errors import ClipflError, ConfigError
from clipfl.sim import BACKENDS, SECAGG_COSTS

__all__ = ["CHANGEABLE", "Change", "Compared", "Decision", "apply_change", "decide", "main", "parse_change"]

CHANGEABLE = ("min_keep_ratio", "aggregation", "secagg_min_coverage")
"""The settings a variant may change: each acts only where a client trains a sub-model (the keep-ratio
floor, how pruned units are averaged, what a pruning client withholds from the secure sum), so the runs
of the strategies that never prune are the same runs under it (``tests/test_variant.py`` simulates
them both ways). Any other setting would move the baseline and the target, and needs a table of its
own (``benchmarks.paper``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One setting and its new value."""

    key: str
    value: str | int | float

    @property
    def label(self) -> str:
        return f"{self.key}={self.value}"


def parse_change(text: str) -> Change:
    """``KEY=VALUE``, the value read as a TOML number, else as a bare word (``aggregation=zero-pad``)."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise ConfigError(f"--set: {text!r} is not KEY=VALUE (e.g. min_keep_ratio=0.4)")
    if key not in CHANGEABLE:
        raise ConfigError(
            f"--set: {key!r} is not a setting a variant may change (it would move the runs that never "
            f"prune, the baseline and the target); give one of {', '.join(CHANGEABLE)}"
        )
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"--set: {key}'s value must be a number or a word, got {raw!r}")
    return Change(key, value)


def apply_change(scenario: Scenario, change: Change) -> Scenario:
    """``scenario`` with the change, validated as the launcher would (``run_config_of``); a change that
    changes nothing is refused (its table would be the base's)."""
    federation = dict(scenario.federation)
    federation[change.key] = change.value
    changed = dataclasses.replace(
        scenario,
        name=f"{scenario.name}-{change.label}",
        description=f"{scenario.description} Changed: {change.label}.",
        federation=tuple(federation.items()),
    )
    try:
        before, after = run_config_of(scenario, "clip", 0), run_config_of(changed, "clip", 0)
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"--set {change.label}: {exc}") from None
    if before == after:
        raise ConfigError(f"--set {change.label}: the paper scenario already runs with it; nothing changes")
    return changed


@dataclasses.dataclass(frozen=True, slots=True)
class Compared:
    """One workload and fleet, as the table stands and with the change, on the same seeds."""

    pair: str
    base: Mapping[str, Any]
    """``paper_table`` of the base runs."""
    variant: Mapping[str, Any]
    """``paper_table`` of the changed runs and the shared ones."""
    remade: tuple[str, ...]
    """The strategies remade under the change."""
    base_goal: Mapping[str, Any]
    variant_goal: Mapping[str, Any]

    @classmethod
    def of(
        cls, pair: str, base: Mapping[str, Any], variant: Mapping[str, Any], remade: Sequence[str]
    ) -> Compared:
        """The two tables and their goals (``goal_check``)."""
        return cls(pair, base, variant, tuple(remade), goal_check(base), goal_check(variant))


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The rule's verdict: ``adopt`` True or False, None while the comparison is incomplete."""

    adopt: bool | None
    reason: str


def decide(compared: Sequence[Compared]) -> Decision:
    """The module docstring's rule over every pair measured."""
    if not compared:
        return Decision(None, "no pair measured")
    unmade = [s for s in PRUNING if any(s not in c.remade for c in compared)]
    if unmade:
        return Decision(None, f"not decided: {', '.join(unmade)} not remade under the change yet")
    goals = [(c.pair, c.base_goal, c.variant_goal) for c in compared]
    incomplete = [pair for pair, base, variant in goals if not (base["complete"] and variant["complete"])]
    if incomplete:
        return Decision(None, f"not decided: no complete goal yet for {', '.join(incomplete)}")
    lost = [
        f"{pair}: {part}"
        for pair, base, variant in goals
        for part, met in base["met"].items()
        if met and not variant["met"].get(part, False)
    ]
    later = [
        f"{c.pair} ({_clip_time(c.base):.0f} s -> {_clip_time(c.variant):.0f} s)"
        for c in compared
        if _clip_time(c.variant) > _clip_time(c.base)
    ]
    gained = [
        f"{pair}: {part}"
        for pair, base, variant in goals
        for part, met in variant["met"].items()
        if met and not base["met"].get(part, False)
    ]
    if lost:
        return Decision(False, "the base stays: the change loses " + "; ".join(lost))
    if later:
        return Decision(False, "the base stays: clip reaches the target later on " + "; ".join(later))
    if not gained:
        return Decision(False, "the base stays: the change meets no part of the goal that the base does not")
    return Decision(True, "adopted: the change also meets " + "; ".join(gained) + ", and loses nothing")


def _clip_time(table: Mapping[str, Any]) -> float:
    """``clip``'s median time to target over its seeds, a seed that never reached it infinitely late."""
    seeds = table["strategies"]["clip"]["per_seed"].values()
    return statistics.median(math.inf if r["time_to_target"] is None else r["time_to_target"] for r in seeds)


# ------------------------------------------------------------------------------------------ report

_COLUMNS = (
    ("time to target (s)", "time_to_target_seconds", ".0f", 1.0, ""),
    ("faster than none", "faster_than_none", ".1f", 100.0, " %"),
    ("delta (points)", "accuracy_delta_points", "+.2f", 1.0, ""),
    ("round time / ideal", "round_time_vs_ideal", ".2f", 1.0, ""),
    ("stragglers' keep ratio", "straggler_keep_ratio", ".2f", 1.0, ""),
    ("stragglers' own accuracy", "straggler_own_accuracy", ".4f", 1.0, ""),
)


def render(results: Mapping[str, Any], plots: Sequence[str]) -> str:
    change = results["change"]
    lines = [
        f"# The paper's table with {change}, against the table as it stands",
        "",
        f"Command: `{results['command']}`. Base runs: `{results['base_runs']}`. Remade under the change: "
        f"{', '.join(results['strategies'])}; shared with the base: {', '.join(results['shared'])}. "
        "Medians over the seeds where both sides have every run, [min, max] in brackets; 'reached': "
        "seeds that reached the target; every figure as in `benchmarks/paper.py`.",
        "",
        f"**Decision** (the rule in `benchmarks/variant.py`): {results['decision']}",
        "",
    ]
    for pair in results["pairs"]:
        lines += _pair_lines(pair, results["strategies"], change)
    lines += [f"![{p}]({p})" for p in plots]
    lines += ["", f"Wall time of the changed runs: {results['wall_seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _pair_lines(pair: Mapping[str, Any], strategies: Sequence[str], change: str) -> list[str]:
    lines = [
        f"## {pair['workload']}, {pair['fleet']} fleet",
        "",
        f"Seeds used: {pair['seeds_used'] or 'none yet'}"
        + (f"; missing: {', '.join(pair['missing'])}" if pair["missing"] else "")
        + ".",
        "",
    ]
    if pair["seeds_used"]:
        lines += [
            "| strategy | | " + " | ".join(c[0] for c in _COLUMNS) + " | reached |",
            "|---|---|" + "---|" * (len(_COLUMNS) + 1),
        ]
    for name in strategies:
        for side, label in (("base", "as it stands"), ("variant", change)):
            row = pair[side]["strategies"].get(name)
            if row is not None:
                cells = " | ".join(
                    fmt_spread(row[k], spec, scale, suf) for _, k, spec, scale, suf in _COLUMNS
                )
                reached = f"{row['target_reached']}/{len(row['seeds'])}"
                lines.append(f"| {name if side == 'base' else ''} | {label} | {cells} | {reached} |")
    for side, label in (("base", "as it stands"), ("variant", change)):
        goal = pair[f"{side}_goal"]
        if goal.get("complete"):
            parts = "; ".join(
                f"{part}: {'met' if met else 'NOT met'} ({goal_figure(part, goal['figures'][part])})"
                for part, met in goal["met"].items()
            )
            lines += ["", f"Goal, {label}: {parts}."]
    return [*lines, ""]


def write_plot(results: Mapping[str, Any], out: Path) -> list[str]:
    """Time to target per remade strategy, as it stands and with the change: medians, min-max bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [p for p in results["pairs"] if p["seeds_used"]]
    if not pairs:
        return []
    names = list(results["strategies"])
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4.5), squeeze=False)
    for ax, pair in zip(axes[0], pairs, strict=True):
        for offset, (side, label) in enumerate((("base", "as it stands"), ("variant", results["change"]))):
            spreads = [pair[side]["strategies"][n]["time_to_target_seconds"] for n in names]
            shown = [(i, s) for i, s in enumerate(spreads) if s["median"] is not None]
            ax.bar(
                [i + 0.4 * offset - 0.2 for i, _ in shown],
                [s["median"] for _, s in shown],
                width=0.4,
                yerr=[[s["median"] - s["min"] for _, s in shown], [s["max"] - s["median"] for _, s in shown]],
                capsize=3,
                label=label,
            )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set(ylabel="time to target (virtual s)", title=f"{pair['workload']}, {pair['fleet']} fleet")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize="x-small")
    fig.suptitle(f"Time to target with {results['change']}")
    fig.tight_layout()
    fig.savefig(out / "time_to_target.png", dpi=90)
    plt.close(fig)
    return ["time_to_target.png"]


# --------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.variant", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--set", required=True, dest="change", help=f"KEY=VALUE, KEY from {', '.join(CHANGEABLE)}"
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="default: all three")
    parser.add_argument("--fleets", default=",".join(FLEETS), help="paper, drawn (default: both)")
    parser.add_argument(
        "--strategies",
        default=",".join(PRUNING),
        help=f"the pruning strategies to remake now, clip among them (default: all, {','.join(PRUNING)})",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 (default 3)")
    parser.add_argument("--max-client-samples", help="as the base runs were made (benchmarks.paper's flag)")
    parser.add_argument("--rounds", type=int, help="as the base runs were made (smoke tests only)")
    parser.add_argument("--backend", choices=BACKENDS, default="local", help="where fits train")
    parser.add_argument("--ray-address", help="--backend ray: a running Ray cluster")
    parser.add_argument("--secagg-cost", choices=tuple(SECAGG_COSTS), default="real")
    parser.add_argument(
        "--base-runs", default="runs/paper", help="benchmarks.paper's --runs (default runs/paper)"
    )
    parser.add_argument("--runs", required=True, help="where the changed runs go")
    parser.add_argument("--out", required=True, help="where the report goes")
    parser.add_argument("--report-only", action="store_true", help="run nothing: report the runs made so far")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "python -m benchmarks.variant " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        change = parse_change(args.change)
        workloads = split_names(args.workloads, WORKLOADS, "workloads")
        fleets = split_names(args.fleets, FLEETS, "fleets")
        strategies = split_names(args.strategies, PRUNING, "strategies")
        if "clip" not in strategies:
            raise ConfigError("--strategies: clip must be among them (the goal is clip's)")
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
        caps = sample_caps(args.max_client_samples, workloads)
        if Path(args.runs).resolve() == Path(args.base_runs).resolve():
            raise ConfigError("--runs is --base-runs: the changed runs would replace the base's")
        sim = harness.SimOptions(
            backend=args.backend, ray_address=args.ray_address, secagg_cost=args.secagg_cost
        )
        plan = []
        for w in workloads:
            for f in fleets:
                base = pair_scenario(w, f, args.seeds, caps.get(w), args.rounds)
                runs = Path(args.runs) / f"{w}-{f}"
                plan.append((w, f, base, Path(args.base_runs) / runs.name, apply_change(base, change), runs))
        check_kept([(base, base_runs) for _, _, base, base_runs, _, _ in plan], STRATEGIES, sim)
        check_kept([(changed, runs) for *_, changed, runs in plan], strategies, sim)
        for w, f, base, base_runs, _, _ in plan:
            if not complete_seeds(load_pair(base_runs, base, STRATEGIES)[0], STRATEGIES)[0]:
                raise ConfigError(
                    f"{base_runs} holds no seed of {w}/{f} with every strategy's run: make the base first "
                    "(python -m benchmarks.paper with the same --seeds, --max-client-samples, --secagg-cost)"
                )
        if not args.report_only:
            make_runs([(changed, runs) for *_, changed, runs in plan], strategies, sim=sim)
    except ClipflError as exc:
        print(f"benchmarks.variant: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM
        print("benchmarks.variant: interrupted; finished runs are kept (run again to go on)", file=sys.stderr)
        return 130
    shared = [s for s in STRATEGIES if s not in strategies]
    pairs, compared = [], []
    for workload, fleet, base, base_runs, changed, runs in plan:
        base_records, base_missing = load_pair(base_runs, base, STRATEGIES)
        variant_records, variant_missing = load_pair(runs, changed, strategies)
        seeds = {r.seed for r in complete_seeds(base_records, STRATEGIES)[0]} & {
            r.seed for r in complete_seeds(variant_records, strategies)[0]
        }
        shared_records = [r for r in base_records if r.strategy in shared]
        one = Compared.of(
            f"{workload}/{fleet}",
            paper_table(base, [r for r in base_records if r.seed in seeds]),
            paper_table(changed, [r for r in (*shared_records, *variant_records) if r.seed in seeds]),
            strategies,
        )
        compared.append(one)
        pairs.append(
            {
                "workload": workload,
                "fleet": fleet,
                "seeds_used": sorted(seeds),
                "missing": [f"as it stands: {m}" for m in base_missing]
                + [f"{change.label}: {m}" for m in variant_missing],
                "base": one.base,
                "variant": one.variant,
                "base_goal": one.base_goal,
                "variant_goal": one.variant_goal,
            }
        )
    decision = decide(compared)
    results = {
        "command": command.strip(),
        "change": change.label,
        "base_runs": args.base_runs,
        "strategies": strategies,
        "shared": shared,
        "seeds": list(range(args.seeds)),
        "decision": decision.reason,
        "adopt": decision.adopt,
        "wall_seconds": sum(sum(harness.recorded_wall_seconds(p[-1]).values()) for p in plan),
        "pairs": pairs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    report = out / "report.md"
    report.write_text(render(results, write_plot(results, out)), encoding="utf-8")
    print(f"{decision.reason}\nreport: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
