"""``python -m clipfl.data``: the statistics contract and one-line errors (issue 3 item 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipfl.data.__main__ import main


def test_json_statistics_of_digits_with_a_partition(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["--dataset", "digits", "--partition", "dirichlet", "--clients", "5", "--seed", "3", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert (out["train_samples"], out["test_samples"], out["classes"], out["natural_clients"]) == (
        1438,
        359,
        10,
        None,
    )
    p = out["partition"]
    assert p["scheme"] == "dirichlet" and p["clients"] == 5 and p["total"] == 1438 and p["alpha"] == 0.5
    assert p["min"] <= p["median"] <= p["max"] and p["min"] >= 10


def test_natural_partition_reports_local_test_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "f.npz",
        x_train=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 62, 60),
        writer_train=np.repeat(np.arange(4), 15),
        x_test=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 62, 8),
        writer_test=np.repeat(np.arange(4), 2),
        writers=np.array(["a", "b", "c", "d"]),
    )
    args = ["--dataset", "femnist", "--data-dir", str(tmp_path), "--no-cache", "--partition", "natural"]
    assert main([*args, "--clients", "3"]) == 0
    text = capsys.readouterr().out
    assert "natural clients  4" in text and "min 15, median 15, max 15" in text and "local test" in text


def test_errors_are_one_line_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dataset", "femnist", "--data-dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "does not exist" in err
    assert main(["--dataset", "digits", "--partition", "iid", "--clients", "500"]) == 2
    assert "cannot give 500 clients" in capsys.readouterr().err


def test_runs_as_a_module_with_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "clipfl.data", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for flag in ("--dataset", "--data-dir", "--partition", "--clients", "--json", "--cache-dir", "--format"):
        assert flag in done.stdout
