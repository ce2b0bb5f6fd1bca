"""The stranger's attacks of issue 14, each a function run in a worker thread against a live server.

Each one records what it sent and what it got back in a ``Tally``; what the attack did to the
federation (rounds, accuracy, memory, log growth, ghost waits) is read from the server's side by the
campaign. An attack starts when the server listens, before any client registers, and ends when it has
spent its budget or the server has exited.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import zmq

from benchmarks.faults.payloads import fuzz_message, poisoned_fit_res, register, structured_malformed
from benchmarks.faults.sniff import IdentitySniffer
from benchmarks.faults.stranger import HEARTBEAT, AttackContext, Stranger, Tally

__all__ = ["THREAD_ATTACKS", "ThreadAttack"]

ThreadAttack = Callable[[AttackContext, Tally], None]
MIB = 1 << 20


def malformed(ctx: AttackContext, tally: Tally) -> None:
    """(1) The 43-byte killer and ~170 structured malformed messages, then bulk random fuzz during
    training, from a few connections that never register."""
    ctx.release_clients.set()
    socks = [Stranger(ctx, tally) for _ in range(4)]
    try:
        for rep in range(ctx.budget["structured_reps"]):
            for i, frames in enumerate(structured_malformed()):
                socks[(rep + i) % len(socks)].send(frames)
            if not ctx.sleep(0.05):
                return
        ctx.wait_started()
        sent = 0
        while sent < ctx.budget["fuzz"] and not ctx.stop.is_set():
            for _ in range(200):
                socks[sent % len(socks)].send(fuzz_message(ctx.rng))
                sent += 1
            for s in socks:
                s.drain()
            ctx.sleep(0.01)
    finally:
        for s in socks:
            s.close()


def impersonate(ctx: AttackContext, tally: Tally) -> None:
    """(2) Take over a registered client's connection: with routing ids read off the loopback wire
    (ZMTP's READY carries them in the clear without CurveZMQ), then with guessed ones."""
    sniffer = IdentitySniffer(ctx.port)
    sniffing = sniffer.start()
    if not sniffing:
        tally.notes.append(f"sniffing skipped: {sniffer.error}")
    ctx.release_clients.set()
    try:
        if not ctx.wait_started():
            return
        ids = sniffer.wait_for(ctx.clients, 5.0) if sniffing else []
        tally.notes.append(f"{len(ids)} client routing ids read off the wire")
        thieves = [Stranger(ctx, tally, routing_id=i) for i in ids]
        for _ in range(ctx.budget["impersonations"]):
            for thief in thieves:
                thief.send([HEARTBEAT])
                thief.send(poisoned_fit_res(ctx.round_of() + 1))
                thief.drain()
            if not ctx.sleep(0.05):
                break
        for thief in thieves:
            thief.drain(0.2)
            thief.close()
        for _ in range(ctx.budget["guesses"]):
            if ctx.stop.is_set():
                break
            guess = bytes([1 + ctx.rng.randrange(255)]) + ctx.rng.randbytes(15)
            s = Stranger(ctx, tally, routing_id=guess)
            s.send(poisoned_fit_res(ctx.round_of() + 1))
            s.drain(0.01)
            s.close()
    finally:
        sniffer.stop()


def evict(ctx: AttackContext, tally: Tally) -> None:
    """(3) Claim 10**9 samples for a free id before the clients come; then, during training, register
    each connected client's id again without its session token, and with a forged one, repeatedly."""
    claim = Stranger(ctx, tally)
    claim.send(register(ctx.clients - 1, num_samples=10**9))
    claim.drain(1.0)
    claim.close()
    ctx.release_clients.set()
    if not ctx.wait_started():
        return
    for attempt in range(ctx.budget["evictions"]):
        for client_id in range(ctx.clients):
            token = secrets.token_bytes(32) if attempt % 2 else None
            s = Stranger(ctx, tally)
            s.send(register(client_id, token=token))
            s.drain(0.02)
            s.close()
        if not ctx.sleep(0.02):
            break


def ghost(ctx: AttackContext, tally: Tally) -> None:
    """(4) Before the clients come, one connection registers under one free id then another (twice,
    on two connections) and goes silent; the clients start once the server has forgotten it. With
    the old bug, an id's session kept pointing at a connection that answers to another name."""
    setup = Tally()  # welcomes for free ids are expected here: anyone may join without CurveZMQ
    conns = [Stranger(ctx, setup), Stranger(ctx, setup)]
    n = ctx.clients
    for conn, (first, second) in zip(conns, [(n - 1, n - 2), (n - 1, n - 3)], strict=True):
        conn.send(register(first))
        conn.drain(0.5)
        conn.send(register(second))
        conn.drain(0.5)
    for conn in conns:
        conn.close()
    tally.sent, tally.sent_bytes = setup.sent, setup.sent_bytes
    tally.notes.append(f"setup replies (free ids): {dict(setup.replies)}")
    ctx.sleep(ctx.budget["forget_seconds"])
    ctx.release_clients.set()
    if not ctx.wait_started():
        return
    for _ in range(ctx.budget["ghost_reps"]):  # during training: rebinding onto held ids must fail
        s = Stranger(ctx, tally)
        s.send(register(0))
        s.drain(0.05)
        s.send(register(1))
        s.drain(0.05)
        s.close()
        if not ctx.sleep(0.2):
            break


def oversized(ctx: AttackContext, tally: Tally) -> None:
    """(5) Messages over the limits: many tiny frames, a total over 512 MiB in frames under the frame
    cap, one frame over the cap; each from a fresh connection, before and during training. The note
    of each says how far the server's resident set rose while it arrived."""
    ctx.release_clients.set()
    frame = bytearray(min(ctx.budget["frame_mib"], 255) * MIB)
    plans = [("frames", ctx.budget["many_frames"])]
    plans += [("total", ctx.budget["total_mib"]), ("single", 300)]
    if ctx.budget["huge_mib"]:
        plans.append(("total", ctx.budget["huge_mib"]))
    for index, (kind, size) in enumerate(plans):
        if index == 1 and not ctx.wait_started():
            return
        before = ctx.server_rss() or 0
        s = Stranger(ctx, tally)
        s.sock.setsockopt(zmq.SNDTIMEO, 60_000)
        if kind == "frames":
            s.send([b"x"] * size, wait=60)
            what = f"{size} frames of 1 byte"
        elif kind == "total":
            count = -(-size * MIB // len(frame))
            s.send([memoryview(frame)] * count, copy=False, wait=60)
            what = f"{count} frames of {len(frame) // MIB} MiB ({count * len(frame) // MIB} MiB)"
        else:
            s.send([bytes(size * MIB)], copy=False, wait=60)
            what = f"one frame of {size} MiB"
        peak = before
        for _ in range(40):  # the server reads and drops it: watch its resident set meanwhile
            peak = max(peak, ctx.server_rss() or 0)
            if not ctx.sleep(0.05):
                break
        s.drain()
        s.close()
        tally.notes.append(f"{what}: server RSS +{(peak - before) // MIB} MiB")
        if not ctx.sleep(0.5):
            return


def log_flood(ctx: AttackContext, tally: Tally) -> None:
    """(6) Garbage of 1 KiB to 64 KiB per message from many connections: the server's log must grow by
    a small, bounded fraction of it (issue 14: 25 MB of garbage once made 100 MB of log)."""
    ctx.release_clients.set()
    socks = [Stranger(ctx, tally) for _ in range(ctx.budget["flood_peers"])]
    target = ctx.budget["flood_mib"] * MIB
    try:
        ctx.wait_started()
        i = 0
        while tally.sent_bytes < target and not ctx.stop.is_set():
            size = ctx.rng.randrange(1024, 64 * 1024)
            socks[i % len(socks)].send([b"\x92" + ctx.rng.randbytes(size)])
            i += 1
            if i % 100 == 0:
                ctx.sleep(0.01)
    finally:
        for s in socks:
            s.close()


THREAD_ATTACKS: dict[str, ThreadAttack] = {
    "malformed": malformed,
    "impersonate": impersonate,
    "evict": evict,
    "ghost": ghost,
    "oversized": oversized,
    "log-flood": log_flood,
}
