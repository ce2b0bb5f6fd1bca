"""CurveZMQ admission and encryption (issue 7, item 3), over real ZeroMQ sockets on loopback.

A client whose public key is in the server's allow-list talks as usual; any other client (unknown
key, no CURVE at all, or the wrong server key) cannot get a single message through: the server
transport never reports it, so the server cannot allocate anything for it; the refusal is logged.
A TCP relay between client and server checks that the bytes on the wire are not the plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zmq

import transports.curve as curve_mod
from clipfl import keys
from transports.base import PeerJoined, Received, ServerEvent
from transports.curve import AllowList, CurveClient, CurveKeyPair, CurveServer, load_public_key
from transports.errors import ConnectionLost, TransportConfigError
from transports.zmq import ZmqClientTransport, ZmqServerTransport

FAST: dict[str, Any] = {"heartbeat_interval": 0.05, "heartbeat_timeout": 0.5}


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """server/ (its pair), allowed/ (alice's public key), clients/ (alice's and mallory's pairs)."""
    assert keys.main(["server", str(tmp_path / "server")]) == 0
    for name in ("alice", "mallory"):
        assert keys.main(["client", str(tmp_path / "clients"), name]) == 0
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "alice.key").write_bytes((tmp_path / "clients" / "alice.key").read_bytes())
    return tmp_path


def _server(pki: Path) -> ZmqServerTransport:
    return ZmqServerTransport(
        **FAST, curve=CurveServer.from_files(pki / "server" / "server.key_secret", pki / "allowed")
    )


def _client(pki: Path, name: str) -> ZmqClientTransport:
    curve = CurveClient.from_files(pki / "clients" / f"{name}.key_secret", pki / "server" / "server.key")
    return ZmqClientTransport(**FAST, identity=name.encode(), curve=curve)


async def _events_until(server: ZmqServerTransport, frame: bytes, linger: float) -> list[ServerEvent]:
    """Collect server events until a message ``frame`` arrives, then for ``linger`` seconds more."""
    events: list[ServerEvent] = []
    while not any(isinstance(e, Received) and bytes(e.frames[0]) == frame for e in events):
        events.append(await server.recv())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(linger):
            while True:
                events.append(await server.recv())
    return events


# -------------------------------------------------------------------------------------------- keys


