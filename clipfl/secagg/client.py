"""The client side of secure aggregation as a sans-IO state machine.

Bonawitz et al. (CCS 2017) with the SecAgg+ graph of Bell et al. (CCS 2020); the theory of operation
and the table of legal moves are in ``clipfl.secagg.stages``.

The driver feeds server messages to ``receive``, supplies the encoded update with ``set_input`` (before
or after the server asks for it), and sends whatever ``data_to_send`` returns. Nothing here waits,
reads a clock or touches a socket; randomness and identity keys are injected.

Everything the server sends is checked against this client's own configuration and the operator's
roster, never against numbers the server chose. A sealed share that does not open or does not match
its dealer's commitment excludes that dealer and is reported to the server (an accusation, budgeted
by the server). A fault that would endanger this client's privacy aborts the round for this client,
which then answers nothing more: a round weaker than its own configuration, a key not signed by the
roster identity of its id, its own keys altered, a survivor set too small to hide its input, or fewer
than ``t`` valid consistency signatures on the survivor set it signed.

Without a roster the client cannot tell its peers' keys from the server's: that needs the explicit
``trust_server=True``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import nacl.signing
import numpy as np

from clipfl.errors import ClipflError, ConfigError, LocalProtocolError, RemoteProtocolError
from clipfl.secagg import keys as K
from clipfl.secagg import shamir
from clipfl.secagg.config import SecAggConfig
from clipfl.secagg.encoding import FixedPoint
from clipfl.secagg.graph import round_neighbors
from clipfl.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ClientMessage,
    ConsistencyCheck,
    ConsistencySignature,
    KeysBroadcast,
    MaskedInput,
    MaskedInputRequest,
    PrivateDelivery,
    RelayPrivate,
    RoundSetup,
    ServerMessage,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)
from clipfl.secagg.primitives import REAL, Channel, Primitives
from clipfl.secagg.roster import Roster
from clipfl.secagg.stages import Role, Stage, next_stage

__all__ = ["ClientStatistics", "PrivatePayload", "SecAggClient"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PrivatePayload:
    """A payload a peer sent over the encrypted client channel."""

    sender: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    stage: str
    neighbors: int
    peers: int
    rejected_peers: int
    masks_applied: int
    private_sent: int
    private_received: int
    private_rejected: int
    ignored_messages: int


def _sorted_ids(ids: Sequence[int]) -> Sequence[int]:
    """Distinct ids (messages refuse repeats) in increasing order: the message's own list when it
    already is, shared rather than copied."""
    return ids if all(a < b for a, b in itertools.pairwise(ids)) else sorted(ids)


class SecAggClient:
    """One client's part of one round of SecAgg / SecAgg+."""

    def __init__(
        self,
        *,
        client_id: int,
        round: int,
        config: SecAggConfig,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        roster: Roster | None = None,
        signing_key: nacl.signing.SigningKey | None = None,
        trust_server: bool = False,
        instructions: bytes = b"",
        primitives: Primitives = REAL,
    ) -> None:
        """``roster`` (verified by the caller against the operator key) and this client's identity
        ``signing_key`` turn identities on; without a roster, ``trust_server=True`` must say that the
        server is trusted not to substitute keys. ``instructions``: opaque bytes describing what this
        client trains under this round (model version, keep-ratio rule, deadline), bound into every
        signature so that clients given different instructions cannot complete a round together.
        ``primitives``: the cryptography (``REAL``; ``MODELLED`` only in a simulation sized by cost)."""
        if roster is None and not trust_server:
            raise ConfigError(
                "secure aggregation without a roster trusts the server with every key: "
                "give the client the operator-signed roster, or pass trust_server=True"
            )
        if roster is not None:
            entry = roster.entry(client_id)
            if signing_key is None:
                raise ConfigError(f"client {client_id} has a roster but no identity signing key")
            if entry is None or entry.identity_key != bytes(signing_key.verify_key):
                raise ConfigError(
                    f"the roster does not list this identity key for client {client_id}: "
                    "provision the client again (python -m clipfl.keys roster)"
                )
        self.client_id = client_id
        self.round = round
        self.config = config
        self._random_bytes = random_bytes
        self._crypto = primitives
        self._identities = roster.identity_keys() if roster is not None else None
        self._signing_key = signing_key if roster is not None else None
        self._instructions = K.instructions_digest(instructions)
        self._stage = Stage.SETUP
        self._aborted: str | None = None
        self._outgoing: list[ClientMessage] = []
        self._inbox: list[PrivatePayload] = []
        self._input: np.ndarray | None = None
        self._codec: FixedPoint | None = None
        # filled as the round goes
        self._n = 0
        self._threshold = 0
        self._consistency = 0
        self._neighbor_count = 0
        self._length = 0
        self._members: Sequence[int] = ()
        self._x: dict[int, int] = {}
        """x-coordinates of this client and its neighbours (``_x_of``)."""
        self._neighbors: frozenset[int] = frozenset()
        self._keys: K.RoundKeys | None = None
        self._keys_digest = b""
        self._boxes: dict[int, Channel] = {}
        self._seeds: dict[int, bytes] = {}
        self._b = b""
        self._own_shares = (0, 0)
        self._shares: dict[int, tuple[int, int]] = {}
        self._mask_peers: frozenset[int] = frozenset()
        self._share_rejects: dict[int, str] = {}
        self._survivors: Sequence[int] = ()
        self._statement = b""
        self._seq_out: dict[int, int] = {}
        self._seq_in: dict[int, int] = {}
        self.peer_failures: dict[int, str] = {}
        """Peers this client excluded, with the reason (reported to the server)."""
        self.private_errors: list[tuple[int, str]] = []
        """Private messages refused (sender, reason); they do not affect the round."""
        self._masks_applied = 0
        self._private_sent = 0
        self._ignored = 0

    # -- state ---------------------------------------------------------------------------------------

    @property
    def stage(self) -> Stage:
        return self._stage

    @property
    def done(self) -> bool:
        return self._stage is Stage.DONE

    @property
    def aborted(self) -> str | None:
        return self._aborted

    @property
    def neighbors(self) -> frozenset[int]:
        """This client's neighbours in the round's graph (all other clients in SecAgg)."""
        return self._neighbors

    @property
    def peers(self) -> frozenset[int]:
        """Neighbours whose keys this client holds and accepted: those it can talk to privately."""
        return frozenset(self._boxes)

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            stage=self._stage.value,
            neighbors=len(self._neighbors),
            peers=len(self._boxes),
            rejected_peers=len(self.peer_failures),
            masks_applied=self._masks_applied,
            private_sent=self._private_sent,
            private_received=len(self._inbox),
            private_rejected=len(self.private_errors),
            ignored_messages=self._ignored,
        )

    # -- verbs ---------------------------------------------------------------------------------------

    def data_to_send(self) -> list[ClientMessage]:
        """Drain the messages to send to the server, in order."""
        out, self._outgoing = self._outgoing, []
        return out

    def received_private(self) -> list[PrivatePayload]:
        """Drain the payloads peers sent over the encrypted channel."""
        out, self._inbox = self._inbox, []
        return out

    def set_input(self, vector: np.ndarray) -> None:
        """The encoded update ``x_u`` (uint32, the round's vector length); masked and sent when asked."""
        if self._input is not None or self._stage in (Stage.CONSISTENCY, Stage.UNMASKING, Stage.DONE):
            raise LocalProtocolError(f"client {self.client_id}: input already set")
        if not isinstance(vector, np.ndarray) or vector.dtype != np.uint32 or vector.ndim != 1:
            raise LocalProtocolError("input must be a 1-D uint32 array (encode it with FixedPoint)")
        if self._length and vector.shape[0] != self._length:
            raise LocalProtocolError(f"input has {vector.shape[0]} coordinates, the round has {self._length}")
        self._input = vector
        if self._stage is Stage.MASKED_INPUT:
            self._send_masked_input()

    def accept_codec(self, codec: FixedPoint) -> bool:
        """Whether to encode with ``codec`` (built from numbers the server sent); ``False`` aborts.

        Attack 6: a server (or one client's inflated sample count) that widens the encoding range
        rounds every honest delta towards zero. This client refuses a codec for a larger weight or
        clip range than its own configuration allows, or for another number of clients than the round.
        """
        reason = None
        if codec.max_weight > self.config.max_weight:
            reason = f"weight range {codec.max_weight:g} exceeds this client's cap {self.config.max_weight:g}"
        elif codec.clip_range > self.config.clip_range:
            reason = f"clip range {codec.clip_range:g} exceeds this client's {self.config.clip_range:g}"
        elif self._n and codec.n_clients != self._n:
            reason = f"codec for {codec.n_clients} clients, the round has {self._n}"
        if reason is not None:
            if self._aborted is None:
                self._abort(f"refused the fixed-point codec: {reason}")
            return False
        self._codec = codec
        return True

    def receive(self, message: ServerMessage) -> None:
        """Process one server message; a bad one aborts this client's round, it never raises for it."""
        if message.round != self.round:
            self._ignored += 1
            logger.debug(
                "client %d: ignored %s of round %d", self.client_id, type(message).__name__, message.round
            )
            return
        if self._stage is Stage.ABORTED:
            self._ignored += 1
            return
        try:
            after = next_stage(Role.CLIENT, self._stage, message)
        except LocalProtocolError as exc:
            self._abort(f"server broke the protocol: {exc}")
            return
        before, self._stage = self._stage, after
        try:
            if isinstance(message, RoundSetup):
                self._on_setup(message)
            elif isinstance(message, KeysBroadcast):
                self._on_keys(message)
            elif isinstance(message, MaskedInputRequest):
                self._on_masked_input_request(message)
            elif isinstance(message, ConsistencyCheck):
                self._on_consistency_check(message)
            elif isinstance(message, UnmaskRequest):
                self._on_unmask_request(message)
            elif isinstance(message, PrivateDelivery):
                self._on_private(message)
            elif isinstance(message, Abort):
                self._abort(f"server aborted the round: {message.reason}")
        except (RemoteProtocolError, ConfigError) as exc:
            self._abort(f"in stage {before.value}: {exc}")

    def send_private(self, peer: int, payload: bytes) -> None:
        """Queue ``payload`` sealed for ``peer`` (relayed by the server, which cannot read it).

        Allowed once this client holds its neighbours' keys; a no-op after the round aborted.
        """
        self.send_private_many({peer: payload})

    def send_private_to_all(self, payload: bytes) -> None:
        """Queue ``payload`` for every accepted neighbour, in one relay message."""
        self.send_private_many(dict.fromkeys(sorted(self._boxes), payload))

    def send_private_many(self, payloads: Mapping[int, bytes]) -> None:
        """Queue one sealed payload per peer in one relay message."""
        if self._aborted is not None:
            return
        if self._stage in (Stage.SETUP, Stage.ADVERTISE_KEYS):
            raise LocalProtocolError("private messages need the peers' keys: wait for the key broadcast")
        ciphertexts = {}
        for peer, payload in payloads.items():
            if peer not in self._boxes:
                raise LocalProtocolError(f"client {self.client_id} holds no accepted key of peer {peer}")
            if len(payload) > self.config.max_private_bytes:
                raise LocalProtocolError(
                    f"private payload of {len(payload)} bytes exceeds {self.config.max_private_bytes}"
                )
            seq = self._seq_out.get(peer, 0) + 1
            self._seq_out[peer] = seq
            plain = K.PrivatePlaintext(self.round, self.client_id, peer, seq, bytes(payload))
            ciphertexts[peer] = self._boxes[peer].seal(plain.pack(), self._random_bytes)
        if ciphertexts:
            self._private_sent += len(ciphertexts)
            self._outgoing.append(RelayPrivate(round=self.round, ciphertexts=ciphertexts))

    # -- stages --------------------------------------------------------------------------------------

    def _abort(self, reason: str) -> None:
        logger.warning("client %d round %d aborted: %s", self.client_id, self.round, reason)
        self._stage = Stage.ABORTED
        self._aborted = reason
        self._outgoing.clear()
        self._input = None
        self._b = b""
        self._shares.clear()

    def _survived(self, client: int) -> bool:
        i = bisect.bisect_left(self._survivors, client)
        return i < len(self._survivors) and self._survivors[i] == client

    def _x_of(self, client: int) -> int:
        """The Shamir x-coordinate of a client of the round: its rank among the round's clients, plus 1."""
        return bisect.bisect_left(self._members, client) + 1

    def _on_setup(self, msg: RoundSetup) -> None:
        if self.client_id not in msg.clients:
            raise RemoteProtocolError("this client is not among the round's clients")
        try:
            resolved = self.config.check_setup(
                mode=msg.mode, n=len(msg.clients), threshold=msg.threshold, neighbors=msg.neighbors
            )
        except ClipflError as exc:
            raise RemoteProtocolError(f"round setup refused: {exc}") from exc
        if self._identities is not None and not set(msg.clients) <= self._identities.keys():
            strangers = sorted(set(msg.clients) - self._identities.keys())[:5]
            raise RemoteProtocolError(f"round names clients that are not on the roster: {strangers}")
        if self._input is not None and self._input.shape[0] != msg.vector_length:
            raise RemoteProtocolError(
                f"round vector length {msg.vector_length} differs from the input's {self._input.shape[0]}"
            )
        if self._codec is not None and self._codec.n_clients != len(msg.clients):
            raise RemoteProtocolError(
                f"codec for {self._codec.n_clients} clients, the round has {len(msg.clients)}"
            )
        self._n = resolved.n
        self._threshold = resolved.threshold
        self._consistency = resolved.consistency
        self._neighbor_count = resolved.neighbors
        self._length = msg.vector_length
        # x-coordinates by rank in the sorted round, looked up for the neighbours only: a dict of all n
        # per client would cost O(n^2) memory in a simulation of n clients (10^4: gigabytes)
        self._members = _sorted_ids(msg.clients)
        self._x = {self.client_id: self._x_of(self.client_id)}
        self._keys = self._crypto.generate_keys(self._random_bytes)
        signature = None
        if self._signing_key is not None:
            statement = K.keys_statement(
                round_=self.round,
                client_id=self.client_id,
                c_public=self._keys.c_public,
                s_public=self._keys.s_public,
                instructions=self._instructions,
            )
            signature = self._crypto.sign(self._signing_key, statement)
        self._outgoing.append(
            AdvertiseKeys(
                round=self.round,
                c_public=self._keys.c_public,
                s_public=self._keys.s_public,
                signature=signature,
            )
        )

    def _check_broadcast(self, msg: KeysBroadcast) -> None:
        """Refuse a key broadcast that is not exactly what the roster's identities signed.

        An honest server verifies every advertised key against the roster before forwarding it, so
        one bad signature means the server substituted keys (attack 1) or gave clients different
        instructions (attack 8): either way this client leaves the round before sealing anything.
        """
        assert self._keys is not None
        offered = set(msg.c_publics)
        strangers = offered - set(self._members)
        if strangers:
            raise RemoteProtocolError(
                f"key broadcast names clients outside the round: {sorted(strangers)[:5]}"
            )
        if (msg.c_publics.get(self.client_id), msg.s_publics.get(self.client_id)) != (
            self._keys.c_public,
            self._keys.s_public,
        ):
            raise RemoteProtocolError("the server altered or left out this client's own advertised keys")
        if len(offered) < max(self._threshold, self.config.min_clients):
            raise RemoteProtocolError(
                f"only {len(offered)} clients advertised keys (t={self._threshold}, "
                f"minimum {self.config.min_clients}): refusing the round"
            )
        if self._identities is None:
            return
        for v in sorted(offered - {self.client_id}):
            signature = msg.signatures.get(v)
            statement = K.keys_statement(
                round_=self.round,
                client_id=v,
                c_public=msg.c_publics[v],
                s_public=msg.s_publics[v],
                instructions=self._instructions,
            )
            if signature is None or not self._crypto.verify(self._identities[v], statement, signature):
                raise RemoteProtocolError(
                    f"keys of client {v} are not signed by its roster identity under this client's "
                    "instructions: the server substituted them, or instructions differ"
                )

    def _on_keys(self, msg: KeysBroadcast) -> None:
        assert self._keys is not None
        self._check_broadcast(msg)
        everyone = {v: (msg.c_publics[v], msg.s_publics[v]) for v in msg.c_publics}
        # Bell et al. (CCS 2020) need a graph the server cannot choose: hash every signed key.
        self._keys_digest = K.keys_digest(self.round, everyone)
        self._neighbors = round_neighbors(
            sorted(everyone), self._neighbor_count, self._keys_digest, self.client_id
        )
        s_private = self._keys.s_private
        for v in sorted(self._neighbors):
            # Only keys this client uses need the low-order check; libsodium refuses them in both calls.
            try:
                box = self._crypto.channel(self._keys, msg.c_publics[v])
                self._seeds[v] = self._crypto.mask_seed(
                    s_private, msg.s_publics[v], round_=self.round, u=self.client_id, v=v
                )
            except ValueError as exc:
                raise RemoteProtocolError(f"keys of client {v} are low-order points: {exc}") from exc
            self._boxes[v] = box
        peers = sorted(self._boxes)
        if len(peers) + 1 < self._threshold:
            raise RemoteProtocolError(
                f"only {len(peers)} neighbours: shares could never reach t={self._threshold}"
            )
        self._b = self._random_bytes(shamir.SECRET_BYTES)
        self._x.update((v, self._x_of(v)) for v in peers)
        xs = [self._x[v] for v in peers] + [self._x[self.client_id]]
        t, draw = self._threshold, self._random_bytes
        b_shares = self._crypto.split(self._b, threshold=t, xs=xs, random_bytes=draw)
        s_shares = self._crypto.split(s_private, threshold=t, xs=xs, random_bytes=draw)
        me = self._x[self.client_id]
        self._own_shares = (b_shares[me], s_shares[me])
        ciphertexts, commitments = {}, {}
        for v in [*peers, self.client_id]:
            b_share, s_share = b_shares[self._x[v]], s_shares[self._x[v]]
            commitments[v] = self._share_commitments(self.client_id, v, b_share, s_share)
            if v != self.client_id:
                plain = K.SharePlaintext(self.round, self.client_id, v, b_share, s_share)
                ciphertexts[v] = self._boxes[v].seal(plain.pack(), self._random_bytes)
        self._outgoing.append(
            ShareKeys(
                round=self.round,
                ciphertexts=ciphertexts,
                commitment=K.commitment(self._b, round_=self.round, u=self.client_id),
                share_commitments=commitments,
                rejected=dict(self.peer_failures),
            )
        )

    def _share_commitments(self, dealer: int, holder: int, b_share: int, s_share: int) -> bytes:
        common = {"round_": self.round, "dealer": dealer, "holder": holder}
        return K.share_commitment(kind=b"b", share=b_share, **common) + K.share_commitment(
            kind=b"s", share=s_share, **common
        )

    def _on_masked_input_request(self, msg: MaskedInputRequest) -> None:
        senders = frozenset(msg.ciphertexts)
        strangers = senders - self._boxes.keys()
        if strangers:
            raise RemoteProtocolError(
                f"server routed shares from clients that are not neighbours: {sorted(strangers)[:5]}"
            )
        if len(senders) + 1 < self._threshold:
            raise RemoteProtocolError(
                f"only {len(senders)} neighbours shared keys: fewer than t={self._threshold} holders"
            )
        for v in sorted(senders):
            try:
                plain = self._boxes[v].open(msg.ciphertexts[v])
                share = K.SharePlaintext.unpack(plain, round_=self.round, sender=v, receiver=self.client_id)
                if (
                    self._share_commitments(v, self.client_id, share.b_share, share.s_share)
                    != (msg.share_commitments[v])
                ):
                    raise ValueError("shares do not match the dealer's commitments")
            except ValueError as exc:
                self._share_rejects[v] = f"sealed shares rejected: {exc}"
                self.peer_failures[v] = self._share_rejects[v]
                continue
            self._shares[v] = (share.b_share, share.s_share)
        # Mask with the server's U2 except the senders we reject: the server fails every accused
        # sender within the accusation budget (or this client beyond it), and knows we did not mask
        # with it, so it removes only the masks that were really applied.
        self._mask_peers = senders - self._share_rejects.keys()
        if self._input is not None:
            self._send_masked_input()

    def _send_masked_input(self) -> None:
        assert self._input is not None
        y = np.empty(self._length, dtype=np.uint32)
        stream = self._crypto.mask_stream(self._length)
        stream.add_into(y, self._input, K.self_mask_seed(self._b, round_=self.round, u=self.client_id))
        for v in sorted(self._mask_peers):
            if v < self.client_id:
                stream.add(y, self._seeds[v])
            else:
                stream.subtract(y, self._seeds[v])
        self._masks_applied = 1 + len(self._mask_peers)
        self._input = None
        self._stage = Stage.CONSISTENCY
        self._outgoing.append(MaskedInput(round=self.round, vector=y, rejected=dict(self._share_rejects)))

    def _on_consistency_check(self, msg: ConsistencyCheck) -> None:
        """Bonawitz et al.'s consistency check: sign the survivor set once; it fixes what we reveal."""
        # kept as the message's sorted list (no copy per client: a set each is O(n^2) memory in a
        # simulation of n clients), looked up by bisection
        survivors = _sorted_ids(msg.survivors)
        strangers = set(survivors).difference(self._members)
        if strangers:
            raise RemoteProtocolError(
                f"survivor set names clients outside the round: {sorted(strangers)[:5]}"
            )
        self._survivors = survivors
        if not self._survived(self.client_id):
            raise RemoteProtocolError("this client is not in the survivor set: refusing to reveal anything")
        hidden_among = {v for v in self._mask_peers | {self.client_id} if self._survived(v)}
        if len(hidden_among) < self._threshold:
            raise RemoteProtocolError(
                f"only {len(hidden_among)} survivors among my neighbours and me (t={self._threshold}): "
                "unmasking would expose too small a sum"
            )
        if self._identities is not None and len(survivors) < self._consistency:
            raise RemoteProtocolError(
                f"survivor set of {len(survivors)} can never gather the {self._consistency} consistency "
                "signatures this client requires"
            )
        self._statement = K.consistency_statement(
            round_=self.round, survivors=survivors, keys=self._keys_digest, instructions=self._instructions
        )
        signature = None
        if self._signing_key is not None:
            signature = self._crypto.sign(self._signing_key, self._statement)
        self._outgoing.append(ConsistencySignature(round=self.round, signature=signature))

    def _on_unmask_request(self, msg: UnmaskRequest) -> None:
        if self._identities is not None:
            valid = 0
            for v in sorted(v for v in msg.signatures if self._survived(v)):
                if self._crypto.verify(self._identities[v], self._statement, msg.signatures[v]):
                    valid += 1
                    if valid >= self._consistency:
                        break
            if valid < self._consistency:
                raise RemoteProtocolError(
                    f"only {valid} valid consistency signatures on the survivor set this client signed "
                    f"(needs {self._consistency}): the server showed clients different sets; "
                    "revealing nothing"
                )
        shares = dict(self._shares)
        shares[self.client_id] = self._own_shares
        members = {v for v in self._mask_peers | {self.client_id} if self._survived(v)}
        # Never both secrets of one client: b for members of the signed set, s for the others.
        b_shares = {v: shamir.share_to_bytes(shares[v][0]) for v in sorted(members) if v in shares}
        s_shares = {
            v: shamir.share_to_bytes(shares[v][1])
            for v in sorted(v for v in self._mask_peers if not self._survived(v))
            if v in shares
        }
        self._outgoing.append(UnmaskShares(round=self.round, b_shares=b_shares, s_shares=s_shares))
        self._b = b""
        self._shares.clear()

    def _on_private(self, msg: PrivateDelivery) -> None:
        box = self._boxes.get(msg.sender)
        if box is None:
            self.private_errors.append((msg.sender, "no accepted key for this sender"))
            return
        try:
            plain = K.PrivatePlaintext.unpack(
                box.open(msg.ciphertext),
                round_=self.round,
                sender=msg.sender,
                receiver=self.client_id,
            )
        except ValueError as exc:
            self.private_errors.append((msg.sender, f"private message rejected: {exc}"))
            return
        if plain.seq <= self._seq_in.get(msg.sender, 0):
            self.private_errors.append((msg.sender, f"private message replayed (sequence {plain.seq})"))
            return
        self._seq_in[msg.sender] = plain.seq
        self._inbox.append(PrivatePayload(msg.sender, plain.payload))
