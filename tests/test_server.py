"""The server driver over real ZeroMQ sockets: faults and bad input never hang or corrupt a round."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgpack
import numpy as np
import pytest
import zmq
import zmq.asyncio

from clipfl.client import Client
from clipfl.config import ClientConfig, RunConfig
from clipfl.messages import FitIns, FitRes, NotRegistered, Register, RoundStart, Welcome
from clipfl.server import Server
from clipfl.trainer import client_data
from clipfl.wire import PROTOCOL_VERSION, decode, encode
from transports.zmq import HEARTBEAT, ZmqClientTransport, ZmqServerTransport

FAST = {"heartbeat_interval": 0.1, "heartbeat_timeout": 2.0}


@contextlib.asynccontextmanager
async def running_server(config: RunConfig) -> AsyncIterator[tuple[Server, asyncio.Task]]:
    transport = ZmqServerTransport(**FAST)
    server = Server(config, transport)
    async with transport:
        address = await transport.bind("tcp://127.0.0.1:0")
        server.address = address
        task = asyncio.create_task(server.run())
        try:
            yield server, task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _client(config: RunConfig, server: Server, client_id: int) -> Client:
    cc = ClientConfig(client_id=client_id, server=server.address, heartbeat_timeout=2.0, connect_timeout=10)
    return Client(config, cc, client_data(config, client_id), lambda: ZmqClientTransport(**FAST))


class RawPeer:
    """A hand-driven DEALER socket: says exactly what a test wants, nothing more."""

    def __init__(self, ctx: zmq.asyncio.Context, address: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)

    async def send(self, frames: list) -> None:
        await self.sock.send_multipart(frames)

    async def recv_message(self):
        while True:
            frames = await self.sock.recv_multipart()
            if frames == [HEARTBEAT]:
                continue
            msg = decode(frames)
            if not isinstance(msg, NotRegistered):  # every new connection is asked to register first
                return msg

    async def heartbeat(self) -> None:
        await self.sock.send(HEARTBEAT)


async def test_garbage_from_a_raw_socket_does_not_disturb_the_round() -> None:
    config = RunConfig(clients=2, rounds=2, round_timeout=30, registration_timeout=30)
    ctx = zmq.asyncio.Context()
    async with running_server(config) as (server, task):
        raw = RawPeer(ctx, server.address)
        clients = [_client(config, server, i) for i in range(2)]
        runs = [asyncio.create_task(c.run()) for c in clients]
        garbage = [
            [b"\xc1\xc1\xc1"],
            [b""],
            [msgpack.packb({"v": PROTOCOL_VERSION, "t": "fit_res", "f": {}, "x": []})],
            [msgpack.packb({"v": 7, "t": "register", "f": {}, "x": []})],
            encode(
                FitRes(
                    round=1,
                    delta={"w": np.ones(3, np.float32)},
                    num_samples=1,
                    metrics={},
                    trained_units=np.ones(1, bool),
                )
            ),
            [b"\x00" * 100, b"\xff" * 1000],
            # issue 14's 43-byte killer: a dtype sent as a msgpack list once ended the server
            [
                msgpack.packb(
                    {"v": PROTOCOL_VERSION, "t": "receipt", "f": {"round": 1}, "x": [["a", None, ["x"], []]]}
                ),
                b"\x00" * 8,
            ],
            [b""] * 600,  # more frames than any message may have: refused by the transport as they arrive
        ]
        async with asyncio.timeout(60):
            while not task.done():
                for frames in garbage:
                    await raw.send(frames)
                await asyncio.sleep(0.01)
        summary = task.result()
        assert summary["rounds"] == 2
        assert all(r.participants == [0, 1] for r in server.records)
        assert server.dropped_messages >= len(garbage)
        assert await asyncio.gather(*runs) == [2, 2]
    raw.sock.close()
    ctx.term()


async def test_a_client_that_never_answers_does_not_block_the_round() -> None:
    config = RunConfig(clients=2, rounds=2, round_timeout=3, registration_timeout=30)
    ctx = zmq.asyncio.Context()
    async with running_server(config) as (server, task):
        mute = RawPeer(ctx, server.address)
        await mute.send(encode(Register(client_id=1, num_samples=50, dataset="digits")))
        assert isinstance(await mute.recv_message(), Welcome)
        worker = asyncio.create_task(_client(config, server, 0).run())

        async def keep_alive() -> None:  # alive for the transport, silent for the protocol
            while True:
                await mute.heartbeat()
                await asyncio.sleep(0.1)

        beating = asyncio.create_task(keep_alive())
        async with asyncio.timeout(60):
            summary = await task
        beating.cancel()
        assert summary["rounds"] == 2
        for record in server.records:
            assert record.participants == [0]
            assert record.failures == {1: "missed the round deadline"}
        await worker
    mute.sock.close()
    ctx.term()


async def test_bad_updates_fail_their_sender_and_leave_the_sum_to_the_others() -> None:
    config = RunConfig(clients=2, rounds=1, round_timeout=30, registration_timeout=30)
    ctx = zmq.asyncio.Context()
    async with running_server(config) as (server, task):
        liar = RawPeer(ctx, server.address)
        await liar.send(encode(Register(client_id=1, num_samples=50, dataset="digits")))
        assert isinstance(await liar.recv_message(), Welcome)
        honest = asyncio.create_task(_client(config, server, 0).run())
        before = server.weights.copy()
        async with asyncio.timeout(60):
            ins = await liar.recv_message()
            while not isinstance(ins, FitIns):
                assert isinstance(ins, RoundStart)
                ins = await liar.recv_message()
            wrong = {
                k: np.full((*v.shape[:-1], v.shape[-1] + 1) if v.ndim else (2,), 1e6, np.float32)
                for k, v in ins.weights.items()
            }
            await liar.send(
                encode(
                    FitRes(round=1, delta=wrong, num_samples=50, metrics={}, trained_units=np.ones(1, bool))
                )
            )
            summary = await task
        assert summary["rounds"] == 1
        record = server.records[0]
        assert record.participants == [0]
        assert "does not fit the model" in record.failures[1]
        assert np.abs(server.weights - before).max() < 10  # the 1e6 values never reached the model
        await honest
    liar.sock.close()
    ctx.term()


async def test_registration_with_a_wrong_id_or_dataset_is_refused() -> None:
    config = RunConfig(clients=1, rounds=1, registration_timeout=30)
    ctx = zmq.asyncio.Context()
    async with running_server(config) as (server, _task):
        peer = RawPeer(ctx, server.address)
        await peer.send(encode(Register(client_id=5, num_samples=10, dataset="digits")))
        reject = await asyncio.wait_for(peer.recv_message(), 10)
        assert "outside 0..0" in reject.reason
        await peer.send(encode(Register(client_id=0, num_samples=10, dataset="cifar10")))
        reject = await asyncio.wait_for(peer.recv_message(), 10)
        assert "'cifar10'" in reject.reason
        assert len(server.sessions) == 0
    peer.sock.close()
    ctx.term()


@pytest.mark.parametrize(
    "bad",
    [
        {"clients": 0},
        {"rounds": -1},
        {"secagg": "maybe"},
        {"momentum": 1.5},
        {"mitigation": "fluid", "secagg": "secagg"},
    ],
)
def test_invalid_configuration_is_one_clear_error(bad: dict) -> None:
    from clipfl.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        RunConfig(**bad)
    assert "\n" not in str(info.value)
