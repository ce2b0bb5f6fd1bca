"""The scale benchmark (issue 7, item 6): its pure helpers exactly, and one small real run.

The figures of a real run are measurements of a shared machine, so the smoke run asserts only what
must hold on any machine: the report's keys, every round completed with every client, the HTTP API
answered, and every process the benchmark started is gone afterwards.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import clipfl
from benchmarks import scale
from benchmarks.scale import (
    HttpProbe,
    ScaleOptions,
    latency_summary,
    metrics_probe,
    orchestrate,
    parse_proc_stat_cpu,
    parse_proc_status,
    percentile,
    read_proc,
    render_markdown,
    rounds_completed,
    split_ids,
    status_probe,
)
from clipfl.errors import ConfigError
from clipfl.secagg import SecAggConfig

ROOT = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------------ helpers


@given(st.integers(1, 500), st.integers(1, 64))
def test_split_ids_covers_every_client_once_in_balanced_ranges(clients: int, workers: int) -> None:
    if workers > clients:
        with pytest.raises(ValueError):
            split_ids(clients, workers)
        return
    parts = split_ids(clients, workers)
    assert len(parts) == workers
    assert [i for r in parts for i in r] == list(range(clients))
    sizes = [len(r) for r in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_split_ids_200_over_4() -> None:
    assert split_ids(200, 4) == [range(0, 50), range(50, 100), range(100, 150), range(150, 200)]
    assert split_ids(7, 3) == [range(0, 3), range(3, 5), range(5, 7)]


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0, 1))
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q * 100)), abs=1e-6)


def test_percentile_exact_points_and_bad_input() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.0) == 1.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 1.0) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile([0.0, 10.0], 0.95) == 9.5
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


STATUS = """Name:\tpython
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t 2000000 kB
VmHWM:\t  340000 kB
VmRSS:\t  330104 kB
Threads:\t7
"""


def test_parse_proc_status_reads_rss_peak_and_threads_in_bytes() -> None:
    assert parse_proc_status(STATUS) == {"VmHWM": 340000 * 1024, "VmRSS": 330104 * 1024, "Threads": 7}


def test_parse_proc_stat_cpu_counts_fields_after_the_last_parenthesis() -> None:
    # A command name with spaces and parentheses must not shift the fields; utime 250, stime 50.
    fields = ["S", "1", "2", "3", "0", "-1", "4194560", "100", "0", "0", "0", "250", "50", "0", "0"]
    text = "4242 (odd (name) x) " + " ".join(fields) + " 20 0 1 0\n"
    assert parse_proc_stat_cpu(text, ticks_per_second=100) == 3.0


def test_read_proc_of_this_process_agrees_with_the_kernel() -> None:
    sample = read_proc(os.getpid(), at=1.5)
    assert sample.at == 1.5
    assert 0 < sample.rss_bytes <= sample.peak_rss_bytes
    assert sample.threads >= 1 and sample.open_files >= 3
    times = os.times()
    assert sample.cpu_seconds <= times.user + times.system + 0.05


def test_rounds_completed_reads_the_counter_and_ignores_lookalikes() -> None:
    text = (
        "# HELP clipfl_rounds_completed_total Rounds completed.\n"
        "# TYPE clipfl_rounds_completed_total counter\n"
        "clipfl_rounds_completed_total_extra 9\n"
        "clipfl_rounds_completed_total 3\n"
    )
    assert rounds_completed(text) == 3.0
    assert rounds_completed('clipfl_rounds_completed_total{run="a"} 2\n') == 2.0
    assert rounds_completed("clipfl_bytes_in_total 5\n") is None


def test_status_and_metrics_probes_judge_the_answers() -> None:
    good = status_probe(1.0, 0.01, 200, json.dumps({"round": 2, "clients_connected": 200, "stage": "x"}))
    assert good == HttpProbe(1.0, 0.01, True, stage="x", round=2, clients_connected=200)
    assert not status_probe(1.0, 0.01, 200, json.dumps({"round": 2})).ok
    assert not status_probe(1.0, 0.01, 500, json.dumps({"round": 2, "clients_connected": 1})).ok
    assert not status_probe(1.0, 0.01, 200, "[]").ok
    with pytest.raises(ValueError):
        status_probe(1.0, 0.01, 200, "<html>")
    assert metrics_probe(0.0, 0.1, 200, "clipfl_rounds_completed_total 1\n").round == 1
    assert not metrics_probe(0.0, 0.1, 200, "nothing\n").ok


def test_latency_summary_uses_only_successful_probes() -> None:
    probes = [HttpProbe(0, s / 1000, True) for s in (1, 2, 3, 4, 100)] + [HttpProbe(0, 9.0, False)]
    summary = latency_summary(probes)
    assert summary["requests"] == 6 and summary["failures"] == 1
    assert summary["median_ms"] == pytest.approx(3.0)
    assert summary["max_ms"] == pytest.approx(100.0)
    assert summary["p95_ms"] == pytest.approx(4 + 0.8 * 96)
    assert latency_summary([HttpProbe(0, 1.0, False)])["median_ms"] is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clients": 1},
        {"workers": 0},
        {"clients": 4, "workers": 5},
        {"rounds": 0},
        {"secagg": "x"},
        {"timeout": 0},
    ],
)
def test_options_refuse_impossible_runs(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ScaleOptions(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- a real run

REPORT_KEYS = {
    "benchmark",
    "status",
    "message",
    "command",
    "config",
    "machine",
    "all_rounds_completed",
    "rounds_completed",
    "registration_seconds",
    "total_seconds",
    "round_seconds",
    "rounds",
    "server",
    "http",
    "workers",
    "summary",
    "server_samples",
}
SERVER_KEYS = {"rss_peak_mib", "rss_mean_mib", "cpu_seconds_total", "cpu_seconds_training", "threads_max"}
HTTP_KEYS = {"requests", "failures", "median_ms", "p95_ms", "max_ms", "during_training", "metrics"}
ROUND_KEYS = {"round", "round_seconds", "participants", "failures", "stages", "server_cpu_seconds"}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_twelve_clients_two_workers_one_round(tmp_path: Path) -> None:
    out = tmp_path / "scale"
    argv = ["--clients", "12", "--workers", "2", "--rounds", "1", "--out", str(out), "--timeout", "150"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    report = json.loads((out / "scale.json").read_text())
    assert done.returncode == 0, (report["status"], report["message"], done.stderr[-2000:])
    assert set(report) >= REPORT_KEYS
    assert report["status"] == "ok" and report["all_rounds_completed"] is True
    assert report["config"]["clients"] == 12 and report["config"]["secagg"] == "secagg+"
    expected = SecAggConfig(mode="secagg+").resolved(12)  # the active-security defaults for n = 12
    assert report["config"]["neighbors"] == expected.neighbors
    assert report["config"]["threshold"] == expected.threshold
    assert report["rounds_completed"] == 1 and report["summary"]["rounds"] == 1
    (row,) = report["rounds"]
    assert set(row) >= ROUND_KEYS
    assert row["participants"] == 12 and row["failures"] == 0 and row["round_seconds"] > 0
    assert {"advertise_keys", "share_keys", "masked_input", "unmasking"} <= set(row["stages"])
    assert set(report["server"]) >= SERVER_KEYS
    assert report["server"]["rss_peak_mib"] > 0 and report["server"]["cpu_seconds_total"] > 0
    assert set(report["http"]) >= HTTP_KEYS
    assert report["http"]["requests"] > 0 and report["http"]["failures"] == 0
    assert report["workers"]["clients_with_all_rounds"] == 12 and report["workers"]["client_errors"] == 0
    assert (out / "scale.md").read_text() == render_markdown(report)
    # Everything the benchmark started is gone: the server and both workers.
    pids = [report["pids"]["server"], *report["pids"]["workers"]]
    assert len(pids) == 3 and not any(_alive(pid) for pid in pids)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_worker_that_dies_fails_the_run_at_once_and_stops_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the lowered partition floor, 200 digits clients cannot be built: every worker dies.
    The run must fail within seconds (not wait out the server's registration timeout) and say why."""
    import asyncio

    monkeypatch.setattr(orchestrate, "samples_per_client", lambda opts: None)
    opts = ScaleOptions(clients=200, workers=2, rounds=1, out=tmp_path / "s", timeout=100)
    report = asyncio.run(scale.run_scale(opts))
    assert report["status"] == "failed" and "exited with code 1" in report["message"]
    assert "DataError" in report["message"]
    assert report["all_rounds_completed"] is False and report["rounds_completed"] == 0
    pids = [report["pids"]["server"], *report["pids"]["workers"]]
    assert len(pids) == 3 and not any(_alive(pid) for pid in pids)
    assert json.loads((tmp_path / "s" / "scale.json").read_text())["status"] == "failed"


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_stops_every_process_and_leaves_a_report(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "scale"
    argv = ["--clients", "6", "--workers", "2", "--rounds", "500", "--out", str(out), "--timeout", "100"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scale", *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "worker-1.log").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = json.loads((out / "scale.json").read_text())
    assert report["status"] == "interrupted"
    # The signal may land while worker 1 is being started (its log exists before its process does):
    # asyncio then kills the half-started child and the report lists only what ran. So the check is
    # on every process that names this run's folder on its command line, listed in the report or not.
    pids = [report["pids"]["server"], *report["pids"]["workers"]]
    assert len(pids) >= 2 and not any(_alive(pid) for pid in pids)
    assert _live_processes_naming(out) == []


def _live_processes_naming(folder: Path) -> list[int]:
    """Live processes whose command line mentions ``folder`` (the server's run dir, a worker's result)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_command_line_parses_back_to_the_same_options(tmp_path: Path) -> None:
    opts = ScaleOptions(clients=37, rounds=2, workers=3, secagg="secagg", seed=5, out=tmp_path, timeout=99.0)
    line = scale.command_line(opts)
    assert line.startswith("python -m benchmarks.scale ")
    args = scale.build_parser().parse_args(line.split()[3:])
    assert (args.clients, args.rounds, args.workers, args.secagg, args.seed) == (37, 2, 3, "secagg", 5)
    assert (args.out, args.json, args.timeout) == (tmp_path, None, 99.0)


def test_partition_floor_is_lowered_only_when_digits_is_too_small(tmp_path: Path) -> None:
    """Digits has 1,438 training samples: 143 clients get the default 10 each, 200 get 7."""
    assert scale.samples_per_client(ScaleOptions(clients=143, out=tmp_path)) is None
    assert scale.samples_per_client(ScaleOptions(clients=144, out=tmp_path)) == 9
    assert scale.samples_per_client(ScaleOptions(clients=200, out=tmp_path)) == 7


def test_the_benchmark_uses_only_the_public_surface_of_clipfl() -> None:
    """Benchmarks drive clipfl through ``from clipfl import ...`` (its ``__all__``) and its CLI only."""
    seen = set()
    for path in sorted((ROOT / "benchmarks" / "scale").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.split(".")[0] == "clipfl"]
                assert not bad, f"{path.name}: import {bad}"
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "clipfl":
                assert node.module == "clipfl", f"{path.name}: from {node.module} import ..."
                names = {a.name for a in node.names}
                assert names <= set(clipfl.__all__), f"{path.name}: {sorted(names - set(clipfl.__all__))}"
                seen |= names
    assert {"Client", "ClientConfig", "RunConfig", "federation_data", "client_data"} <= seen
