"""The messages of secure aggregation, one frozen value class per message type and direction.

Fields use only what the msgpack codec carries: ``int, float, str, bytes, bool, None``, ``list`` and
``dict`` keyed by ``int`` of those, and a 1-D ``numpy.ndarray`` for the masked vector. Constructors
check shapes and types and raise ``TypeError``/``ValueError``; whether the *content* fits the round
(the right peers, the right length) is for the state machines to judge, which turn a bad message
into a failed peer (server) or an aborted round (client).

Server to client: ``RoundSetup``, ``KeysBroadcast``, ``MaskedInputRequest``, ``ConsistencyCheck``,
``UnmaskRequest``, ``PrivateDelivery``, ``Abort``. Client to server: ``AdvertiseKeys``, ``ShareKeys``,
``MaskedInput``, ``ConsistencySignature``, ``UnmaskShares``, ``RelayPrivate``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Abort",
    "AdvertiseKeys",
    "ClientMessage",
    "ConsistencyCheck",
    "ConsistencySignature",
    "KeysBroadcast",
    "MaskedInput",
    "MaskedInputRequest",
    "Message",
    "PrivateDelivery",
    "RelayPrivate",
    "RoundSetup",
    "ServerMessage",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskShares",
]

MAX_REASON = 500


def _int(name: str, value: Any, minimum: int = 0) -> None:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum or value >= 1 << 63:
        raise ValueError(f"{name} must lie in [{minimum}, 2^63), got {value}")


def _bytes(name: str, value: Any, size: int | None = None) -> None:
    if type(value) is not bytes:
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(value)}")


def _str(name: str, value: Any) -> None:
    if type(value) is not str:
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if len(value) > MAX_REASON:
        raise ValueError(f"{name} longer than {MAX_REASON} characters")


def _ids(name: str, value: Any) -> None:
    if type(value) is not list:
        raise TypeError(f"{name} must be a list, got {type(value).__name__}")
    for item in value:
        _int(f"{name} item", item)
    if len(set(value)) != len(value):
        raise ValueError(f"{name} has repeated ids")


def _id_map(name: str, value: Any, check: Callable[[str, Any], None]) -> None:
    if type(value) is not dict:
        raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
    for key, item in value.items():
        _int(f"{name} key", key)
        check(f"{name}[{key}]", item)


def _any_bytes(name: str, value: Any) -> None:
    _bytes(name, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundSetup:
    """Server -> client, stage 0: the round's clients and parameters (each client checks them against
    its own; the SecAgg+ graph seed is derived from the advertised keys, never sent by the server)."""

    round: int
    mode: str
    clients: list[int]
    threshold: int
    neighbors: int
    vector_length: int

    def __post_init__(self) -> None:
        _int("round", self.round)
        _str("mode", self.mode)
        _ids("clients", self.clients)
        _int("threshold", self.threshold, 1)
        _int("neighbors", self.neighbors, 1)
        _int("vector_length", self.vector_length, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseKeys:
    """Client -> server, stage 0: the client's two X25519 public keys, signed when identities are on."""

    round: int
    c_public: bytes
    s_public: bytes
    signature: bytes | None = None

    def __post_init__(self) -> None:
        _int("round", self.round)
        _bytes("c_public", self.c_public, 32)
        _bytes("s_public", self.s_public, 32)
        if self.signature is not None:
            _bytes("signature", self.signature, 64)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysBroadcast:
    """Server -> client, stage 1: the signed advertised keys of every client that advertised (U1).

    Every client gets the same broadcast: it verifies each signature against the roster and hashes
    the whole set into the SecAgg+ graph seed (``keys.keys_digest``)."""

    round: int
    c_publics: dict[int, bytes]
    s_publics: dict[int, bytes]
    signatures: dict[int, bytes]

    def __post_init__(self) -> None:
        _int("round", self.round)
        _id_map("c_publics", self.c_publics, lambda n, v: _bytes(n, v, 32))
        _id_map("s_publics", self.s_publics, lambda n, v: _bytes(n, v, 32))
        _id_map("signatures", self.signatures, lambda n, v: _bytes(n, v, 64))
        if self.c_publics.keys() != self.s_publics.keys():
            raise ValueError("c_publics and s_publics name different clients")
        if self.signatures and self.signatures.keys() != self.c_publics.keys():
            raise ValueError("signatures and keys name different clients")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareKeys:
    """Client -> server, stage 1: one sealed pair of shares per neighbour, a commitment to ``b_u``,
    per-holder commitments to the shares (``b`` then ``s``, 32 bytes each; its own included), and the
    neighbours whose advertised keys the client rejected (with reasons)."""

    round: int
    ciphertexts: dict[int, bytes]
    commitment: bytes
    share_commitments: dict[int, bytes]
    rejected: dict[int, str]

    def __post_init__(self) -> None:
        _int("round", self.round)
        _id_map("ciphertexts", self.ciphertexts, _any_bytes)
        _bytes("commitment", self.commitment, 32)
        _id_map("share_commitments", self.share_commitments, lambda n, v: _bytes(n, v, 64))
        _id_map("rejected", self.rejected, _str)


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskedInputRequest:
    """Server -> client, stage 2: the sealed shares addressed to this client, by sender.

    The senders are exactly the client's live neighbours (U2): the client masks with those and no other.
    """

    round: int
    ciphertexts: dict[int, bytes]
    share_commitments: dict[int, bytes]

    def __post_init__(self) -> None:
        _int("round", self.round)
        _id_map("ciphertexts", self.ciphertexts, _any_bytes)
        _id_map("share_commitments", self.share_commitments, lambda n, v: _bytes(n, v, 64))
        if self.share_commitments.keys() != self.ciphertexts.keys():
            raise ValueError("share commitments and ciphertexts name different senders")


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class MaskedInput:
    """Client -> server, stage 2: ``y_u`` (uint32, 4 bytes a coordinate) and the senders whose
    sealed shares did not open (with reasons)."""

    round: int
    vector: np.ndarray
    rejected: dict[int, str]

    def __post_init__(self) -> None:
        _int("round", self.round)
        if not isinstance(self.vector, np.ndarray):
            raise TypeError(f"vector must be a numpy array, got {type(self.vector).__name__}")
        _id_map("rejected", self.rejected, _str)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyCheck:
    """Server -> client, stage 3: the set U3 of clients whose masked inputs the server holds."""

    round: int
    survivors: list[int]

    def __post_init__(self) -> None:
        _int("round", self.round)
        _ids("survivors", self.survivors)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencySignature:
    """Client -> server, stage 3: the client's Ed25519 signature of (round, U3, key set, instructions);
    ``None`` only when the client runs without identities (it trusts the server)."""

    round: int
    signature: bytes | None

    def __post_init__(self) -> None:
        _int("round", self.round)
        if self.signature is not None:
            _bytes("signature", self.signature, 64)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskRequest:
    """Server -> client, stage 4: the consistency signatures the server collected, by signer."""

    round: int
    signatures: dict[int, bytes]

    def __post_init__(self) -> None:
        _int("round", self.round)
        _id_map("signatures", self.signatures, lambda n, v: _bytes(n, v, 64))


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskShares:
    """Client -> server, stage 3: shares of ``b_v`` for survivors and of ``s_v`` for the dropped."""

    round: int
    b_shares: dict[int, bytes]
    s_shares: dict[int, bytes]

    def __post_init__(self) -> None:
        _int("round", self.round)
        _id_map("b_shares", self.b_shares, _any_bytes)
        _id_map("s_shares", self.s_shares, _any_bytes)


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayPrivate:
    """Client -> server, any time after stage 1: sealed payloads for neighbours, by recipient."""

    round: int
    ciphertexts: dict[int, bytes]

    def __post_init__(self) -> None:
        _int("round", self.round)
        _id_map("ciphertexts", self.ciphertexts, _any_bytes)
        if not self.ciphertexts:
            raise ValueError("a relay needs at least one recipient")


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateDelivery:
    """Server -> client: a sealed payload from ``sender``, relayed unread."""

    round: int
    sender: int
    ciphertext: bytes

    def __post_init__(self) -> None:
        _int("round", self.round)
        _int("sender", self.sender)
        _bytes("ciphertext", self.ciphertext)


@dataclass(frozen=True, slots=True, kw_only=True)
class Abort:
    """Server -> client: the round is abandoned (too few clients left), with the reason."""

    round: int
    reason: str

    def __post_init__(self) -> None:
        _int("round", self.round)
        _str("reason", self.reason)


ServerMessage = (
    RoundSetup
    | KeysBroadcast
    | MaskedInputRequest
    | ConsistencyCheck
    | UnmaskRequest
    | PrivateDelivery
    | Abort
)
ClientMessage = AdvertiseKeys | ShareKeys | MaskedInput | ConsistencySignature | UnmaskShares | RelayPrivate
Message = ServerMessage | ClientMessage
