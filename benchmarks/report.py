"""Figures, ``results.json``, ``report.md`` and PNG plots from the run directories of a benchmark.

Only the run directory's files are read (``metrics.jsonl``, ``client-<id>.jsonl``, ``summary.json``),
so a report can be rebuilt from recorded runs: ``python -m benchmarks.report OUT_DIR`` re-reads
``OUT_DIR/results.json`` for the run list and writes the report again.

How the figures are made (DESIGN.md section 7; the machine is shared and noisy):

* **Warm-up rounds are not timed.** In round 1 every process starts torch at once, so its length is
  contention, not the strategy. ``mean_round_seconds`` averages the rounds after the warm-up, and
  ``time_to_target_seconds`` is counted from the end of the warm-up to the end of the first round whose
  test accuracy reaches the target (0 when the warm-up already reached it; null when no round did).
* **Ratios are per seed, then medianed**: ``speedup_* = 1 - T_strategy / T_none``,
  ``accuracy_delta_points = 100 (acc_strategy - acc_none)`` and ``round_time_vs_ideal =
  T_strategy / T_ideal`` are computed against the runs of the *same seed*, which ran side by side and so
  shared the machine's drift; only then is the median taken. Absolute figures are medians over seeds.
* **Emulation overruns** (a fit whose wall time already exceeded slowdown x CPU time) are counted per
  strategy over the timed rounds; a run where more than ``FLAG_OVERRUN_FRACTION`` of the slowed
  client-rounds overran is flagged at the top of the report, since its stragglers were slower than the
  scenario says.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BASELINE",
    "FLAG_OVERRUN_FRACTION",
    "IDEAL",
    "RunFigures",
    "RunRecord",
    "figures_rows",
    "load_run",
    "mean_keep_ratio",
    "render_markdown",
    "run_figures",
    "straggler_ids",
    "summarize",
    "write_plots",
    "write_report",
]

BASELINE = "none"
IDEAL = "ideal"
FLAG_OVERRUN_FRACTION = 0.05  # more than 1 slowed fit in 20 late: the emulation did not hold


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What one launcher run left behind: the server's rounds and each client's rounds."""

    strategy: str
    seed: int
    path: Path
    rounds: tuple[Mapping[str, Any], ...]
    clients: Mapping[int, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines only: a run killed mid-write leaves a torn last line, which is skipped."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n"):
                rows.append(json.loads(line))
    return rows


def load_run(path: str | Path, *, strategy: str, seed: int) -> RunRecord:
    """Read a run directory; a missing ``metrics.jsonl`` reads as a run with no completed round."""
    path = Path(path)
    metrics = path / "metrics.jsonl"
    rounds = _read_jsonl(metrics) if metrics.exists() else []
    clients: dict[int, tuple[Mapping[str, Any], ...]] = {}
    for file in sorted(path.glob("client-*.jsonl")):
        suffix = file.stem.removeprefix("client-")
        if suffix.isdigit():
            clients[int(suffix)] = tuple(_read_jsonl(file))
    return RunRecord(strategy=strategy, seed=seed, path=path, rounds=tuple(rounds), clients=clients)


# ------------------------------------------------------------------------------------- per run


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFigures:
    """The figures of one run (one strategy, one seed)."""

    strategy: str
    seed: int
    rounds: int
    mean_round_seconds: float | None
    time_to_target_seconds: float | None
    final_accuracy: float | None
    best_accuracy: float | None
    overruns: int  # in the timed rounds
    overruns_warmup: int
    overruns_stragglers: int  # of ``overruns``: those of the stragglers, whose fits set the round time
    slowed_client_rounds: int  # timed client-rounds with slowdown > 1: the overruns' denominator

    @property
    def overrun_fraction(self) -> float:
        return self.overruns / self.slowed_client_rounds if self.slowed_client_rounds else 0.0

    @property
    def flagged(self) -> bool:
        return self.overrun_fraction > FLAG_OVERRUN_FRACTION


