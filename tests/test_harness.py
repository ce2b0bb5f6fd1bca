"""The benchmark harness (issue 6, item 3) without real federations: the launcher command of every
strategy (checked against the launcher's own parser), the interleaved plan, and the process handling
of one run (exit, failure, timeout, cancellation: no process of a run survives it), with small fake
launchers; and a whole benchmark over a fake launcher that writes run directories."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks import harness
from benchmarks.harness import ALL_STRATEGIES, RunPlan, launcher_argv, plan_runs, run_benchmark, run_one
from benchmarks.scenario import Scenario, available_scenarios, load_scenario, parse_scenario
from clipfl.errors import ConfigError


def scenario(**stragglers: object) -> Scenario:
    return parse_scenario(
        {
            "target_accuracy": 0.5,
            "secagg": "secagg+",
            "federation": {"dataset": "digits", "clients": 6, "rounds": 3, "lr": 0.1},
            "devices": {"slowdown": 4.0, "upload_rate": "50mbit"},
            "stragglers": stragglers or {"count": 2, "slowdown": 3.0},
        },
        "unit",
    )


def flags(argv: list[str]) -> dict[str, str]:
    """``--flag value`` pairs after ``python -m clipfl.launch``."""
    rest = argv[3:]
    assert len(rest) % 2 == 0 and all(a.startswith("--") for a in rest[::2]), rest
    return dict(zip(rest[::2], rest[1::2], strict=True))


def test_argv_of_a_strategy(tmp_path: Path) -> None:
    argv = launcher_argv(scenario(), "clip", 3, tmp_path, "app")
    assert argv[:3] == [sys.executable, "-m", "clipfl.launch"]
    f = flags(argv)
    assert f["--run-dir"] == str(tmp_path) and f["--seed"] == "3" and f["--target-accuracy"] == "0.5"
    assert (f["--dataset"], f["--clients"], f["--rounds"], f["--lr"]) == ("digits", "6", "3", "0.1")
    assert (f["--mitigation"], f["--secagg"], f["--slowdown"]) == ("clip", "secagg+", "4")
    assert (f["--stragglers"], f["--straggler-slowdown"]) == ("2", "3")
    assert f["--upload-rate"] == "50mbit" and f["--shape"] == "app"
    assert "--straggler-ids" not in f and "--download-rate" not in f


def test_ideal_has_no_stragglers_and_fluid_no_secure_aggregation(tmp_path: Path) -> None:
    s = scenario(ids=[1, 4], slowdown=2.0, upload_rate="1mbit", download_rate="5mbit")
    ideal = flags(launcher_argv(s, "ideal", 0, tmp_path, "tc"))
    assert ideal["--mitigation"] == "none" and ideal["--secagg"] == "secagg+"
    assert not [k for k in ideal if "straggler" in k]
    assert ideal["--slowdown"] == "4" and ideal["--upload-rate"] == "50mbit" and ideal["--shape"] == "tc"
    fluid = flags(launcher_argv(s, "fluid", 0, tmp_path, "tc"))
    assert fluid["--secagg"] == "off" and fluid["--mitigation"] == "fluid"
    clip = flags(launcher_argv(s, "clip", 0, tmp_path, "tc"))
    assert clip["--straggler-ids"] == "1,4" and "--stragglers" not in clip
    assert (clip["--straggler-upload-rate"], clip["--straggler-download-rate"]) == ("1mbit", "5mbit")
    with pytest.raises(ConfigError, match="unknown strategy 'fast'"):
        launcher_argv(s, "fast", 0, tmp_path, "tc")


def test_no_shaping_flag_without_link_caps(tmp_path: Path) -> None:
    s = load_scenario("digits-quick")
    assert not s.has_network_caps
    assert "--shape" not in launcher_argv(s, "none", 0, tmp_path, "tc")


@pytest.mark.parametrize("name", available_scenarios())
@pytest.mark.parametrize("quick", [False, True])
def test_the_launcher_accepts_every_command(name: str, quick: bool, tmp_path: Path) -> None:
    from clipfl.launch import build_parser

    s = load_scenario(name, quick=quick)
    parser = build_parser()
    for strategy in ALL_STRATEGIES:
        args = parser.parse_args(launcher_argv(s, strategy, 1, tmp_path, "app")[3:])
        assert args.mitigation == ("none" if strategy == "ideal" else strategy)
        assert args.seed == 1 and args.rounds == s.rounds and args.clients == s.clients


@pytest.mark.parametrize("on", [True, False])
def test_a_switch_in_the_federation_reaches_the_launcher_and_the_simulator(on: bool, tmp_path: Path) -> None:
    from benchmarks.simulated import run_config_of
    from clipfl.launch import build_parser

    s = parse_scenario(
        {
            "target_accuracy": 0.5,
            "federation": {"dataset": "digits", "clients": 4, "rounds": 2, "eval_overlap": on},
        },
        "unit",
    )
    argv = launcher_argv(s, "none", 0, tmp_path, "app")
    assert ("--eval-overlap" if on else "--no-eval-overlap") in argv
    assert build_parser().parse_args(argv[3:]).eval_overlap is on
    assert run_config_of(s, "none", 0).eval_overlap is on


def test_plan_interleaves_seeds_and_rotates_strategies(tmp_path: Path) -> None:
    s = scenario().with_seeds(3)
    plans = plan_runs(s, ["none", "clip", "ideal"], tmp_path, "app")
    assert [(p.seed, p.strategy) for p in plans] == [
        (0, "none"), (0, "clip"), (0, "ideal"),
        (1, "clip"), (1, "ideal"), (1, "none"),
        (2, "ideal"), (2, "none"), (2, "clip"),
    ]  # fmt: skip
    assert [p.index for p in plans] == list(range(1, 10))
    assert len({p.run_dir for p in plans}) == 9
    assert plans[3].run_dir == tmp_path / "runs" / "seed-1" / "clip"
    assert flags(list(plans[3].argv))["--run-dir"] == str(plans[3].run_dir)


# --------------------------------------------------------------------------- one run, fake launchers


def fake(tmp_path: Path, body: str) -> RunPlan:
    script = tmp_path / "fake_launcher.py"
    script.write_text(
        "import os, signal, subprocess, sys, time\n"
        f"PIDS = {str(tmp_path / 'pids')!r}\n"
        "def child():\n"
        "    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "    open(PIDS, 'a').write(f'{p.pid}\\n')\n"
        "    return p\n" + textwrap.dedent(body)
    )
    return RunPlan(
        index=1, seed=0, strategy="none", run_dir=tmp_path / "run", argv=(sys.executable, str(script))
    )


def gone(pid: int) -> bool:
    """True once ``pid`` has exited and been reaped (a zombie still counts as there)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ")[-1].startswith("Z"):
                    time.sleep(0.05)
                    continue
        except (FileNotFoundError, ProcessLookupError):  # gone between the open and the read
            return True
        time.sleep(0.05)
    return False


