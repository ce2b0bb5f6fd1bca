"""The benchmark harness: every strategy of a scenario as real federations, side by side, per seed.

    python -m benchmarks.harness --scenario digits-quick
    python -m benchmarks.harness --scenario paper-cifar10 --quick --seeds 3 --out runs/cifar
    python -m benchmarks.harness --scenario my.toml --strategies none,clip,ideal --rounds 4
    python -m benchmarks.harness --scenario digits-quick --engine live   # real processes and sockets

Two engines run the same scenario file and write the same ``results.json``, ``report.md`` and plots:

* ``--engine sim`` (the default) simulates each run in virtual time (``clipfl.simulate``): the live
  round engine decides everything, real training and real secure aggregation run, and times come from
  device profiles (this machine's measured speed over each client's slowdown, the scenario's link
  caps) and a measured cost model, so the figures are the scenario's, not this machine's load, and a
  rerun gives a byte-identical ``results.json``. Paper-size scenarios take minutes instead of days.
* ``--engine live`` runs each as one ``python -m clipfl.launch`` process (server and clients, on
  loopback), so the harness knows the federation only through the launcher's command line and the run
  directory it writes; it never imports server or client code (DESIGN.md section 1, the benchmarks
  layer). It is the simulator's check on small scenarios.

Why it runs the way it does:

* **Interleaved per seed, in a rotated order.** Seed 0 runs every strategy, then seed 1 does, and so
  on, each seed starting one strategy further along. Strategies compared within a seed thus ran
  minutes apart on the same shared machine, and no strategy is always the first (or last) of a batch;
  the figures are per-seed ratios, then medians (``benchmarks.report``).
* **One run at a time.** The emulated slowdowns hold only while the machine can honour every client's
  emulated fit time (DESIGN.md section 6); two federations at once would break that for both.
* **The ideal** is the same federation with the stragglers made as fast as the others: no straggler
  flags at all, mitigation ``none``. ``fluid`` runs with ``--secagg off``: it prunes on the server,
  which must see each update, so it is the non-private reference.
* **Shaping** is ``tc`` (namespaces and tbf caps, built by the launcher) when this process is root and
  may create namespaces, else ``app`` (a token bucket in the client transport); ``--shaping`` forces
  one. A scenario without link caps passes no shaping flag at all.
* **Every run is bounded and every process stopped.** The launcher runs in its own process group; on
  a run's timeout, on Ctrl-C or on SIGTERM it first gets SIGINT (it then stops its clients and tears
  its network bench down), and after a grace period the whole group gets SIGKILL, followed, under tc,
  by :func:`clipfl.shaping.cleanup_stale` for whatever a killed bench left behind. A run that timed out
  or failed is recorded as such and left out of the figures; the report lists it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from benchmarks.report import (
    IDEAL,
    RunFigures,
    RunRecord,
    figures_rows,
    load_run,
    run_figures,
    summarize,
    write_report,
)
from benchmarks.scenario import SECAGG_MODES, STRATEGIES, Scenario, load_scenario
from benchmarks.simulated import SIM_SHAPING, kept_run_differs, simulate_run
from clipfl import load_cost_model
from clipfl.errors import ClipflError, ConfigError
from clipfl.rundir import atomic_write_bytes
from clipfl.shaping import cleanup_stale, require_root_netns
from clipfl.sim import BACKENDS, SECAGG_COSTS, FitBackend, fit_backend
from clipfl.trainer import DEVICES, check_device

__all__ = [
    "ALL_STRATEGIES",
    "ENGINES",
    "RunOutcome",
    "RunPlan",
    "build_parser",
    "check_kept_runs",
    "detect_shaping",
    "launcher_argv",
    "main",
    "plan_runs",
    "run_benchmark",
    "run_one",
]

ALL_STRATEGIES = (*STRATEGIES, IDEAL)
ENGINES = ("sim", "live")
REPO = Path(__file__).resolve().parents[1]
_STOP_GRACE = 30.0  # seconds for the launcher to stop its clients and tear a tc bench down after SIGINT

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """One launcher run: which strategy, which seed, where it writes, the exact command."""

    index: int  # 1-based position in the whole benchmark
    seed: int
    strategy: str
    run_dir: Path
    argv: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutcome:
    plan: RunPlan
    status: str  # "ok", "failed" or "timeout"
    wall_seconds: float
    message: str = ""


def detect_shaping() -> str:
    """``"tc"`` when this process can build network namespaces, else ``"app"``."""
    try:
        require_root_netns()
    except ConfigError:
        return "app"
    return "tc"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def launcher_argv(scenario: Scenario, strategy: str, seed: int, run_dir: Path, shaping: str) -> list[str]:
    """The ``python -m clipfl.launch`` command of one run."""
    if strategy not in ALL_STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; known: {', '.join(ALL_STRATEGIES)}")
    argv = [sys.executable, "-m", "clipfl.launch", "--run-dir", str(run_dir), "--seed", str(seed)]
    argv += ["--target-accuracy", f"{scenario.target_accuracy:g}"]
    for key, value in scenario.federation:
        if isinstance(value, bool):  # a switch of the launcher (argparse.BooleanOptionalAction)
            argv.append(_flag(key) if value else "--no-" + _flag(key)[2:])
        else:
            argv += [_flag(key), str(value)]
    mitigation = "none" if strategy == IDEAL else strategy
    secagg = "off" if strategy == "fluid" else scenario.secagg
    argv += ["--mitigation", mitigation, "--secagg", secagg, "--slowdown", f"{scenario.devices.slowdown:g}"]
    for key in ("upload_rate", "download_rate"):
        value = getattr(scenario.devices, key)
        if value is not None:
            argv += [_flag(key), value]
    s = scenario.stragglers
    if strategy != IDEAL and s.count:
        if s.ids is not None:
            argv += ["--straggler-ids", ",".join(map(str, s.ids))]
        else:
            argv += ["--stragglers", str(s.count)]
        if s.network_ids is not None:
            argv += ["--network-straggler-ids", ",".join(map(str, s.network_ids))]
        if s.slowdown != 1.0:
            argv += ["--straggler-slowdown", f"{s.slowdown:g}"]
        for key in ("upload_rate", "download_rate"):
            value = getattr(s, key)
            if value is not None:
                argv += [_flag("straggler_" + key), value]
    if scenario.has_network_caps:
        argv += ["--shape", shaping]
    return argv


def plan_runs(scenario: Scenario, strategies: Sequence[str], out_dir: Path, shaping: str) -> list[RunPlan]:
    """Every run of the benchmark in execution order: seeds in turn, strategies rotated per seed."""
    plans: list[RunPlan] = []
    for seed in range(scenario.seeds):
        shift = seed % len(strategies)
        for strategy in (*strategies[shift:], *strategies[:shift]):
            run_dir = out_dir / "runs" / f"seed-{seed}" / strategy
            plans.append(
                RunPlan(
                    index=len(plans) + 1,
                    seed=seed,
                    strategy=strategy,
                    run_dir=run_dir,
                    argv=tuple(launcher_argv(scenario, strategy, seed, run_dir, shaping)),
                )
            )
    return plans


# ------------------------------------------------------------------------------------------ one run


def _open_log(path: Path) -> IO[str]:
    return open(path, "w", encoding="utf-8")  # closed by the caller's with statement


async def run_one(
    plan: RunPlan, *, time_limit: float, shaping: str, say: Say, stop_grace: float = _STOP_GRACE
) -> RunOutcome:
    """Run one launcher process to its end, relaying its round lines; kill it after ``time_limit`` s.

    However it ends (exit, timeout, cancellation), no process of the run is left: see :func:`_stop`.
    """
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *plan.argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group: one signal reaches the clients too
        env=env,
    )
    tail: deque[str] = deque(maxlen=3)
    status, message = "failed", ""
    try:
        with _open_log(plan.run_dir / "launcher.log") as log:
            async with asyncio.timeout(time_limit):
                assert proc.stdout is not None
                while line := await proc.stdout.readline():
                    text = line.decode(errors="replace").rstrip()
                    log.write(text + "\n")
                    log.flush()
                    tail.append(text)
                    if text.startswith("round"):
                        say(f"    {text}")
                code = await proc.wait()
        if code == 0:
            status = "ok"
        else:
            message = f"launcher exited with code {code}" + (f": {tail[-1]}" if tail else "")
    except TimeoutError:
        status, message = "timeout", f"killed after {time_limit:g} s"
    finally:
        if proc.returncode is None:
            await _stop(proc, shaping, stop_grace)
    return RunOutcome(plan=plan, status=status, wall_seconds=time.monotonic() - started, message=message)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimOptions:
    """How ``--engine sim`` runs: the cost model, where fits train, whether the cryptography runs
    (none of the last three changes results)."""

    cost_model: str | None = None
    backend: str = "local"
    ray_address: str | None = None
    device: str = "cpu"
    secagg_cost: str = "real"


async def run_simulated(
    plan: RunPlan, scenario: Scenario, options: SimOptions, backend: FitBackend | None = None
) -> RunOutcome:
    """Simulate one run in a worker thread, the event loop free for Ctrl-C: cancelled, it asks the
    simulation to stop at its next round, waits for that, and re-raises (the run left unfinished, to
    be made again by a resumed benchmark). ``backend``: one the caller holds for every run."""
    started = time.monotonic()
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    try:
        costs = load_cost_model(options.cost_model)
        work = asyncio.ensure_future(
            asyncio.to_thread(
                simulate_run,
                scenario,
                plan.strategy,
                plan.seed,
                plan.run_dir,
                costs,
                backend=backend or options.backend,
                device=options.device,
                secagg_cost=options.secagg_cost,
                stop=stop.is_set,
            )
        )
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([work])  # one simulated round at most
            if not work.cancelled():
                work.exception()  # retrieved: SimulationStopped, or what ended the run meanwhile
            raise
    except ClipflError as exc:
        seconds = time.monotonic() - started
        return RunOutcome(plan=plan, status="failed", wall_seconds=seconds, message=str(exc))
    return RunOutcome(plan=plan, status="ok", wall_seconds=time.monotonic() - started)


async def _stop(proc: asyncio.subprocess.Process, shaping: str, grace: float) -> None:
    """SIGINT to the launcher (it stops its own processes and its bench), then SIGKILL to its group.

    The group kill comes either way: it reaches a launcher that did not stop within ``grace`` and any
    child that outlived its launcher. The group is the one ``run_one`` created for this launcher.
    """
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
    killed_leader = proc.returncode is None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
    if killed_leader and shaping == "tc":
        await asyncio.to_thread(cleanup_stale)  # the bench of a killed launcher, if it built one


# ---------------------------------------------------------------------------------------- benchmark


def _figures(scenario: Scenario, record: RunRecord) -> RunFigures:
    return run_figures(
        record,
        target=scenario.target_accuracy,
        warmup_rounds=scenario.warmup_rounds,
        stragglers=() if record.strategy == IDEAL else scenario.stragglers.all_ids,  # the ideal has none
    )


def _describe(outcome: RunOutcome, figures: RunFigures | None) -> str:
    p = outcome.plan
    if outcome.status != "ok" or figures is None:
        return f"[{p.index}] seed {p.seed} {p.strategy}: {outcome.status.upper()} ({outcome.message})"
    mean = figures.mean_round_seconds
    return (
        f"[{p.index}] seed {p.seed} {p.strategy}: done in {outcome.wall_seconds:.0f} s, "
        f"final accuracy {figures.final_accuracy:.4f}, mean round "
        + ("-" if mean is None else f"{mean:.2f} s")
        + (
            f", {figures.overruns} overruns ({figures.overruns_stragglers} stragglers')"
            if figures.overruns
            else ""
        )
    )


def _results(
    scenario: Scenario,
    shaping: str,
    outcomes: Sequence[RunOutcome],
    out_dir: Path,
    *,
    interrupted: bool,
    engine: str = "live",
    cost_model: str | None = None,
) -> tuple[dict[str, Any], list[RunRecord]]:
    records: list[RunRecord] = []
    figures: list[RunFigures] = []
    runs: list[dict[str, Any]] = []
    for o in outcomes:
        row: dict[str, Any] = {
            "seed": o.plan.seed,
            "strategy": o.plan.strategy,
            "status": o.status,
            "message": o.message,
            "run_dir": str(o.plan.run_dir.relative_to(out_dir)),
            # a simulation's results hold no real time (they are byte-reproducible): timing.json has it
            "wall_seconds": None if engine == "sim" else o.wall_seconds,
        }
        if o.status == "ok":
            record = load_run(o.plan.run_dir, strategy=o.plan.strategy, seed=o.plan.seed)
            fig = _figures(scenario, record)
            records.append(record)
            figures.append(fig)
            row.update(figures_rows([fig])[0])
        runs.append(row)
    stragglers = asdict(scenario.stragglers)
    stragglers["ids"] = None if scenario.stragglers.ids is None else list(scenario.stragglers.ids)
    stragglers["network_ids"] = (
        None if scenario.stragglers.network_ids is None else list(scenario.stragglers.network_ids)
    )
    results = {
        "scenario": scenario.name,
        "engine": engine,
        "quick": scenario.quick,
        "description": scenario.description,
        "seeds": sorted({o.plan.seed for o in outcomes}),
        "shaping": SIM_SHAPING if engine == "sim" else shaping,
        "network_caps": scenario.has_network_caps,
        "clients": scenario.clients,
        "rounds": scenario.rounds,
        "cpu_count": os.cpu_count(),
        "target_accuracy": scenario.target_accuracy,
        "warmup_rounds": scenario.warmup_rounds,
        "secagg": scenario.secagg,
        "devices": asdict(scenario.devices),
        "stragglers": stragglers,
        "interrupted": interrupted,
        "strategies": summarize(figures),
        "runs": runs,
    }
    if engine == "sim":
        results["cost_model"] = load_cost_model(cost_model).to_json()
    return results, records


def check_kept_runs(plans: Sequence[RunPlan], scenario: Scenario, sim: SimOptions) -> None:
    """Before anything runs: every finished run a resumed simulated benchmark would keep is the run it
    would make now; one made with other settings (samples, devices, cost model) is refused, not mixed in."""
    costs = load_cost_model(sim.cost_model)
    for plan in plans:
        if (plan.run_dir / "summary.json").exists():
            reason = kept_run_differs(scenario, plan.strategy, plan.seed, plan.run_dir, costs)
            if reason is not None:
                raise ConfigError(
                    f"{plan.run_dir} holds a run made with other settings ({reason}): "
                    "move it away or write this benchmark elsewhere"
                )


async def run_benchmark(
    scenario: Scenario,
    strategies: Sequence[str],
    out_dir: Path,
    *,
    shaping: str,
    say: Say = print,
    engine: str = "live",
    sim: SimOptions = SimOptions(),
    resume: bool = False,
) -> dict[str, Any]:
    """Run every planned run in turn; write ``results.json``, plots and ``report.md``.

    Interrupted (cancelled) benchmarks still write their report of the finished runs, then re-raise.
    ``resume``: keep every run whose directory already holds a ``summary.json`` (a finished run of an
    earlier invocation into the same ``out_dir``) and start any other one afresh.
    """
    plans = plan_runs(scenario, strategies, out_dir, shaping)
    earlier = recorded_wall_seconds(out_dir) if resume else {}
    say(
        f"benchmark {scenario.name}{' (quick)' if scenario.quick else ''}: {len(plans)} runs "
        f"({scenario.seeds} seed(s) x {', '.join(strategies)}), engine {engine}, "
        + (f"shaping {shaping}, " if engine == "live" else "")
        + f"base slowdown {scenario.devices.slowdown:g}x, writing to {out_dir}"
    )
    if resume and engine == "sim":
        check_kept_runs(plans, scenario, sim)
    outcomes: list[RunOutcome] = []
    interrupted = True
    backend = fit_backend(sim.backend, address=sim.ray_address) if engine == "sim" else None
    try:
        for plan in plans:
            if resume and (plan.run_dir / "summary.json").exists():
                wall = earlier.get((plan.seed, plan.strategy), 0.0)
                outcomes.append(RunOutcome(plan=plan, status="ok", wall_seconds=wall, message="resumed"))
                say(f"[{plan.index}/{len(plans)}] seed {plan.seed} {plan.strategy}: kept from an earlier run")
                continue
            if resume and plan.run_dir.exists():
                shutil.rmtree(plan.run_dir)  # an unfinished run of an earlier invocation
            say(f"[{plan.index}/{len(plans)}] seed {plan.seed} {plan.strategy}: starting")
            if engine == "sim":
                outcome = await run_simulated(plan, scenario, sim, backend)
            else:
                outcome = await run_one(plan, time_limit=scenario.run_timeout, shaping=shaping, say=say)
            outcomes.append(outcome)
            if engine == "sim":  # as each run ends: an interrupted benchmark keeps its finished runs' times
                _record_wall_seconds(out_dir, sim, plan, outcome.wall_seconds)
            figures = None
            if outcome.status == "ok":
                record = load_run(plan.run_dir, strategy=plan.strategy, seed=plan.seed)
                figures = _figures(scenario, record)
            say(_describe(outcome, figures))
        interrupted = False
    finally:
        if backend is not None:
            backend.close()
        results, records = _results(
            scenario,
            shaping,
            outcomes,
            out_dir,
            interrupted=interrupted,
            engine=engine,
            cost_model=sim.cost_model,
        )
        report = write_report(results, records, out_dir)
        say(f"report: {report}")
    return results


def _record_wall_seconds(out_dir: Path, sim: SimOptions, plan: RunPlan, seconds: float) -> None:
    """Add one simulated run's wall time to ``timing.json`` (real times, kept out of the reproducible
    ``results.json``), merged with what the file holds now: invocations over disjoint strategies may
    share ``--out``; written whole through a rename, so a reader never sees half a file."""
    walls = recorded_wall_seconds(out_dir)
    walls[(plan.seed, plan.strategy)] = seconds
    timing = [
        {"seed": seed, "strategy": strategy, "wall_seconds": wall}
        for (seed, strategy), wall in sorted(walls.items())
    ]
    where = {"backend": sim.backend, "device": sim.device, "secagg_cost": sim.secagg_cost}
    record = {**where, "cpu_count": os.cpu_count(), "runs": timing}
    atomic_write_bytes(out_dir / "timing.json", (json.dumps(record, indent=2) + "\n").encode())


def recorded_wall_seconds(out_dir: Path) -> dict[tuple[int, str], float]:
    """The wall time of each run (seed, strategy) that ``timing.json`` records (simulations only;
    empty when there is none)."""
    try:
        timing = json.loads((out_dir / "timing.json").read_text(encoding="utf-8"))
        return {(int(r["seed"]), str(r["strategy"])): float(r["wall_seconds"]) for r in timing["runs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


# ---------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.harness",
        description="Run every straggler-mitigation strategy of a scenario, seed by seed, simulated or as "
        "real federations, and write results.json, report.md and plots.",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="sim",
        help="sim (default): virtual time, decided by the live round engine with real training and real "
        "secure aggregation; its figures do not depend on this machine's load, a rerun gives the same "
        "results.json byte for byte, and paper-size runs take minutes. live: real processes and sockets "
        "on this machine, emulated slowdowns and link caps: the check of the simulator on small scenarios",
    )
    parser.add_argument(
        "--cost-model",
        help="--engine sim: a cost model from python -m clipfl.sim.calibrate (default: the shipped one)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="--engine sim: where the fits train: local (default, this process, one core) or ray (Ray "
        "tasks on every core, or on the cluster of --ray-address; pip install 'clipfl[ray]'). The "
        "results are the same on both",
    )
    parser.add_argument("--ray-address", help="--backend ray: a running Ray cluster (default: a local Ray)")
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="--engine sim: where torch trains the fits (default cpu)",
    )
    parser.add_argument(
        "--secagg-cost",
        choices=tuple(SECAGG_COSTS),
        default="real",
        help="--engine sim: real (default) runs secure aggregation's cryptography; model keeps every "
        "message and decision but only charges the cryptography's time from the cost model: the same "
        "results, for very large federations",
    )
    parser.add_argument("--scenario", required=True, help="a shipped scenario name or a path to a .toml")
    parser.add_argument("--quick", action="store_true", help="use the scenario's [quick] sizes")
    parser.add_argument("--seeds", type=int, help="number of seeds, 0 .. N-1 (default: the scenario's)")
    parser.add_argument(
        "--strategies",
        help=f"comma-separated, from {','.join(ALL_STRATEGIES)} (default: the scenario's and ideal)",
    )
    parser.add_argument("--rounds", type=int, help="override the number of rounds (smoke tests)")
    parser.add_argument(
        "--secagg", choices=SECAGG_MODES, help="override the scenario's secure aggregation (fluid stays off)"
    )
    parser.add_argument("--out", help="output directory (default: runs/bench-<scenario>-<time>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished runs already in --out (those with a summary.json) and run the others",
    )
    parser.add_argument(
        "--shaping",
        choices=("auto", "tc", "app"),
        default="auto",
        help="--engine live: link shaping (default: auto)",
    )
    return parser


def _strategies(text: str | None, scenario: Scenario) -> list[str]:
    if text is None:
        return [*scenario.strategies, IDEAL]
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in ALL_STRATEGIES]
    if unknown or not names:
        raise ConfigError(f"--strategies: unknown {unknown or text!r}; known: {', '.join(ALL_STRATEGIES)}")
    return list(dict.fromkeys(names))


def _shaping(choice: str) -> str:
    if choice == "auto":
        return detect_shaping()
    if choice == "tc":
        require_root_netns()
    return choice


async def run_until_signalled(
    scenario: Scenario,
    strategies: Sequence[str],
    out: Path,
    shaping: str,
    engine: str = "live",
    sim: SimOptions = SimOptions(),
    resume: bool = False,
) -> dict[str, Any]:
    """``run_benchmark`` as a command runs it: Ctrl-C or SIGTERM cancels it (a simulated run stops at its
    next round, a live launcher is stopped), and it still writes the report of the finished runs."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    # Ctrl-C and SIGTERM cancel the benchmark, which stops the running launcher. Handling SIGINT here
    # also matters when this process was started with SIGINT ignored (a background job, nohup): a
    # handled signal is reset to its default in the launchers it execs, an ignored one would be kept.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await run_benchmark(
            scenario,
            strategies,
            out,
            shaping=shaping,
            say=lambda s: print(s, flush=True),
            engine=engine,
            sim=sim,
            resume=resume,
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenario = load_scenario(args.scenario, quick=args.quick)
        if args.seeds is not None:
            scenario = scenario.with_seeds(args.seeds)
        if args.rounds is not None:
            scenario = scenario.with_rounds(args.rounds)
        if args.secagg is not None:
            scenario = dataclasses.replace(scenario, secagg=args.secagg)
        strategies = _strategies(args.strategies, scenario)
        if args.engine == "live" and scenario.sim.fleet != "stragglers":
            raise ConfigError(
                f"scenario {scenario.name}: sim.fleet = {scenario.sim.fleet!r} has no live emulation; "
                "use --engine sim"
            )
        shaping = _shaping(args.shaping) if args.engine == "live" else "virtual"
        sim = SimOptions(
            cost_model=args.cost_model,
            backend=args.backend,
            ray_address=args.ray_address,
            device=args.device,
            secagg_cost=args.secagg_cost,
        )
        if args.engine == "sim":
            load_cost_model(args.cost_model)  # a bad cost model or device is one line, before any run
            check_device(args.device)
        if args.resume and not args.out:
            raise ConfigError("--resume needs --out: the directory of the benchmark to finish")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(args.out or Path("runs") / f"bench-{scenario.name}-{args.engine}-{stamp}")
        out.mkdir(parents=True, exist_ok=True)
        results = asyncio.run(
            run_until_signalled(scenario, strategies, out, shaping, args.engine, sim, args.resume)
        )
    except ClipflError as exc:
        print(f"benchmarks.harness: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(
            "benchmarks.harness: interrupted; every run stopped, report of the finished runs written",
            file=sys.stderr,
        )
        return 130
    failed = [r for r in results["runs"] if r["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