def run_figures(
    run: RunRecord, *, target: float, warmup_rounds: int, stragglers: Sequence[int] | None = None
) -> RunFigures:
    """Figures of one run; see the module docstring for the warm-up and the target. ``stragglers``:
    the scenario's explicit straggler ids, if it names them (see :func:`straggler_ids`)."""
    rounds = sorted(run.rounds, key=lambda r: int(r["round"]))
    timed = [r for r in rounds if int(r["round"]) > warmup_rounds]
    warm = [r for r in rounds if int(r["round"]) <= warmup_rounds]
    clock_zero = float(warm[-1]["elapsed_seconds"]) if warm else 0.0
    reached = next((r for r in rounds if float(r["test_accuracy"]) >= target), None)
    time_to_target = None
    if reached is not None:
        time_to_target = max(0.0, float(reached["elapsed_seconds"]) - clock_zero)
    accuracies = [float(r["test_accuracy"]) for r in rounds]
    overruns = overruns_warmup = overruns_stragglers = slowed = 0
    slow_ids = set(straggler_ids(run, stragglers))
    for cid, rows in run.clients.items():
        for row in rows:
            late = bool(row.get("emulation_overrun", False))
            if int(row["round"]) <= warmup_rounds:
                overruns_warmup += late
            else:
                overruns += late
                overruns_stragglers += late and cid in slow_ids
                slowed += float(row.get("slowdown", 1.0)) > 1.0
    return RunFigures(
        strategy=run.strategy,
        seed=run.seed,
        rounds=len(rounds),
        mean_round_seconds=statistics.fmean(float(r["round_seconds"]) for r in timed) if timed else None,
        time_to_target_seconds=time_to_target,
        final_accuracy=accuracies[-1] if accuracies else None,
        best_accuracy=max(accuracies) if accuracies else None,
        overruns=overruns,
        overruns_warmup=overruns_warmup,
        overruns_stragglers=overruns_stragglers,
        slowed_client_rounds=slowed,
    )


def straggler_ids(run: RunRecord, explicit: Sequence[int] | None = None) -> list[int]:
    """The run's stragglers: ``explicit`` when the scenario names them, else the clients whose recorded
    compute slowdown exceeds the smallest one (the base), which is how the launcher's seeded choice
    shows in the records."""
    if explicit is not None:
        return sorted(explicit)
    peak = {
        cid: max((float(r.get("slowdown", 1.0)) for r in rows), default=1.0)
        for cid, rows in run.clients.items()
    }
    if not peak:
        return []
    base = min(peak.values())
    return sorted(cid for cid, s in peak.items() if s > base * (1 + 1e-9))


def mean_keep_ratio(run: RunRecord, ids: Iterable[int], rounds: Callable[[int], bool]) -> float | None:
    """The mean keep ratio of clients ``ids`` over the rounds that ``rounds`` accepts (None: no row)."""
    ratios = [
        float(row["keep_ratio"])
        for cid in ids
        for row in run.clients.get(cid, ())
        if rounds(int(row["round"])) and row.get("keep_ratio") is not None
    ]
    return statistics.fmean(ratios) if ratios else None


# ------------------------------------------------------------------------------- over seeds


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(present) if present else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den <= 0 else num / den


def summarize(figures: Sequence[RunFigures]) -> dict[str, dict[str, Any]]:
    """Per strategy: medians over seeds, and ratios against ``none`` and ``ideal`` of the same seed."""
    by_key = {(f.strategy, f.seed): f for f in figures}
    strategies = list(dict.fromkeys(f.strategy for f in figures))
    out: dict[str, dict[str, Any]] = {}
    for name in strategies:
        runs = [f for f in figures if f.strategy == name]
        speedup_round, speedup_target, delta, vs_ideal = [], [], [], []
        for f in runs:
            base = by_key.get((BASELINE, f.seed))
            ideal = by_key.get((IDEAL, f.seed))
            if base is not None:
                r = _ratio(f.mean_round_seconds, base.mean_round_seconds)
                speedup_round.append(None if r is None else 1 - r)
                t = _ratio(f.time_to_target_seconds, base.time_to_target_seconds)
                speedup_target.append(None if t is None else 1 - t)
                if f.final_accuracy is not None and base.final_accuracy is not None:
                    delta.append(100 * (f.final_accuracy - base.final_accuracy))
            if ideal is not None:
                vs_ideal.append(_ratio(f.mean_round_seconds, ideal.mean_round_seconds))
        slowed = sum(f.slowed_client_rounds for f in runs)
        out[name] = {
            "mean_round_seconds": _median(f.mean_round_seconds for f in runs),
            "time_to_target_seconds": _median(f.time_to_target_seconds for f in runs),
            "target_reached": sum(f.time_to_target_seconds is not None for f in runs),
            "final_accuracy": _median(f.final_accuracy for f in runs),
            "best_accuracy": _median(f.best_accuracy for f in runs),
            "speedup_round_time": _median(speedup_round),
            "speedup_time_to_target": _median(speedup_target),
            "accuracy_delta_points": _median(delta),
            "round_time_vs_ideal": _median(vs_ideal),
            "overruns": sum(f.overruns for f in runs),
            "overruns_warmup": sum(f.overruns_warmup for f in runs),
            "overruns_stragglers": sum(f.overruns_stragglers for f in runs),
            "overrun_fraction": (sum(f.overruns for f in runs) / slowed) if slowed else 0.0,
            "seeds": len(runs),
        }
    return out


# --------------------------------------------------------------------------------------- markdown


def _fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{suffix}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f} %"


