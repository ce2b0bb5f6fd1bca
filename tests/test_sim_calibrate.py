"""The cost model's measurement refuses a busy machine (issue 11): contention slows the thread clock
too, and a model timed so made every simulated FEMNIST fit 1.6x too slow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipfl.sim import calibrate


def test_busy_cores_reads_a_share_of_this_machine() -> None:
    assert 0.0 <= calibrate.busy_cores(0.05) <= (os.cpu_count() or 1) + 1e-9


def test_a_busy_machine_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(calibrate, "busy_cores", lambda seconds=1.0: 1.5)
    out = tmp_path / "costs.json"
    assert calibrate.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "1.50 cores in use" in err and "--busy-ok" in err
    assert not out.exists()