def child_pids(tmp_path: Path) -> list[int]:
    return [int(x) for x in (tmp_path / "pids").read_text().split()]


async def test_a_run_that_ends_well(tmp_path: Path) -> None:
    plan = fake(tmp_path, "print('server on x'); print('round   1/2  accuracy 0.5'); print('done')\n")
    said: list[str] = []
    outcome = await run_one(plan, time_limit=60, shaping="app", say=said.append)
    assert outcome.status == "ok" and outcome.message == ""
    assert said == ["    round   1/2  accuracy 0.5"]
    assert (plan.run_dir / "launcher.log").read_text() == "server on x\nround   1/2  accuracy 0.5\ndone\n"


async def test_a_failed_run_says_why(tmp_path: Path) -> None:
    plan = fake(tmp_path, "print('clipfl.launch: error: boom', file=sys.stderr); sys.exit(3)\n")
    outcome = await run_one(plan, time_limit=60, shaping="app", say=lambda _: None)
    assert outcome.status == "failed"
    assert outcome.message == "launcher exited with code 3: clipfl.launch: error: boom"


async def test_a_hung_run_is_killed_with_its_children(tmp_path: Path) -> None:
    """The launcher ignores SIGINT: after the grace period its whole process group is killed."""
    plan = fake(
        tmp_path,
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\nchild()\n"
        "print('started', flush=True)\ntime.sleep(600)\n",
    )
    outcome = await run_one(plan, time_limit=3, shaping="app", say=lambda _: None, stop_grace=0.5)
    assert outcome.status == "timeout" and outcome.message == "killed after 3 s"
    assert all(gone(pid) for pid in child_pids(tmp_path))


async def test_a_launcher_that_leaves_children_behind_does_not_leak_them(tmp_path: Path) -> None:
    """SIGINT ends the launcher at once but its child lives on: the group kill still reaches it."""
    plan = fake(tmp_path, "child()\nprint('started', flush=True)\ntime.sleep(600)\n")
    outcome = await run_one(plan, time_limit=3, shaping="app", say=lambda _: None, stop_grace=5)
    assert outcome.status == "timeout"
    assert all(gone(pid) for pid in child_pids(tmp_path))


