"""Crash-safe checkpoints: SIGKILL the server mid-round, restart it with --resume, lose nothing."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clipfl.launch import client_argv, free_port
from clipfl.rundir import read_jsonl

FED = [
    *("--clients", "3", "--rounds", "4", "--dataset", "digits", "--secagg", "secagg+", "--seed", "5"),
    "--secagg-trust-server",  # resuming is the point here; identities are tested with the launcher
]


def _server(run_dir: Path, address: str, *extra: str) -> subprocess.Popen[bytes]:
    log = open(run_dir.parent / "server.log", "ab")  # noqa: SIM115 - the child holds it
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clipfl.server",
            "--bind",
            address,
            "--heartbeat-timeout",
            "2",
            "--registration-timeout",
            "90",
            *extra,
        ],
        stdout=log,
        stderr=log,
    )


@pytest.mark.slow
def test_sigkill_mid_round_then_resume_keeps_every_completed_round(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    address = f"tcp://127.0.0.1:{free_port()}"
    server = _server(run_dir, address, "--run-dir", str(run_dir), *FED)
    clients = [
        subprocess.Popen(
            [
                *client_argv(i, address, run_dir, slowdown=25, heartbeat_timeout=2, flags=FED),
                "--connect-timeout",
                "90",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(3)
    ]
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").exists() or len(read_jsonl(run_dir / "metrics.jsonl")) < 2:
            assert time.monotonic() < deadline and server.poll() is None, "the first rounds never completed"
            time.sleep(0.05)  # a test's bounded wait for the files the server writes
        server.send_signal(signal.SIGKILL)  # round 3 is in flight: the clients train slowly
        server.wait()
        before = [r["round"] for r in read_jsonl(run_dir / "metrics.jsonl")]
        assert before[:2] == [1, 2]
        server = _server(run_dir, address, "--resume", str(run_dir))
        assert server.wait(timeout=240) == 0
        assert [c.wait(timeout=60) for c in clients] == [0, 0, 0]
    finally:
        for p in [server, *clients]:
            if p.poll() is None:
                p.kill()
                p.wait()
    rounds = [r["round"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert rounds == [1, 2, 3, 4]  # every completed round kept, none repeated
    summary = (run_dir / "summary.json").read_text()
    assert '"rounds": 4' in summary
    with np.load(run_dir / "checkpoint.npz") as ckpt:
        assert b'"round": 4' in bytes(ckpt["__meta__"])


def _digest(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


@pytest.mark.parametrize("damage", ["missing", "not-a-run", "truncated-checkpoint", "garbage-config"])
def test_resume_refuses_a_bad_run_directory_and_changes_nothing(tmp_path: Path, damage: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if damage == "not-a-run":
        (run_dir / "notes.txt").write_text("hello")
    elif damage != "missing":
        np.savez(run_dir / "checkpoint.npz", __meta__=np.frombuffer(b'{"round": 1}', np.uint8))
        (run_dir / "config.json").write_text('{"clients": 2}')
        (run_dir / "metrics.jsonl").write_text('{"round": 1}\n')
        if damage == "truncated-checkpoint":
            data = (run_dir / "checkpoint.npz").read_bytes()
            (run_dir / "checkpoint.npz").write_bytes(data[: len(data) // 2])
        else:
            (run_dir / "config.json").write_text("{not json")
    target = run_dir / "absent" if damage == "missing" else run_dir
    before = _digest(run_dir)
    done = subprocess.run(
        [sys.executable, "-m", "clipfl.server", "--resume", str(target), "--bind", "tcp://127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("clipfl.server: error: --resume") and done.stderr.count("\n") == 1
    assert _digest(run_dir) == before
