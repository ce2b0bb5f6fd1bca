"""Minimum coverage (issue 13, attack 8): plans travel sealed between clients, and a client withholds
units that too few clients train, so the sum never carries one client's delta for a unit in the clear."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from secagg_harness import make_federation, run

from clipfl.secagg import SecAggConfig
from clipfl.secagg.coverage import is_plan, pack_plan, unpack_plan, withhold_thin_units
from clipfl.secagg.messages import KeysBroadcast, RelayPrivate, ServerMessage


@given(arrays(bool, st.integers(1, 300)))
def test_plans_round_trip(trained: np.ndarray) -> None:
    payload = pack_plan(trained)
    assert is_plan(payload)
    np.testing.assert_array_equal(unpack_plan(payload, trained.shape[0]), trained)


def test_a_plan_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="the model has 9"):
        unpack_plan(pack_plan(np.ones(8, bool)), 9)
    with pytest.raises(ValueError, match="not a coverage plan"):
        unpack_plan(b"timing report", 8)


def test_units_trained_by_too_few_clients_are_withheld() -> None:
    own = np.array([1, 1, 1, 0], bool)
    peers = {1: np.array([1, 1, 0, 1], bool), 2: np.array([1, 0, 0, 1], bool)}
    np.testing.assert_array_equal(withhold_thin_units(own, peers, 3), [True, False, False, False])
    np.testing.assert_array_equal(withhold_thin_units(own, peers, 1), own)


def test_attack8_a_client_alone_on_a_unit_withholds_it_and_the_server_never_reads_plans() -> None:
    """The server singles client 3 out so that it alone trains unit 0; client 3 learns from its peers'
    sealed plans that nobody else does, and contributes nothing for that unit."""
    fed = make_federation(n=6, length=8, config=SecAggConfig(mode="secagg"), seed=3)
    plans = {c: np.array([c == 3, True, True], bool) for c in range(6)}
    original = {c: client.receive for c, client in fed.clients.items()}

    def announce(c: int):  # type: ignore[no-untyped-def]
        def receive(m: ServerMessage) -> None:
            original[c](m)
            if isinstance(m, KeysBroadcast) and fed.clients[c].aborted is None:
                fed.clients[c].send_private_to_all(pack_plan(plans[c]))

        return receive

    for c in fed.clients:
        fed.clients[c].receive = announce(c)  # type: ignore[method-assign]
    run(fed)
    received = {
        p.sender: unpack_plan(p.payload, 3) for p in fed.clients[3].received_private() if is_plan(p.payload)
    }
    assert set(received) == {0, 1, 2, 4, 5}
    np.testing.assert_array_equal(withhold_thin_units(plans[3], received, 2), [False, True, True])
    relayed = b"".join(
        x for _, m in fed.server_inbox if isinstance(m, RelayPrivate) for x in m.ciphertexts.values()
    )
    assert b"clipfl.coverage" not in relayed
