"""The client-to-client channel (issue 4 item 5) and Ed25519 identities (item 6)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from secagg_harness import Federation, make_federation, run

from clipfl.errors import LocalProtocolError
from clipfl.secagg import SecAggClient, SecAggConfig, Stage
from clipfl.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    KeysBroadcast,
    PrivateDelivery,
    RelayPrivate,
    ServerMessage,
)

REPORT = b"timing:" + bytes(93)  # a 100-byte CLIP timing report


def run_with_reports(fed: Federation, **kwargs: Any) -> Federation:
    """Run the round; each client broadcasts a report right after processing its KeysBroadcast."""
    original = {c: client.receive for c, client in fed.clients.items()}

    def wrap(c: int) -> Callable[[ServerMessage], None]:
        def receive(m: ServerMessage) -> None:
            original[c](m)
            if isinstance(m, KeysBroadcast) and fed.clients[c].aborted is None:
                fed.clients[c].send_private_to_all(REPORT + bytes([c]))

        return receive

    for c in fed.clients:
        fed.clients[c].receive = wrap(c)  # type: ignore[method-assign,assignment]
    return run(fed, **kwargs)


@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
def test_neighbours_read_each_others_reports_and_the_server_sees_only_ciphertext(mode: str) -> None:
    fed = make_federation(n=12, length=32, config=SecAggConfig(mode=mode), seed=1)  # type: ignore[arg-type]
    run_with_reports(fed)
    assert fed.server.done
    for client in fed.clients.values():
        got = {(p.sender, p.payload) for p in client.received_private()}
        assert got == {(v, REPORT + bytes([v])) for v in client.neighbors}
    relayed = [m for _, m in fed.server_inbox if isinstance(m, RelayPrivate)]
    assert len(relayed) == 12
    for m in relayed:
        for ciphertext in m.ciphertexts.values():
            assert REPORT not in ciphertext and b"timing" not in ciphertext
    assert fed.server.statistics().relayed == sum(len(c.neighbors) for c in fed.clients.values())


def test_tampered_ciphertext_is_rejected_with_a_reason_and_the_round_goes_on() -> None:
    fed = make_federation(n=6, length=32, config=SecAggConfig(mode="secagg"), seed=2)

    def tamper(c: int, m: ServerMessage) -> ServerMessage:
        if isinstance(m, PrivateDelivery) and c == 0 and m.sender == 1:
            return dataclasses.replace(m, ciphertext=m.ciphertext[:-1] + bytes([m.ciphertext[-1] ^ 0x80]))
        return m

    run_with_reports(fed, to_client=tamper)
    assert fed.server.done
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())
    assert fed.clients[0].private_errors == [(1, "private message rejected: ciphertext does not open")]
    assert {p.sender for p in fed.clients[0].received_private()} == {2, 3, 4, 5}


def test_replayed_and_misrouted_payloads_are_rejected() -> None:
    fed = make_federation(n=4, length=8, config=SecAggConfig(mode="secagg"), seed=3)
    deliveries: list[tuple[int, PrivateDelivery]] = []

    def capture(c: int, m: ServerMessage) -> ServerMessage:
        if isinstance(m, PrivateDelivery):
            deliveries.append((c, m))
        return m

    run_with_reports(fed, to_client=capture)
    target, first = deliveries[0]
    fed.clients[target].received_private()
    fed.clients[target].receive(first)  # the server replays it
    assert "replayed" in fed.clients[target].private_errors[-1][1]
    other = next(c for c in fed.clients if c not in (target, first.sender))
    fed.clients[other].receive(first)  # routed to a client it was not sealed for
    assert fed.clients[other].private_errors[-1][0] == first.sender
    assert "does not open" in fed.clients[other].private_errors[-1][1]


def test_relay_to_a_non_neighbour_fails_the_sender() -> None:
    fed = make_federation(n=20, length=8, config=SecAggConfig(mode="secagg+"), seed=4)

    def forge(c: int, m: ClientMessage) -> ClientMessage:
        if c == 0 and isinstance(m, RelayPrivate):
            stranger = next(v for v in range(20) if v != 0 and v not in fed.clients[0].neighbors)
            return RelayPrivate(round=m.round, ciphertexts={stranger: b"x" * 100})
        return m

    run_with_reports(fed, to_server=forge)
    assert "holds no keys of" in fed.server.failures[0]
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


def test_private_channel_misuse_is_a_local_error() -> None:
    client = SecAggClient(client_id=0, round=1, config=SecAggConfig(), trust_server=True)
    with pytest.raises(LocalProtocolError, match="wait for the key broadcast"):
        client.send_private(1, b"hi")


def test_signed_keys_are_accepted() -> None:
    fed = make_federation(n=8, length=16, config=SecAggConfig(), seed=5)
    run(fed)
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())
    assert not fed.server.failures
    assert all(m.signature is not None for _, m in fed.server_inbox if isinstance(m, AdvertiseKeys))


def test_unsigned_keys_are_refused_by_a_server_that_holds_the_roster() -> None:
    fed = make_federation(n=6, length=16, config=SecAggConfig(mode="secagg", min_clients=3), seed=7)

    def strip(c: int, m: ClientMessage) -> ClientMessage:
        return dataclasses.replace(m, signature=None) if c == 4 and isinstance(m, AdvertiseKeys) else m

    run(fed, to_server=strip)
    assert "not signed" in fed.server.failures[4]
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())
    assert fed.clients[0].stage is Stage.DONE