async def test_cancelling_a_run_stops_its_processes(tmp_path: Path) -> None:
    plan = fake(tmp_path, "child()\nprint('round 1', flush=True)\ntime.sleep(600)\n")
    started = asyncio.Event()
    task = asyncio.create_task(
        run_one(plan, time_limit=600, shaping="app", say=lambda _: started.set(), stop_grace=5)
    )
    await asyncio.wait_for(started.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(gone(pid) for pid in child_pids(tmp_path))


# ------------------------------------------------------------------ a whole benchmark, fake launcher

FAKE_FEDERATION = """
import json, sys
from pathlib import Path
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
strategy, seed = args["--mitigation"], int(args["--seed"])
if "--stragglers" not in args and strategy == "none":
    strategy = "ideal"
if strategy == "random":
    print("clipfl.launch: error: no luck", file=sys.stderr)
    sys.exit(2)
run = Path(args["--run-dir"])
run.mkdir(parents=True, exist_ok=True)
speed = {"none": 4.0, "clip": 2.0, "ideal": 1.0}[strategy] * (1 + seed)
with open(run / "metrics.jsonl", "w") as fh:
    for r in range(1, int(args["--rounds"]) + 1):
        row = {"round": r, "round_seconds": speed, "elapsed_seconds": speed * r, "test_accuracy": 0.25 * r}
        fh.write(json.dumps(row) + "\\n")
        print(f"round {r}", flush=True)
for cid in range(int(args["--clients"])):
    with open(run / f"client-{cid}.jsonl", "w") as fh:
        for r in range(1, int(args["--rounds"]) + 1):
            row = {"round": r, "slowdown": 4.0, "emulation_overrun": False, "keep_ratio": 1.0}
            fh.write(json.dumps(row) + "\\n")
"""


@pytest.fixture
def fake_federation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fake_federation.py"
    script.write_text(FAKE_FEDERATION)
    real = harness.launcher_argv

    def argv(*args: object, **kw: object) -> list[str]:
        return [sys.executable, str(script), *real(*args, **kw)[3:]]  # type: ignore[arg-type]

    monkeypatch.setattr(harness, "launcher_argv", argv)


async def test_a_benchmark_writes_results_and_report(tmp_path: Path, fake_federation: None) -> None:
    out = tmp_path / "out"
    s = scenario().with_seeds(2)
    lines: list[str] = []
    results = await run_benchmark(
        s, ["none", "clip", "random", "ideal"], out, shaping="app", say=lines.append
    )
    assert json.loads((out / "results.json").read_text()) == results
    assert (results["scenario"], results["seeds"], results["shaping"]) == ("unit", [0, 1], "app")
    assert set(results["strategies"]) == {"none", "clip", "ideal"}  # random failed on every seed
    clip = results["strategies"]["clip"]
    assert clip["speedup_round_time"] == 0.5 and clip["round_time_vs_ideal"] == 2.0
    assert clip["speedup_time_to_target"] == 0.5 and clip["accuracy_delta_points"] == 0.0
    assert clip["time_to_target_seconds"] == 3.0 and clip["overruns"] == 0
    failed = [r for r in results["runs"] if r["status"] != "ok"]
    assert [(r["strategy"], r["seed"]) for r in failed] == [("random", 0), ("random", 1)]
    assert failed[0]["message"] == "launcher exited with code 2: clipfl.launch: error: no luck"
    text = (out / "report.md").read_text()
    assert "**2 run(s) failed**" in text and "| clip | 3.00 |" in text
    assert any("random: FAILED" in line for line in lines)
    assert sum(line.strip() == "round 2" for line in lines) == 6  # relayed from the 6 good runs


async def test_an_interrupted_benchmark_reports_what_finished(tmp_path: Path, fake_federation: None) -> None:
    out = tmp_path / "out"
    lines: list[str] = []
    done = asyncio.Event()

    def say(line: str) -> None:
        lines.append(line)
        if "clip: done" in line:
            done.set()

    task = asyncio.create_task(
        run_benchmark(scenario(), ["clip", "none", "ideal"], out, shaping="app", say=say)
    )
    await asyncio.wait_for(done.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted"] is True and "clip" in results["strategies"]
    assert "**Interrupted**" in (out / "report.md").read_text()


def test_main_reports_a_bad_scenario_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[federation]\nclients = 3\n")
    assert harness.main(["--scenario", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == "benchmarks.harness: error: scenario bad: [federation] needs a preset or a dataset\n"
    assert harness.main(["--scenario", "digits-quick", "--strategies", "none,magic"]) == 2
    assert "--strategies: unknown ['magic']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_shaping_is_tc_only_with_namespaces() -> None:
    from clipfl.shaping import require_root_netns

    try:
        require_root_netns()
        expected = "tc"
    except ConfigError:
        expected = "app"
    assert harness.detect_shaping() == expected
    assert os.geteuid() == 0 or expected == "app"