def render_markdown(results: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    """``report.md`` from a ``results.json`` mapping (and the file names of the plots beside it)."""
    strategies: Mapping[str, Mapping[str, Any]] = results["strategies"]
    per_run: Sequence[Mapping[str, Any]] = results.get("runs", [])
    lines = [f"# Benchmark `{results['scenario']}`" + (" (quick size)" if results.get("quick") else ""), ""]
    flagged = [r for r in per_run if r.get("flagged")]
    total_overruns = sum(int(s.get("overruns", 0)) for s in strategies.values())
    if total_overruns:
        lines += [
            f"> **Emulation overruns: {total_overruns}** fits in timed rounds ran longer than their emulated "
            "time (the machine could not keep up), so those clients were slower than the scenario says."
            + (
                f" **{len(flagged)} run(s) are flagged** (over {FLAG_OVERRUN_FRACTION:.0%} of slowed fits "
                "late): " + ", ".join(f"{r['strategy']} seed {r['seed']}" for r in flagged) + "."
                if flagged
                else ""
            ),
            "",
        ]
    failed = [r for r in per_run if r.get("status") != "ok"]
    if failed:
        lines += [
            f"> **{len(failed)} run(s) failed** and are left out of the figures: "
            + ", ".join(
                f"{r['strategy']} seed {r['seed']} ({r.get('message') or r.get('status')})" for r in failed
            ),
            "",
        ]
    if results.get("interrupted"):
        lines += ["> **Interrupted**: the figures cover only the runs that finished.", ""]
    if results.get("description"):
        lines += [str(results["description"]), ""]
    devices = results.get("devices", {})
    stragglers = results.get("stragglers", {})
    shaping = results.get("shaping")
    shaping_text = {
        "tc": "tc: each client in its own network namespace, tbf caps on both ends of its veth link",
        "app": "app: a token bucket in each client's transport (no root or no namespaces)",
    }.get(str(shaping), str(shaping))
    base = float(devices.get("slowdown", 1.0))
    multiple = float(stragglers.get("slowdown", 1.0))
    clients, cores = results.get("clients"), results.get("cpu_count")
    recommended = (
        f"; at least {clients / cores:g} recommended here ({clients} clients on {cores} cores)"
        if clients and cores
        else ""
    )
    lines += [
        f"- Shaping: **{shaping_text}**"
        + ("" if results.get("network_caps") else " (this scenario sets no link caps)"),
        f"- Base compute slowdown: **{base:g}x** for every client" + recommended,
        "- Stragglers: "
        + (
            f"{stragglers.get('count', 0)}"
            + (
                f" ({'compute: ' if stragglers.get('network_ids') else ''}"
                f"clients {', '.join(map(str, stragglers['ids']))})"
                if stragglers.get("ids")
                else " (seeded)"
            )
            + f", compute {multiple:g}x the base ({base * multiple:g}x)"
            + (
                f"; link caps on clients {', '.join(map(str, stragglers['network_ids']))}"
                if stragglers.get("network_ids")
                else ""
            )
            + _caps(stragglers)
            if stragglers.get("count")
            else "none"
        )
        + f"; every client: {_caps(devices).removeprefix(', ') or 'no link caps'}",
        f"- Target accuracy {results.get('target_accuracy')}, {results.get('rounds')} rounds, "
        f"seeds {results.get('seeds')}; secure aggregation `{results.get('secagg')}` "
        "(fluid always runs without it)",
        f"- The first {results.get('warmup_rounds', 1)} round(s) are a warm-up and are not timed; "
        "ratios are per seed against `none` (and `ideal`) of the same seed, then medianed.",
        "",
        "## Figures (median over seeds)",
        "",
        "| strategy | mean round (s) | time to target (s) | final acc | best acc | speed-up round "
        "| speed-up to target | Δ acc (points) | round / ideal | overruns (stragglers') |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in strategies.items():
        reached = s.get("target_reached", 0)
        ttt = _fmt(s.get("time_to_target_seconds"), ".1f")
        mean, final = _fmt(s.get("mean_round_seconds")), _fmt(s.get("final_accuracy"), ".4f")
        if reached < s.get("seeds", 0):
            ttt += f" ({reached}/{s.get('seeds')} reached)"
        lines.append(
            f"| {name} | {mean} | {ttt} | {final} "
            f"| {_fmt(s.get('best_accuracy'), '.4f')} | {_pct(s.get('speedup_round_time'))} "
            f"| {_pct(s.get('speedup_time_to_target'))} | {_fmt(s.get('accuracy_delta_points'), '+.2f')} "
            f"| {_fmt(s.get('round_time_vs_ideal'), '.3f', 'x')} "
            f"| {s.get('overruns', 0)} ({s.get('overruns_stragglers', 0)}) |"
        )
    lines += [
        "",
        "## Runs",
        "",
        "| seed | strategy | status | rounds | mean round (s) | time to target (s) | final acc | overruns "
        "| wall (s) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in per_run:
        lines.append(
            f"| {r['seed']} | {r['strategy']} | {r.get('status')}{' ⚑' if r.get('flagged') else ''} "
            f"| {r.get('rounds', 0)} | {_fmt(r.get('mean_round_seconds'))} "
            f"| {_fmt(r.get('time_to_target_seconds'), '.1f')} | {_fmt(r.get('final_accuracy'), '.4f')} "
            f"| {r.get('overruns', 0)} | {_fmt(r.get('wall_seconds'), '.1f')} |"
        )
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def _caps(profile: Mapping[str, Any]) -> str:
    parts = [
        f"{k.removesuffix('_rate')} {profile[k]}" for k in ("upload_rate", "download_rate") if profile.get(k)
    ]
    return ", " + " / ".join(parts) if parts else ""


# ------------------------------------------------------------------------------------------ plots


def _median_by_round(runs: Sequence[RunRecord], value: Any) -> tuple[list[int], list[float]]:
    """Per round: the median over the runs (seeds) of ``value(run, round_row)`` where defined."""
    per_round: dict[int, list[float]] = {}
    for run in runs:
        for row in run.rounds:
            v = value(run, row)
            if v is not None:
                per_round.setdefault(int(row["round"]), []).append(float(v))
    xs = sorted(per_round)
    return xs, [statistics.median(per_round[x]) for x in xs]


def write_plots(
    records: Sequence[RunRecord], out_dir: Path, *, target: float, explicit_stragglers: Sequence[int] | None
) -> list[Path]:
    """Three PNGs: accuracy against wall time, round time per round, the stragglers' keep ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(dict.fromkeys(r.strategy for r in records))
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(strategies)}
    dashes = {
        name: ("-", "--", "-.", ":")[i % 4] for i, name in enumerate(strategies)
    }  # overlaps stay visible
    paths = []

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in strategies:
        for i, run in enumerate(r for r in records if r.strategy == name):
            times = [float(row["elapsed_seconds"]) for row in run.rounds]
            accuracies = [float(row["test_accuracy"]) for row in run.rounds]
            label = name if i == 0 else None
            ax.plot(
                times, accuracies, color=colors[name], ls=dashes[name], alpha=0.85, marker=".", label=label
            )
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set(
        xlabel="wall time since training started (s)", ylabel="test accuracy", title="Accuracy against time"
    )
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "accuracy_vs_time.png"))

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in strategies:
        xs, ys = _median_by_round(
            [r for r in records if r.strategy == name], lambda _run, row: row.get("round_seconds")
        )
        ax.plot(xs, ys, color=colors[name], ls=dashes[name], marker="o", label=name)
    ax.set(xlabel="round", ylabel="round time (s), median over seeds", title="Round time per round")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "round_time.png"))

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in strategies:
        if name == IDEAL:
            continue
        runs = [r for r in records if r.strategy == name]

        def keep(run: RunRecord, row: Mapping[str, Any]) -> float | None:
            ids = straggler_ids(run, explicit_stragglers)
            return mean_keep_ratio(run, ids, lambda number: number == int(row["round"]))

        xs, ys = _median_by_round(runs, keep)
        ax.plot(xs, ys, color=colors[name], ls=dashes[name], marker="o", label=name)
    ax.set(
        xlabel="round",
        ylabel="stragglers' mean keep ratio",
        title="Keep ratio of the stragglers' sub-models",
        ylim=(0, 1.05),
    )
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "straggler_keep_ratio.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ all at once


def write_report(
    results: Mapping[str, Any], records: Sequence[RunRecord], out_dir: str | Path, *, plots: bool = True
) -> Path:
    """Write ``results.json``, the PNG plots (when there are runs) and ``report.md``; return the report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "results.json", results)
    stragglers = results.get("stragglers", {})
    written = (
        write_plots(
            records,
            out,
            target=float(results["target_accuracy"]),
            explicit_stragglers=(
                sorted(set(stragglers["ids"]) | set(stragglers.get("network_ids") or ()))
                if stragglers.get("ids")
                else None
            ),
        )
        if plots and records
        else []
    )
    report = out / "report.md"
    report.write_text(render_markdown(results, [p.name for p in written]), encoding="utf-8")
    return report


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def figures_rows(figures: Sequence[RunFigures]) -> list[dict[str, Any]]:
    """Per-run figures as JSON rows (with the derived overrun fraction and flag)."""
    return [{**asdict(f), "overrun_fraction": f.overrun_fraction, "flagged": f.flagged} for f in figures]


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild ``report.md`` and the plots of a finished benchmark from its ``results.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m benchmarks.report OUT_DIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    records = [
        load_run(out / r["run_dir"], strategy=r["strategy"], seed=int(r["seed"]))
        for r in results.get("runs", [])
        if r.get("status") == "ok"
    ]
    print(write_report(results, records, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