def test_keys_cli_writes_certificates_and_never_replaces_one_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "keys"
    assert keys.main(["server", str(folder)]) == 0
    public, secret = folder / "server.key", folder / "server.key_secret"
    pair = CurveKeyPair.load(secret)
    assert load_public_key(public) == pair.public and len(pair.public) == len(pair.secret) == 40
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "server.key_secret" in capsys.readouterr().out
    assert keys.main(["server", str(folder)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert CurveKeyPair.load(secret) == pair
    assert keys.main(["server", str(folder), "--force"]) == 0
    assert CurveKeyPair.load(secret).public != pair.public
    assert keys.main(["client", str(folder), "../escape"]) == 2
    assert "secret=<hidden>" in repr(pair) and pair.secret.decode() not in repr(pair)


def test_a_public_certificate_is_not_accepted_as_a_key_pair(pki: Path) -> None:
    with pytest.raises(TransportConfigError, match="only a public key"):
        CurveKeyPair.load(pki / "server" / "server.key")
    (pki / "junk.key").write_text("not a certificate\n")
    with pytest.raises(TransportConfigError):
        load_public_key(pki / "junk.key")
    with pytest.raises(TransportConfigError, match="not a directory"):
        CurveServer.from_files(pki / "server" / "server.key_secret", pki / "missing")


def test_allow_list_logs_each_refused_key_once_within_a_bound(
    pki: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="transports.curve")
    allow = AllowList(pki / "allowed")
    alice = load_public_key(pki / "clients" / "alice.key")
    mallory = load_public_key(pki / "clients" / "mallory.key")
    assert len(allow) == 1 and alice in allow
    assert allow.check(alice) is True
    assert [allow.check(mallory, "127.0.0.1") for _ in range(3)] == [False, False, False]
    expected = f"refused CurveZMQ client key {mallory.decode()} from 127.0.0.1: not in the allow-list"
    assert [r.getMessage() for r in caplog.records] == [f"{expected} {pki / 'allowed'}"]
    assert allow.refused == 3
    (pki / "allowed" / "mallory.key").write_bytes((pki / "clients" / "mallory.key").read_bytes())
    assert allow.reload() == 2 and allow.check(mallory) is True

    monkeypatch.setattr(curve_mod, "MAX_REMEMBERED_REFUSALS", 2)
    bounded = AllowList(pki / "clients")  # alice and mallory
    caplog.clear()
    for i in range(10):
        bounded.check(f"{i:040d}".encode())
    assert len(caplog.records) == 3 and "only counted" in caplog.records[-1].getMessage()
    assert bounded.refused == 10 and len(bounded._logged) == 3


# --------------------------------------------------------------------------------- real sockets


async def test_an_allowed_client_exchanges_messages(pki: Path) -> None:
    async with _server(pki) as server, _client(pki, "alice") as alice:
        await alice.connect(await server.bind("tcp://127.0.0.1:0"))
        async with asyncio.timeout(20):
            await alice.send([b"hello", b"from alice"])
            events = await _events_until(server, b"hello", 0)
            got = events[-1]
            assert isinstance(got, Received) and got.peer == b"alice"
            assert [bytes(f) for f in got.frames] == [b"hello", b"from alice"]
            alice_key = load_public_key(pki / "clients" / "alice.key")
            assert got.credential is not None and got.credential.encode() == alice_key  # the ZAP User-Id
            await server.send(b"alice", [b"welcome"])
            assert [bytes(f) for f in await alice.recv()] == [b"welcome"]


@pytest.mark.parametrize("intruder_kind", ["unknown key", "no curve", "wrong server key"])
async def test_a_client_without_an_allowed_key_gets_nothing_through(
    pki: Path, intruder_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="transports.curve")
    keys.main(["server", str(pki / "other")])
    async with _server(pki) as server:
        address = await server.bind("tcp://127.0.0.1:0")
        if intruder_kind == "unknown key":
            intruder = _client(pki, "mallory")
        elif intruder_kind == "no curve":
            intruder = ZmqClientTransport(**FAST, identity=b"mallory")
        else:  # alice's allowed pair, but the public key of some other server
            wrong = CurveClient(
                CurveKeyPair.load(pki / "clients" / "alice.key_secret"),
                load_public_key(pki / "other" / "server.key"),
            )
            intruder = ZmqClientTransport(**FAST, identity=b"mallory", curve=wrong)
        async with intruder, _client(pki, "alice") as alice, asyncio.timeout(20):
            await intruder.connect(address)
            for _ in range(3):
                await intruder.send([b"register", b"mallory"])
            await asyncio.sleep(0.3)  # let it try (and retry) its handshake before the honest client
            await alice.connect(address)
            await alice.send([b"register", b"alice"])
            # Well past the intruder's heartbeat timeout: it has had every chance to get through.
            events = await _events_until(server, b"register", linger=0.7)
            peers = {e.peer for e in events if isinstance(e, PeerJoined | Received)}
            assert peers == {b"alice"}, events
            assert server.statistics().messages_in == 1
            with pytest.raises(ConnectionLost):
                await intruder.recv()  # it never heard a heartbeat answer
            assert intruder.statistics().messages_in == 0
    refusals = [r.getMessage() for r in caplog.records if "refused CurveZMQ" in r.getMessage()]
    if intruder_kind == "unknown key":
        mallory = load_public_key(pki / "clients" / "mallory.key").decode()
        assert len(refusals) == 1 and mallory in refusals[0], refusals  # once, however often it retried
    else:  # the handshake fails before ZAP is asked: nothing to admit, nothing logged by the gate
        assert refusals == []


class Relay:
    """A TCP relay that records every byte it forwards (what an eavesdropper on the path would see)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.seen = bytearray()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                self.seen += data
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for task in (self._pipe(reader, up_writer), self._pipe(up_reader, writer)):
            t = asyncio.ensure_future(task)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()


@pytest.mark.parametrize("encrypted", [True, False])
async def test_the_bytes_on_the_wire_are_not_the_plaintext(pki: Path, encrypted: bool) -> None:
    secret = b"MODEL-UPDATE-PLAINTEXT-" * 8
    server = _server(pki) if encrypted else ZmqServerTransport(**FAST)
    client = _client(pki, "alice") if encrypted else ZmqClientTransport(**FAST, identity=b"alice")
    async with server, client, asyncio.timeout(20):
        address = await server.bind("tcp://127.0.0.1:0")
        relay = Relay(int(address.rsplit(":", 1)[1]))
        async with relay.serve() as port:
            await client.connect(f"tcp://127.0.0.1:{port}")
            await client.send([b"up", secret])
            got = (await _events_until(server, b"up", 0))[-1]
            assert isinstance(got, Received) and bytes(got.frames[1]) == secret
            await server.send(got.peer, [b"down", secret])
            assert [bytes(f) for f in await client.recv()] == [b"down", secret]
    # The control case (no CURVE) proves the relay saw the traffic, so the encrypted case means something.
    assert (secret in relay.seen) is not encrypted
    assert len(relay.seen) > 2 * len(secret)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _peak_growth_while(send: Any, seconds: float) -> int:
    """How far this process's resident set rises above where it was, while ``send()`` runs and
    ``seconds`` after."""
    gc.collect()
    before = peak = _resident_bytes()
    send()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        peak = max(peak, _resident_bytes())
        await asyncio.sleep(0.02)
    return peak - before


@pytest.mark.parametrize("curve", [True, False], ids=["curve", "open-control"])
async def test_a_stranger_cannot_make_a_curve_server_hold_a_long_multipart_message(
    pki: Path, curve: bool
) -> None:
    """libzmq holds a multipart message whole before the first frame can be read, whatever its frame
    count (``transports.zmq``): against an open server, a stranger's 384 MiB message in frames under
    every limit is resident in the server (the control). Under CurveZMQ with an allow-list, the
    stranger never completes the handshake, so not one frame reaches the server's memory."""
    server_transport = _server(pki) if curve else ZmqServerTransport(**FAST)
    frame = memoryview(bytearray(64 << 20))
    context = zmq.Context()
    stranger = context.socket(zmq.DEALER)
    stranger.setsockopt(zmq.LINGER, 0)
    try:
        async with server_transport as server, asyncio.timeout(30):
            address = await server.bind("tcp://127.0.0.1:0")
            stranger.connect(address)
            growth = await _peak_growth_while(
                lambda: stranger.send_multipart([frame] * 6, copy=False), seconds=1.5
            )
            if curve:
                assert growth < 64 << 20, growth
                assert server.statistics().messages_in == 0
            else:
                assert growth > 300 << 20, growth  # the control: the measurement can see it
    finally:
        stranger.close(linger=0)
        context.term()
