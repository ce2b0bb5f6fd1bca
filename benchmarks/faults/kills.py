"""Crashes rather than strangers: a client SIGKILLed mid-round, the server SIGKILLed and resumed.

Each is an async action on the ``LiveFederation``; it returns what it did, for the report. The
client comes back as a fresh process (no session token) once the server has had time to notice the
old connection's silence; the server comes back with ``--resume RUN_DIR`` on the same port, and the
clients find it again by themselves (they re-register when it says it does not know them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from benchmarks.faults.federation import LiveFederation

__all__ = ["ASYNC_ATTACKS", "AsyncAttack", "kill_client", "kill_server"]

AsyncAttack = Callable[[LiveFederation], Coroutine[Any, Any, list[str]]]
_MID_ROUND = 0.3  # seconds after a round's event: the next round's clients are training


async def kill_client(fed: LiveFederation, *, after_round: int = 1, client_id: int = 1) -> list[str]:
    """(7) SIGKILL one client just after round ``after_round`` ends, then start it again."""
    await fed.wait_round(after_round)
    if fed.finished.is_set():
        return ["the run ended before the kill"]
    await asyncio.sleep(_MID_ROUND)
    await fed.kill_client(client_id)
    await asyncio.sleep(fed.spec.heartbeat_timeout + 0.5)  # sooner, the old connection still holds the id
    if not fed.finished.is_set():
        await fed.start_client(client_id)
    return [f"client {client_id} SIGKILLed in round {after_round + 1} and restarted"]


async def kill_server(fed: LiveFederation, *, after_round: int = 2) -> list[str]:
    """(8) SIGKILL the server just after round ``after_round`` ends, then resume it from its run dir."""
    await fed.wait_round(after_round)
    if fed.finished.is_set():
        return ["the run ended before the kill"]
    await asyncio.sleep(_MID_ROUND)
    await fed.kill_server()
    await fed.start_server(resume=True)
    return [f"server SIGKILLed in round {after_round + 1} and resumed with --resume"]


async def kill_both(fed: LiveFederation) -> list[str]:
    """(7) then (8) in one run, for the quick variant."""
    notes = await kill_client(fed, after_round=1)
    return notes + await kill_server(fed, after_round=max(2, fed.spec.rounds - 2))


ASYNC_ATTACKS: dict[str, AsyncAttack] = {
    "kill-client": kill_client,
    "kill-server": kill_server,
    "kills": kill_both,
}
