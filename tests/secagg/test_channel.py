"""The client-to-client channel (issue 4 item 5) and Ed25519 identities (item 6)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import nacl.signing
import numpy as np
import pytest
from secagg_harness import Federation, make_federation, run

from clipfl.errors import LocalProtocolError
from clipfl.secagg import SecAggClient, SecAggConfig, Stage
from clipfl.secagg.messages import ClientMessage, KeysBroadcast, PrivateDelivery, RelayPrivate, ServerMessage

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
    client = SecAggClient(client_id=0, round=1, config=SecAggConfig())
    with pytest.raises(LocalProtocolError, match="wait for the key broadcast"):
        client.send_private(1, b"hi")


def identities(n: int) -> dict[int, nacl.signing.SigningKey]:
    rng = random.Random(99)
    return {c: nacl.signing.SigningKey(rng.randbytes(32)) for c in range(n)}


def test_signed_keys_are_accepted() -> None:
    keys = identities(8)
    fed = make_federation(n=8, length=16, config=SecAggConfig(identities=True), identities=keys, seed=5)
    run(fed)
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())
    assert not fed.server.failures


def test_a_server_substituting_keys_is_caught_by_the_signatures() -> None:
    """The server (which does not check signatures here) swaps client 2's advertised key for its own:
    every peer that verifies excludes client 2, and the sum of the others is exact."""
    keys = identities(8)
    fed = make_federation(
        n=8, length=16, config=SecAggConfig(mode="secagg", identities=True), identities=keys, seed=6
    )
    fed.server._verify_keys = None  # a server that does not verify (or lies about it)
    evil = nacl.signing.SigningKey(b"e" * 32)

    def substitute(c: int, m: ServerMessage) -> ServerMessage:
        if isinstance(m, KeysBroadcast) and 2 in m.c_publics:
            forged_sig = bytes(evil.sign(b"whatever").signature)
            return dataclasses.replace(
                m, c_publics={**m.c_publics, 2: bytes(32 * [9])}, signatures={**m.signatures, 2: forged_sig}
            )
        return m

    run(fed, to_client=substitute)
    assert all(
        fed.clients[c].peer_failures.get(2) == "bad signature on advertised keys"
        for c in fed.clients
        if c != 2
    )
    assert 2 in fed.server.failures and "rejected the keys" in fed.server.failures[2]
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


def test_unsigned_keys_are_refused_by_a_server_that_requires_identities() -> None:
    keys = identities(6)
    fed = make_federation(
        n=6, length=16, config=SecAggConfig(mode="secagg", identities=True), identities=keys, seed=7
    )
    fed.clients[4]._signing_key = None
    run(fed)
    assert "not signed" in fed.server.failures[4]
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())
    assert fed.clients[0].stage is Stage.DONE
