"""Malformed or inconsistent messages: the sender is failed for the round with a reason, the round
goes on, and the sum of the others stays exact (issue 4, "Faults and bad input")."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from secagg_harness import make_federation, run, run_round

from clipfl.secagg import SecAggConfig
from clipfl.secagg import keys as K
from clipfl.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencyCheck,
    MaskedInput,
    MaskedInputRequest,
    RoundSetup,
    ServerMessage,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)

CULPRIT = 3
N = 8


def only(kind: type, change: Callable[[Any], ClientMessage]) -> Callable[[int, ClientMessage], ClientMessage]:
    def tamper(c: int, m: ClientMessage) -> ClientMessage:
        return change(m) if c == CULPRIT and isinstance(m, kind) else m

    return tamper


def drop_one(d: dict[int, bytes]) -> dict[int, bytes]:
    return dict(list(d.items())[1:])


def flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


LOW_ORDER_POINT = bytes(32)  # the identity point of Curve25519

CASES: dict[str, tuple[Callable[[int, ClientMessage], ClientMessage], str]] = {
    "low-order key": (
        only(AdvertiseKeys, lambda m: dataclasses.replace(m, s_public=LOW_ORDER_POINT)),
        "low-order",
    ),
    "stale round": (only(ShareKeys, lambda m: dataclasses.replace(m, round=0)), "round 0"),
    "wrong number of shares": (
        only(ShareKeys, lambda m: dataclasses.replace(m, ciphertexts=drop_one(m.ciphertexts))),
        "wrong set of shares",
    ),
    "share for an unknown client": (
        only(ShareKeys, lambda m: dataclasses.replace(m, ciphertexts={**m.ciphertexts, 999: b"x" * 197})),
        "unknown [999]",
    ),
    "sealed share of the wrong size": (
        only(
            ShareKeys,
            lambda m: dataclasses.replace(m, ciphertexts={v: c[:-1] for v, c in m.ciphertexts.items()}),
        ),
        "bytes, not",
    ),
    "sealed share that does not open": (
        only(
            ShareKeys,
            lambda m: dataclasses.replace(
                m, ciphertexts={v: flip_last_bit(c) for v, c in m.ciphertexts.items()}
            ),
        ),
        "does not open",
    ),
    "vector of the wrong length": (
        only(MaskedInput, lambda m: dataclasses.replace(m, vector=m.vector[:-1])),
        "expected uint32",
    ),
    "vector of the wrong dtype": (
        only(MaskedInput, lambda m: dataclasses.replace(m, vector=m.vector.astype(np.int64))),
        "int64",
    ),
    "accusing a stranger": (
        only(MaskedInput, lambda m: dataclasses.replace(m, rejected={12345: "made up"})),
        "sent it none",
    ),
    "message of another stage": (
        only(ShareKeys, lambda m: UnmaskShares(round=m.round, b_shares={}, s_shares={})),
        "cannot receive UnmaskShares",
    ),
}


@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_message_fails_its_sender_and_the_sum_stays_exact(case: str, mode: str) -> None:
    tamper, reason = CASES[case]
    fed = run_round(n=N, length=200, config=SecAggConfig(mode=mode), seed=4, to_server=tamper)  # type: ignore[arg-type]
    assert fed.server.done, fed.server.aborted
    assert CULPRIT in fed.server.failures and reason in fed.server.failures[CULPRIT], fed.server.failures
    assert CULPRIT not in fed.server.survivors
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


def test_duplicate_answer_fails_the_sender() -> None:
    fed = make_federation(n=N, length=50, config=SecAggConfig(mode="secagg"), seed=1)
    seen: list[AdvertiseKeys] = []

    def duplicate(c: int, m: ClientMessage) -> ClientMessage:
        if c == CULPRIT and isinstance(m, AdvertiseKeys):
            seen.append(m)
            fed.server.receive(c, m)  # the first copy; the harness delivers the second
        return m

    run(fed, to_server=duplicate)
    assert "twice" in fed.server.failures[CULPRIT]
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


def test_unmask_with_a_missing_share_keeps_the_input_in_the_sum() -> None:
    """A survivor that answers unmasking wrongly is failed, but its masked input is already in the sum."""
    tamper = only(UnmaskShares, lambda m: dataclasses.replace(m, b_shares=drop_one(m.b_shares)))
    fed = run_round(n=N, length=64, config=SecAggConfig(mode="secagg"), seed=2, to_server=tamper)
    assert "wrong number of b-shares" in fed.server.failures[CULPRIT]
    assert CULPRIT in fed.server.survivors
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


def test_a_lying_share_is_caught_by_the_commitment_and_skipped() -> None:
    """A wrong share value must never yield a wrong secret: reconstruction is verified and retried."""

    def lie(m: UnmaskShares) -> UnmaskShares:
        forged = {v: (int.from_bytes(s, "big") + 1).to_bytes(66, "big") for v, s in m.b_shares.items()}
        return dataclasses.replace(m, b_shares=forged)

    tamper = only(UnmaskShares, lie)
    fed = run_round(n=N, length=64, config=SecAggConfig(mode="secagg"), seed=3, to_server=tamper)
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


def test_reflected_share_is_rejected_and_its_supposed_sender_excluded() -> None:
    """Box(c_u, c_v) opens both ways: the ids inside stop a share reflected back to its author."""
    fed = make_federation(n=N, length=64, config=SecAggConfig(mode="secagg"), seed=5)
    own: dict[int, bytes] = {}

    def capture(c: int, m: ClientMessage) -> ClientMessage:
        if c == 0 and isinstance(m, ShareKeys):
            own.update(m.ciphertexts)
        return m

    def reflect(c: int, m: ServerMessage) -> ServerMessage:
        if c == 0 and isinstance(m, MaskedInputRequest):  # give 0 back its own share for CULPRIT
            return dataclasses.replace(m, ciphertexts={**m.ciphertexts, CULPRIT: own[CULPRIT]})
        return m

    run(fed, to_server=capture, to_client=reflect)
    assert "from 0 to 3" in fed.clients[0].peer_failures[CULPRIT]
    assert "could not open the shares" in fed.server.failures[CULPRIT]
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


def test_message_from_a_stranger_is_ignored() -> None:
    fed = make_federation(n=N, length=16, config=SecAggConfig(), seed=1)
    fed.server.start()
    fed.server.receive(777, AdvertiseKeys(round=1, c_public=b"a" * 32, s_public=b"b" * 32))
    assert fed.server.statistics().ignored_messages == 1 and not fed.server.failures


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda m: dataclasses.replace(m, threshold=m.threshold - 1) if isinstance(m, RoundSetup) else m,
            "requires t>=",
        ),
        (
            lambda m: dataclasses.replace(m, mode="secagg") if isinstance(m, RoundSetup) else m,
            "configured for",
        ),
        (
            lambda m: (
                dataclasses.replace(m, survivors=m.survivors[1:]) if isinstance(m, ConsistencyCheck) else m
            ),
            "not in the survivor set",
        ),
        (
            lambda m: (
                dataclasses.replace(m, survivors=m.survivors[:2]) if isinstance(m, ConsistencyCheck) else m
            ),
            "too small a sum",
        ),
        (
            lambda m: dataclasses.replace(m, signatures={}) if isinstance(m, UnmaskRequest) else m,
            "valid consistency signatures",
        ),
    ],
    ids=["lower threshold", "other mode", "left out of the survivors", "too few survivors", "no signatures"],
)
def test_client_refuses_a_server_that_endangers_its_privacy(
    change: Callable[[ServerMessage], ServerMessage], reason: str
) -> None:
    fed = make_federation(n=N, length=16, config=SecAggConfig(mode="secagg+"), seed=8)
    run(fed, to_client=lambda c, m: change(m) if c == 0 else m)
    assert reason in (fed.clients[0].aborted or ""), fed.clients[0].aborted
    assert 0 in fed.server.failures  # it went silent; the server dropped it at the deadline


def test_masked_share_ciphertext_length_matches_the_server_check() -> None:
    assert K.SHARE_CIPHERTEXT_BYTES == 197
