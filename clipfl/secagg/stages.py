"""The legal moves of secure aggregation, in one table.

Theory of operation (Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
Learning", CCS 2017, the actively secure protocol of section 6 with its consistency check; SecAgg+ of
Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020). One round,
five stages, each ending when every live client has answered or the driver's deadline fires
(``SecAggServer.expire_stage``); a client that misses a stage is dropped for the rest of the round.
U1 ⊇ U2 ⊇ U3 ⊇ U4 are the clients alive after each stage. Every client checks the round against its
own configuration and a roster of identities signed by an operator (``roster.Roster``), never
against numbers the server chose.

0. ADVERTISE_KEYS: the server sends ``RoundSetup`` (clients, t, k); each client checks them against
   its own configuration and answers ``AdvertiseKeys`` with two fresh X25519 public keys ``c_u``
   (encryption) and ``s_u`` (mask agreement), signed with its roster identity over the round and the
   digest of its training instructions. Responders form U1.
1. SHARE_KEYS: the server broadcasts every U1 key pair with its signature (``KeysBroadcast``); each
   client verifies them all, derives the SecAgg+ graph from their hash, draws the self-mask secret
   ``b_u``, Shamir-splits ``b_u`` and ``s_u`` t-of-(k+1) among its neighbours and itself, seals each
   neighbour's pair with ``Box(c_u, c_v)`` and answers ``ShareKeys`` with a commitment to ``b_u`` and
   one commitment per share. Responders form U2.
2. MASKED_INPUT: the server routes the sealed shares with their commitments (``MaskedInputRequest``);
   the client checks each against its commitment and uploads
   ``y_u = x_u + PRG(b_u) + sum_{v<u} PRG(s_uv) - sum_{v>u} PRG(s_uv)`` mod 2^32 (``MaskedInput``).
   Responders form U3, the survivors, whose inputs make the sum.
3. CONSISTENCY: the server announces U3 (``ConsistencyCheck``); each client in it signs (round, U3,
   the key-set digest, its instructions digest) and returns the signature (``ConsistencySignature``).
   Responders form U4.
4. UNMASKING: the server forwards the signatures (``UnmaskRequest``). A client that finds valid roster
   signatures on its own statement from more than ``(n + corrupted) / 2`` of the round's clients (so
   no other set can have as many: every honest revealer works from one set) answers with its shares
   of ``b_v`` for members of U3 and of ``s_v`` for its other neighbours, never both for one ``v``
   (``UnmaskShares``). The server checks each share against its commitment (a liar is failed, its
   share skipped), rebuilds every ``b_v`` and the dropped ``s_v``, removes their masks from
   ``sum y_u`` and holds ``sum x_u`` exactly.

Any time after a client has its neighbours' keys it may send ``RelayPrivate`` (sealed payloads) that
the server forwards as ``PrivateDelivery`` without being able to read them. The server ends the round
with ``Abort`` when fewer than ``t`` clients remain or a needed secret cannot be rebuilt.

``MOVES`` below lists every legal (role, stage, incoming message) and the stage it leads to; a message
not in the table is illegal there. For the server, incoming messages never change the stage by
themselves (a stage completes when all answered or on the deadline: ``COMPLETIONS``); for the client,
each server message moves it on, and supplying the input moves it from MASKED_INPUT to CONSISTENCY.
"""

from __future__ import annotations

import enum
from typing import Final

from clipfl.errors import LocalProtocolError
from clipfl.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ConsistencyCheck,
    ConsistencySignature,
    KeysBroadcast,
    MaskedInput,
    MaskedInputRequest,
    PrivateDelivery,
    RelayPrivate,
    RoundSetup,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)

__all__ = ["COMPLETIONS", "MOVES", "Role", "Stage", "next_stage"]


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class Stage(enum.Enum):
    """Where a party is. The client starts in SETUP (before ``RoundSetup``); the server in
    ADVERTISE_KEYS once started. DONE and ABORTED are final."""

    SETUP = "setup"
    ADVERTISE_KEYS = "advertise-keys"
    SHARE_KEYS = "share-keys"
    MASKED_INPUT = "masked-input"
    CONSISTENCY = "consistency"
    UNMASKING = "unmasking"
    DONE = "done"
    ABORTED = "aborted"


