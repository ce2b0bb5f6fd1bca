"""The fault campaign (issue 14, "a standing fault campaign"): its parts exactly, and the quick run live.

The quick run is ``python -m benchmarks.faults --quick``: ``--secagg secagg+`` only, a clean run, one
run under attacks 1-6 at once (smaller budgets) and one with a client SIGKILLed and restarted, then
the server SIGKILLed and resumed. It must show what issue 14 asks for: no server exit, every round
exactly once, no eviction or impersonation that took effect, no round run to its deadline, and the
server's memory within the clean peak plus one refused message's allowance.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.faults import (
    BUDGETS,
    KILLER,
    Case,
    FederationSpec,
    fuzz_message,
    identities_in,
    memory_allowance,
    plan,
    render_markdown,
    run_case,
    structured_malformed,
    verdicts,
)
from benchmarks.faults.campaign import _rejoined
from clipfl.errors import RemoteProtocolError
from clipfl.wire import DecodeError, decode

ROOT = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------------ the parts


def test_the_killer_is_the_43_byte_two_frame_message_and_decodes_to_a_remote_error() -> None:
    assert len(KILLER) == 2 and sum(map(len, KILLER)) == 43
    with pytest.raises(DecodeError):
        decode(KILLER)


def test_every_structured_payload_is_refused_or_decodes_and_nothing_else_escapes() -> None:
    payloads = list(structured_malformed())
    assert len(payloads) > 150
    refused = 0
    for frames in payloads:
        try:
            decode(frames)
        except RemoteProtocolError:
            refused += 1
    assert refused >= len(payloads) - 5  # the rest are valid-looking messages from a stranger


def test_fuzz_messages_are_seeded_and_never_escape_the_decoder() -> None:
    a, b = random.Random(7), random.Random(7)
    for _ in range(500):
        frames = fuzz_message(a)
        assert frames == fuzz_message(b)
        with contextlib.suppress(RemoteProtocolError):  # anything else fails the test
            decode(frames)


def test_identities_are_read_from_a_zmtp_ready_command() -> None:
    ident = bytes(range(1, 17))
    ready = b"\x04\x2f\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER\x08Identity\x00\x00\x00\x10" + ident
    assert identities_in(b"junk" + ready + b"more") == [ident]
    assert identities_in(b"\x08Identity\x00\x00\x00\x00") == []  # an empty id: the server assigns one
    assert identities_in(b"\x08Identity\x00\x00\x00\x10short") == []  # cut off


def test_rejoined_is_the_first_full_round_after_a_short_one() -> None:
    rows = [{"round": r, "participants": p} for r, p in [(1, [0, 1]), (2, [0]), (3, [0]), (4, [0, 1])]]
    assert _rejoined(rows, 2) == 4
    assert _rejoined(rows[:3], 2) is None
    assert _rejoined(rows[:1], 2) is None


def test_quick_plan_is_one_mode_three_runs_and_full_plan_covers_the_eight_attacks() -> None:
    modes, cases = plan(True, [], None)
    assert modes == ["secagg+"] and [c.name for c in cases] == ["strangers", "kills"]
    assert len(cases[0].threads) == 6 and cases[1].action == "kills" and cases[1].extra_rounds == 2
    modes, cases = plan(False, [], None)
    assert modes == ["off", "secagg+"] and len(cases) == 8
    assert [c.extra_rounds for c in cases if c.name == "kill-client"] == [10]


def _row(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "attack": "x",
        "status": "ok",
        "messages_sent": 5,
        "rounds_completed": 4,
        "rounds_expected": 4,
        "every_round_once": True,
        "accuracy_delta": 0.0,
        "peak_rss_mib": 300.0,
        "memory_bound_mib": 1068.0,
        "memory_bounded": True,
        "server_exits": [0],
        "unexpected_server_exits": 0,
        "took_effect": 0,
        "short_rounds": [],
        "killed_clients": 0,
        "ghost_waits": 0,
        "log_per_garbage_byte": 0.001,
        "client_failures": 0,
        "wall_seconds": 1.0,
    }
    return {**row, **over}


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"unexpected_server_exits": 1, "server_exits": [1]}, "exited"),
        ({"rounds_completed": 3}, "3/4 rounds"),
        ({"every_round_once": False}, "each once"),
        ({"took_effect": 2}, "took effect"),
        ({"ghost_waits": 1}, "deadline"),
        ({"memory_bounded": False, "peak_rss_mib": 2000.0}, "over the bound"),
        ({"log_per_garbage_byte": 1.4}, "bytes of server log"),
        ({"status": "timeout"}, "run timeout"),
    ],
)
def test_verdicts_name_each_failure(over: dict[str, object], says: str) -> None:
    assert verdicts([_row()]) == []
    (line,) = verdicts([_row(**over)])
    assert says in line


def test_memory_allowance_is_one_message_held_whole_plus_slack() -> None:
    """The configured total limit plus one frame, or a larger message that libzmq held whole."""
    assert memory_allowance() == (512 + 256 + 32) << 20
    assert memory_allowance(700 << 20) == (512 + 256 + 32) << 20
    assert memory_allowance(1530 << 20) == (1530 + 32) << 20


def test_the_campaign_drives_clipfl_only_through_its_cli_and_wire_format() -> None:
    """An attacker may use the public codec (``clipfl.wire``, ``clipfl.messages``); nothing else of
    clipfl is imported (the test modules aside: errors, to name what the decoder may raise)."""
    for path in sorted((ROOT / "benchmarks" / "faults").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                if name.split(".")[0] == "clipfl":
                    assert name in ("clipfl.wire", "clipfl.messages"), f"{path.name}: {name}"


# ---------------------------------------------------------------------------------- a real run


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_run_past_its_time_limit_is_recorded_and_leaves_no_process(tmp_path: Path) -> None:
    """Six seconds cannot hold a federation's start: the run times out, says so, and every process
    it started (the server and four clients) is gone."""
    spec = FederationSpec(secagg="off", rounds=2)
    raw = asyncio.run(run_case(Case(name="clean"), spec, tmp_path / "r", BUDGETS["quick"], time_limit=6))
    assert raw["status"] == "timeout" and "6 s" in raw["message"]
    assert len(raw["pids"]) == 5 and not any(_alive(pid) for pid in raw["pids"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_campaign_holds_the_bar(tmp_path: Path) -> None:
    out = tmp_path / "faults"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.faults", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    results = json.loads((out / "results.json").read_text())
    (mode,) = results["modes"]
    assert mode["secagg"] == "secagg+"
    rows = {row["attack"]: row for row in mode["rows"]}
    assert set(rows) == {"clean", "strangers", "kills"}
    for row in rows.values():
        assert row["status"] == "ok", (row, done.stderr[-3000:])
        assert row["unexpected_server_exits"] == 0 and row["client_failures"] == 0
        assert row["rounds_completed"] == row["rounds_expected"] and row["every_round_once"]
        assert row["took_effect"] == 0 and row["privileged_replies"] == 0
        assert row["ghost_waits"] == 0
        assert row["memory_bounded"] is True
    strangers = rows["strangers"]
    assert strangers["messages_sent"] > 5000 and strangers["short_rounds"] == []
    assert strangers["accuracy_delta"] == 0.0  # nothing a stranger sent reached the aggregate
    assert strangers["log_per_garbage_byte"] is not None and strangers["log_per_garbage_byte"] < 0.01
    kills = rows["kills"]
    assert kills["server_exits"] == [0]  # the SIGKILLed server is not counted; its successor exited 0
    assert [s["killed"] for s in mode["raw"][2]["servers"]] == [True, False]
    assert kills["rejoined"] is not None  # the restarted client took part again
    assert done.returncode == (1 if results["verdicts"]["secagg+"] else 0)
    assert (out / "report.md").read_text() == render_markdown(results)
    assert results["command"].startswith("python -m benchmarks.faults --quick")
