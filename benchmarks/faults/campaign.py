"""The campaign: per mode, one clean run (the baseline), then one run under each attack, and a row each.

A run is bounded in time (``time_limit``); whatever happens (an attack that raises, a timeout, Ctrl-C)
every process is stopped and the attack threads are told to stop before the next run begins. The
row of a run is computed from the server's side only: its run directory, its log, its exit status,
its memory; plus what the attacker sent and received.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from benchmarks.faults.attacks import THREAD_ATTACKS
from benchmarks.faults.federation import FederationSpec, LiveFederation
from benchmarks.faults.kills import ASYNC_ATTACKS
from benchmarks.faults.stranger import AttackContext, Tally
from clipfl.wire import Limits

__all__ = ["Case", "memory_allowance", "run_case", "run_mode"]

MIB = 1 << 20
Say = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One run: which stranger attacks run concurrently (threads) and which crash action, if any."""

    name: str
    threads: tuple[str, ...] = ()
    action: str | None = None
    extra_rounds: int = 0  # more rounds than the clean run, so that a restarted client can rejoin

    @property
    def strangers(self) -> bool:
        return bool(self.threads)


MEMORY_SLACK = 32 * MIB
"""The allocator's and the attacks' own bookkeeping on top of the messages held (100,000 one-byte
frames measured +6 MiB), so that the bound does not fail on a few pages."""


def memory_allowance(largest_message: int = 0) -> int:
    """What the attacks may add to the server's peak memory: one refused message, held whole, either
    up to the configured total limit plus the frame that crosses it, or the largest message one
    connection sent, if larger. libzmq delivers a multipart message atomically, so it has buffered
    all of it before the server can read and refuse the first frame, and no ZeroMQ option caps the
    number of frames (``transports.zmq``): without CurveZMQ, a stranger sets that size. Anything
    beyond (a second copy, growth over thousands of messages) is over the bound."""
    limits = Limits()
    configured = limits.max_total_bytes + max(limits.max_tensor_bytes, limits.max_envelope_bytes)
    return max(configured, largest_message) + MEMORY_SLACK


@dataclass(slots=True)
class _Threads:
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _start_threads(
    case: Case, fed: LiveFederation, budget: dict[str, int], tally: Tally, seed: int
) -> tuple[_Threads, list[threading.Event], zmq.Context[Any]]:
    group = _Threads()
    zctx: zmq.Context[Any] = zmq.Context()
    releases = []
    for index, name in enumerate(case.threads):
        release = threading.Event()
        releases.append(release)
        ctx = AttackContext(
            address=fed.address,
            port=fed.port,
            clients=fed.spec.clients,
            is_started=fed.started.is_set,
            round_of=lambda: max(fed.seen.rounds_seen, default=0),
            stop=group.stop,
            release_clients=release,
            budget=budget,
            rng=random.Random(seed * 1000 + index),
            zmq_context=zctx,
            server_rss=fed.server_rss,
        )

        def body(fn: Any = THREAD_ATTACKS[name], ctx: AttackContext = ctx, name: str = name) -> None:
            try:
                fn(ctx, tally)
            except Exception as exc:  # reported in the row: an attack that breaks is not a pass
                group.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            finally:
                ctx.release_clients.set()

        thread = threading.Thread(target=body, name=f"attack-{name}", daemon=True)
        thread.start()
        group.threads.append(thread)
    return group, releases, zctx


async def _stop_threads(group: _Threads, zctx: zmq.Context[Any]) -> None:
    group.stop.set()
    for thread in group.threads:
        await asyncio.to_thread(thread.join, 30)
        if thread.is_alive():
            group.errors.append(f"{thread.name} did not stop within 30 s")
    zctx.destroy(linger=0)


async def run_case(
    case: Case, spec: FederationSpec, out: Path, budget: dict[str, int], time_limit: float
) -> dict[str, Any]:
    """Run one federation under ``case``; return its raw observations."""
    fed = LiveFederation(dataclasses.replace(spec, rounds=spec.rounds + case.extra_rounds), out)
    tally = Tally()
    started = time.monotonic()
    status, message, notes = "ok", "", []
    group: _Threads | None = None
    zctx: zmq.Context[Any] | None = None
    try:
        async with asyncio.timeout(time_limit):
            await fed.start_server(wait=case.strangers)
            if not case.strangers:  # nothing to set up first: the clients start with the server
                await fed.start_clients()
                await fed.listening.wait()
            if fed.seen.address is None:
                raise RuntimeError("the server exited before it listened")
            if case.strangers:
                group, releases, zctx = _start_threads(case, fed, budget, tally, spec.seed)
                for release in releases:
                    await asyncio.to_thread(release.wait, 60)
                await fed.start_clients()
            action: asyncio.Task[list[str]] | None = None
            if case.action is not None:
                action = asyncio.create_task(ASYNC_ATTACKS[case.action](fed))
            await fed.wait_finished()
            if action is not None:
                notes += await action
    except TimeoutError:
        status, message = "timeout", f"the run did not finish within {time_limit:g} s"
    except Exception as exc:
        status, message = "error", f"{type(exc).__name__}: {exc}"
    finally:
        if group is not None and zctx is not None:
            await _stop_threads(group, zctx)
        await fed.stop()
    if group is not None:
        notes += group.errors
        if group.errors and status == "ok":
            status, message = "error", "an attack failed: " + "; ".join(group.errors)
    return {
        "case": case.name,
        "status": status,
        "message": message,
        "wall_seconds": round(time.monotonic() - started, 1),
        "attacker": tally.as_dict(),
        "notes": notes + tally.notes,
        "metrics": fed.metrics(),
        "servers": [
            {"returncode": s.returncode, "killed": s.killed, "peak_rss": s.peak_rss} for s in fed.servers
        ],
        "clients": {str(k): v for k, v in fed.client_exits().items()},
        "pids": [s.proc.pid for s in fed.servers] + [p.pid for ps in fed.clients.values() for p in ps],
        "log_bytes": fed.server_log_bytes(),
        "summary": fed.seen.summary,
    }