C, S = Role.CLIENT, Role.SERVER

MOVES: Final[dict[tuple[Role, Stage, type], Stage]] = {
    # client: each server message moves it on
    (C, Stage.SETUP, RoundSetup): Stage.ADVERTISE_KEYS,
    (C, Stage.ADVERTISE_KEYS, KeysBroadcast): Stage.SHARE_KEYS,
    (C, Stage.SHARE_KEYS, MaskedInputRequest): Stage.MASKED_INPUT,
    (C, Stage.CONSISTENCY, ConsistencyCheck): Stage.UNMASKING,
    (C, Stage.UNMASKING, UnmaskRequest): Stage.DONE,
    (C, Stage.SHARE_KEYS, PrivateDelivery): Stage.SHARE_KEYS,
    (C, Stage.MASKED_INPUT, PrivateDelivery): Stage.MASKED_INPUT,
    (C, Stage.CONSISTENCY, PrivateDelivery): Stage.CONSISTENCY,
    (C, Stage.UNMASKING, PrivateDelivery): Stage.UNMASKING,
    (C, Stage.DONE, PrivateDelivery): Stage.DONE,
    (C, Stage.SETUP, Abort): Stage.ABORTED,
    (C, Stage.ADVERTISE_KEYS, Abort): Stage.ABORTED,
    (C, Stage.SHARE_KEYS, Abort): Stage.ABORTED,
    (C, Stage.MASKED_INPUT, Abort): Stage.ABORTED,
    (C, Stage.CONSISTENCY, Abort): Stage.ABORTED,
    (C, Stage.UNMASKING, Abort): Stage.ABORTED,
    (C, Stage.DONE, Abort): Stage.ABORTED,  # the server could not finish after this client's part
    # server: a client's answer to the current stage; the stage completes separately
    (S, Stage.ADVERTISE_KEYS, AdvertiseKeys): Stage.ADVERTISE_KEYS,
    (S, Stage.SHARE_KEYS, ShareKeys): Stage.SHARE_KEYS,
    (S, Stage.MASKED_INPUT, MaskedInput): Stage.MASKED_INPUT,
    (S, Stage.CONSISTENCY, ConsistencySignature): Stage.CONSISTENCY,
    (S, Stage.UNMASKING, UnmaskShares): Stage.UNMASKING,
    (S, Stage.SHARE_KEYS, RelayPrivate): Stage.SHARE_KEYS,
    (S, Stage.MASKED_INPUT, RelayPrivate): Stage.MASKED_INPUT,
    (S, Stage.CONSISTENCY, RelayPrivate): Stage.CONSISTENCY,
    (S, Stage.UNMASKING, RelayPrivate): Stage.UNMASKING,
}

COMPLETIONS: Final[dict[Stage, Stage]] = {
    # server stage -> next, when every live client answered or the deadline fired
    Stage.ADVERTISE_KEYS: Stage.SHARE_KEYS,
    Stage.SHARE_KEYS: Stage.MASKED_INPUT,
    Stage.MASKED_INPUT: Stage.CONSISTENCY,
    Stage.CONSISTENCY: Stage.UNMASKING,
    Stage.UNMASKING: Stage.DONE,
}


def next_stage(role: Role, stage: Stage, message: object) -> Stage:
    """The stage after ``role`` in ``stage`` receives ``message``; ``LocalProtocolError`` if illegal.

    Callers decide whose fault an illegal move is: a peer's message is the peer's fault.
    """
    try:
        return MOVES[role, stage, type(message)]
    except KeyError:
        raise LocalProtocolError(
            f"{role.value} in stage {stage.value} cannot receive {type(message).__name__}"
        ) from None
