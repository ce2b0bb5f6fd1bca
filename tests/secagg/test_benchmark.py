"""The secagg benchmark runs end to end on a tiny federation and reports the keys the issue names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.secagg import main, run_benchmark


def test_tiny_benchmark_is_exact_and_complete() -> None:
    result = run_benchmark(clients=6, dim=1000, dropouts=1, mode="secagg+", neighbors=3, threshold=2)
    assert result["exact"] is True
    assert result["survivors"] == 5 and result["dropouts"] == 1 and result["identities"] is True
    for key in ("secure_seconds", "plain_seconds", "client_seconds", "server_seconds", "bytes_per_client"):
        assert result[key] > 0
    assert result["bytes_per_client"] >= 4 * 1000  # 4 bytes a coordinate, plus keys and shares
    assert set(result["client_stage_seconds"]) == {
        "advertise_keys",
        "share_keys",
        "masked_input",
        "consistency",
        "unmasking",
    }


def test_cli_writes_json_and_a_markdown_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    argv = ["--clients", "5", "--dim", "500", "--dropouts", "1", "--mode", "secagg", "--json", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["exact"] is True
    table = capsys.readouterr().out
    assert table.startswith("| mode |") and "| secagg | 5 |" in table
