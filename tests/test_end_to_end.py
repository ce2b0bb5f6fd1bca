"""A whole federation as real processes over ZeroMQ on loopback, through the launcher's CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipfl.rundir import read_jsonl

pytestmark = pytest.mark.slow

CLIENT_KEYS = {
    "round",
    "download_seconds",
    "fit_seconds",
    "upload_seconds",
    "bytes_up",
    "bytes_down",
    "keep_ratio",
}
METRIC_KEYS = {"round", "round_seconds", "elapsed_seconds", "test_accuracy", "test_loss", "participants"}
SUMMARY_KEYS = {"rounds", "total_seconds", "final_accuracy", "best_accuracy", "mean_round_seconds"}


def launch(run_dir: Path, *flags: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "clipfl.launch",
            "--run-dir",
            str(run_dir),
            "--heartbeat-timeout",
            "5",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_four_clients_three_rounds_on_digits(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = launch(
        run_dir,
        "--clients",
        "4",
        "--rounds",
        "3",
        "--dataset",
        "digits",
        "--partition",
        "dirichlet",
        "--alpha",
        "1.0",
        "--seed",
        "3",
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"run directory: {run_dir.resolve()}" in done.stdout

    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS and summary["rounds"] == 3
    assert 0 <= summary["final_accuracy"] <= 1 and summary["best_accuracy"] >= summary["final_accuracy"]

    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["round"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert set(m) >= METRIC_KEYS
        assert sorted(m["participants"]) == [0, 1, 2, 3]
    accuracies = [m["test_accuracy"] for m in metrics]
    assert accuracies[-1] > accuracies[0], accuracies
    assert np.isclose(summary["final_accuracy"], accuracies[-1])

    for i in range(4):
        rows = read_jsonl(run_dir / f"client-{i}.jsonl")
        assert [r["round"] for r in rows] == [1, 2, 3]
        for r in rows:
            assert set(r) >= CLIENT_KEYS
            assert r["keep_ratio"] == 1.0 and r["bytes_up"] > 0 and r["bytes_down"] > r["bytes_up"] / 2
            assert r["fit_seconds"] > 0 and r["upload_seconds"] >= 0 and r["download_seconds"] >= 0

    config = json.loads((run_dir / "config.json").read_text())
    assert config["clients"] == 4 and config["partition"] == "dirichlet"
    with np.load(run_dir / "checkpoint.npz") as ckpt:
        assert json.loads(bytes(ckpt["__meta__"]))["round"] == 3


def test_launcher_refuses_a_bad_flag_in_one_line(tmp_path: Path) -> None:
    done = launch(tmp_path / "run", "--clients", "0")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "clients must be positive" in done.stderr


def test_launcher_reads_a_toml_config_and_flags_win(tmp_path: Path) -> None:
    config = tmp_path / "fed.toml"
    config.write_text("clients = 2\nrounds = 5\nlocal-epochs = 1\nbatch_size = 16\n")
    done = launch(tmp_path / "run", "--config", str(config), "--rounds", "1")
    assert done.returncode == 0, done.stderr
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (resolved["clients"], resolved["rounds"], resolved["batch_size"]) == (2, 1, 16)
    bad = tmp_path / "bad.toml"
    bad.write_text("clients = 2\nwarp_speed = 9\n")
    done = launch(tmp_path / "run2", "--config", str(bad))
    assert done.returncode == 2 and "warp_speed" in done.stderr


def test_network_stragglers_behind_real_tc_caps(tmp_path: Path) -> None:
    """The launcher builds a namespace per client with tbf caps (root only), and tears it down."""
    from clipfl.errors import ConfigError
    from clipfl.shaping import require_root_netns

    try:
        require_root_netns()
    except ConfigError as exc:
        pytest.skip(f"tc shaping unavailable here: {exc}")
    run_dir = tmp_path / "run"
    done = launch(
        run_dir,
        "--clients",
        "3",
        "--rounds",
        "2",
        "--straggler-ids",
        "1",
        "--shape",
        "tc",
        "--straggler-upload-rate",
        "2mbit",
        "--straggler-download-rate",
        "4mbit",
    )
    assert done.returncode == 0, done.stderr + done.stdout
    rows = {i: read_jsonl(run_dir / f"client-{i}.jsonl") for i in range(3)}
    # 153 kB through a 2 mbit cap needs 0.6 s: at least half of it shows (a wide band, not a benchmark)
    assert all(r["upload_seconds"] > 0.3 and r["download_seconds"] > 0.15 for r in rows[1])
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "clipfl-" not in leftovers
