"""Connections bound to sessions: no stranger evicts, impersonates or ghosts a registered client, a
claim above the weight cap is refused, and no message ends the server (issue: a server that no
stranger can stop, steer or starve). The real server driver over the in-memory transport."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from clipfl import Client, ClientConfig, RunConfig, Server, federation_data
from clipfl.engine.update import ClientInfo
from clipfl.messages import NotRegistered, Register, Reject, Welcome
from clipfl.server.sessions import Sessions
from clipfl.wire import decode, encode
from transports.memory import MemoryClientTransport, MemoryHub


def test_a_live_id_moves_to_another_connection_only_with_its_token() -> None:
    sessions = Sessions()
    sessions.bind(ClientInfo(0, 10), b"a")
    token = sessions.token_of(0)
    assert sessions.may_take(0, b"a", None, None)  # the same connection
    assert not sessions.may_take(0, b"b", None, None)
    assert not sessions.may_take(0, b"b", bytes(32), None)
    assert sessions.may_take(0, b"b", token, None)
    sessions.unbind(b"a")
    assert sessions.may_take(0, b"b", None, None)  # no live connection holds it any more


def test_one_curve_key_one_client_id() -> None:
    """Under CurveZMQ an admitted key may not take another's id, nor hold several (Sybils)."""
    sessions = Sessions()
    assert sessions.key_conflict(0, "alice") is None
    sessions.bind(ClientInfo(0, 10), b"a", "alice")
    assert sessions.key_conflict(0, "alice") is None  # the same client again
    assert "registered as client 0" in (sessions.key_conflict(1, "alice") or "")
    assert "another CurveZMQ key" in (sessions.key_conflict(0, "mallory") or "")
    assert sessions.key_conflict(1, "mallory") is None
    assert sessions.may_take(0, b"b", None, "alice")  # alice reconnecting: her key proves it
    assert not sessions.may_take(0, b"b", None, "mallory")


def test_rebinding_a_connection_to_a_new_id_clears_the_old_session() -> None:
    """The ghost: a connection registered as 0 then as 1 left 0 pointing at a peer nobody tracked."""
    sessions = Sessions()
    sessions.bind(ClientInfo(0, 10), b"a")
    assert sessions.bind(ClientInfo(1, 10), b"a") == [0]
    assert sessions.peer_of(0) is None and sessions.client_of(b"a") == 1
    assert [c.client_id for c in sessions.connected()] == [1]


class Raw:
    """A hand-driven in-memory connection that says exactly what a test wants."""

    def __init__(self, transport: MemoryClientTransport) -> None:
        self.t = transport

    async def send(self, msg: object) -> None:
        await self.t.send(encode(msg))

    async def answer(self) -> object:
        while True:
            msg = decode(await asyncio.wait_for(self.t.recv(), 10))
            if not isinstance(msg, NotRegistered):
                return msg


@contextlib.asynccontextmanager
async def federation(config: RunConfig) -> AsyncIterator[tuple[MemoryHub, Server, asyncio.Task]]:
    hub = MemoryHub()
    transport = hub.server()
    server = Server(config, transport)
    async with transport:
        server.address = await transport.bind("mem://s")
        task = asyncio.create_task(server.run())
        try:
            yield hub, server, task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _client(config: RunConfig, hub: MemoryHub, i: int) -> Client:
    share = federation_data(config, [i])[i]
    return Client(config, ClientConfig(client_id=i, server="mem://s"), share, hub.client)


async def test_a_stranger_registering_a_connected_clients_id_is_refused_and_evicts_nobody() -> None:
    config = RunConfig(clients=2, rounds=3, registration_timeout=30)
    async with federation(config) as (hub, server, task):
        runs = [asyncio.create_task(_client(config, hub, i).run()) for i in range(2)]
        await asyncio.wait_for(server._enough_clients.wait(), 30)
        stranger = Raw(hub.client())
        await stranger.t.connect("mem://s")
        for _ in range(3):
            await stranger.send(Register(client_id=0, num_samples=10, dataset="digits"))
            answer = await stranger.answer()
            assert isinstance(answer, Reject) and "session token" in answer.reason and answer.retryable
        await stranger.send(Register(client_id=0, num_samples=10, dataset="digits", token=bytes(32)))
        assert isinstance(await stranger.answer(), Reject)
        assert server.dropped_messages >= 4  # refusals go through the rate-limited drop log
        summary = await asyncio.wait_for(task, 60)
        assert [len(r.participants) for r in server.records] == [2, 2, 2]
        assert await asyncio.gather(*runs) == [3, 3]
        assert summary["rounds"] == 3


async def test_a_claim_above_the_weight_cap_is_refused() -> None:
    config = RunConfig(clients=1, rounds=1, max_weight=1000, registration_timeout=30)
    async with federation(config) as (hub, _server, _task):
        greedy = Raw(hub.client())
        await greedy.t.connect("mem://s")
        await greedy.send(Register(client_id=0, num_samples=10**9, dataset="digits"))
        answer = await greedy.answer()
        assert isinstance(answer, Reject) and "cap of 1000" in answer.reason
        await greedy.send(Register(client_id=0, num_samples=1000, dataset="digits"))
        assert isinstance(await greedy.answer(), Welcome)


async def test_a_message_that_raises_inside_the_server_fails_one_peer_not_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = RunConfig(clients=2, rounds=2, registration_timeout=30)
    async with federation(config) as (hub, server, task):
        original = server._on_frames
        calls = 0

        async def flaky(peer: bytes, frames: list, credential: str | None = None) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise TypeError("unhashable type: 'list'")  # what a total decoder must never let out
            await original(peer, frames, credential)

        monkeypatch.setattr(server, "_on_frames", flaky)
        runs = [asyncio.create_task(_client(config, hub, i).run()) for i in range(2)]
        summary = await asyncio.wait_for(task, 60)
        await asyncio.gather(*runs)
        assert summary["rounds"] == 2 and server.dropped_messages >= 1