def _row(
    raw: dict[str, Any], case: Case, spec: FederationSpec, clean: dict[str, Any] | None
) -> dict[str, Any]:
    spec = dataclasses.replace(spec, rounds=spec.rounds + case.extra_rounds)
    rows = raw["metrics"]
    rounds = [int(r["round"]) for r in rows]
    short = [r["round"] for r in rows if len(r.get("participants", [])) < spec.clients]
    ghost = [r["round"] for r in rows if float(r.get("round_seconds", 0)) >= spec.round_timeout - 1.0]
    final = rows[-1]["test_accuracy"] if rows else None
    peak = max((s["peak_rss"] for s in raw["servers"]), default=0)
    exits = [s["returncode"] for s in raw["servers"] if not s["killed"]]
    killed_clients = 1 if case.action in ("kill-client", "kills") else 0
    client_failures = sum(1 for codes in raw["clients"].values() for c in codes if c not in (0, -9))
    sent_bytes = raw["attacker"]["sent_bytes"]
    row: dict[str, Any] = {
        "attack": case.name,
        "status": raw["status"],
        "messages_sent": raw["attacker"]["sent"],
        "bytes_sent": sent_bytes,
        "rounds_completed": len(set(rounds)),
        "rounds_expected": spec.rounds,
        "every_round_once": sorted(rounds) == list(range(1, spec.rounds + 1)),
        "final_accuracy": final,
        "accuracy_by_round": {int(r["round"]): r["test_accuracy"] for r in rows},
        "rejoined": _rejoined(rows, spec.clients),
        "accuracy_delta": None,
        "peak_rss_mib": round(peak / MIB, 1),
        "rss_delta_mib": None,
        "server_exits": exits,
        "unexpected_server_exits": sum(1 for c in exits if c != 0),
        "client_failures": client_failures,
        "killed_clients": killed_clients,
        "privileged_replies": raw["attacker"]["privileged_replies"],
        "short_rounds": short,
        "took_effect": raw["attacker"]["privileged_replies"] + (len(short) if case.strangers else 0),
        "ghost_waits": len(ghost),
        "log_bytes": raw["log_bytes"],
        "log_per_garbage_byte": None,
        "wall_seconds": raw["wall_seconds"],
    }
    if clean is not None:
        last = clean["rounds_expected"]  # compared at the clean run's last round (kill-client runs longer)
        here, there = row["accuracy_by_round"].get(last), clean["accuracy_by_round"].get(last)
        if here is not None and there is not None:
            row["accuracy_delta"] = round(here - there, 4)
        row["rss_delta_mib"] = round(row["peak_rss_mib"] - clean["peak_rss_mib"], 1)
        allowance = memory_allowance(raw["attacker"]["largest_message_bytes"])
        row["memory_bound_mib"] = round(clean["peak_rss_mib"] + allowance / MIB, 1)
        row["memory_bounded"] = row["peak_rss_mib"] <= row["memory_bound_mib"]
        if sent_bytes:
            extra = max(0, raw["log_bytes"] - clean["log_bytes"])
            row["log_per_garbage_byte"] = round(extra / sent_bytes, 5)
    return row


def _rejoined(rows: list[dict[str, Any]], clients: int) -> int | None:
    """The first round with every client again after a short one (None: never short, or never back)."""
    short = False
    for r in rows:
        if len(r.get("participants", [])) < clients:
            short = True
        elif short:
            return int(r["round"])
    return None


async def run_mode(
    secagg: str,
    cases: list[Case],
    *,
    spec: FederationSpec,
    out: Path,
    budget: dict[str, int],
    time_limit: float,
    say: Say,
) -> dict[str, Any]:
    """The clean run, then each case, in one secure-aggregation mode; rows and raw observations."""
    rows, raws = [], []
    clean_row: dict[str, Any] | None = None
    for case in [Case(name="clean"), *cases]:
        say(f"[{secagg}] {case.name} ...")
        raw = await run_case(case, spec, out / secagg / case.name, budget, time_limit)
        row = _row(raw, case, spec, clean_row)
        if case.name == "clean":
            clean_row = row
            bound = round(row["peak_rss_mib"] + memory_allowance() / MIB, 1)
            row.update(accuracy_delta=0.0, rss_delta_mib=0.0, memory_bound_mib=bound, memory_bounded=True)
        rows.append(row)
        raws.append(raw)
        say(
            f"[{secagg}] {case.name}: {raw['status']}, "
            f"{row['rounds_completed']}/{row['rounds_expected']} rounds, "
            f"{row['messages_sent']} messages sent, peak RSS {row['peak_rss_mib']} MiB, "
            f"{raw['wall_seconds']} s"
        )
        with contextlib.suppress(Exception):
            (out / secagg / case.name / "raw.json").write_text(_dumps(raw))
    return {"secagg": secagg, "rows": rows, "raw": raws}


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, default=str)
