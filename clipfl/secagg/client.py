"""The client side of secure aggregation as a sans-IO state machine.

Bonawitz et al. (CCS 2017) with the SecAgg+ graph of Bell et al. (CCS 2020); the theory of operation
and the table of legal moves are in ``clipfl.secagg.stages``.

The driver feeds server messages to ``receive``, supplies the encoded update with ``set_input`` (before
or after the server asks for it), and sends whatever ``data_to_send`` returns. Nothing here waits,
reads a clock or touches a socket; randomness and identity keys are injected.

Everything the server sends is checked. A fault that only hurts one peer (a bad signature, a low-order
key, a sealed share that does not open) excludes that peer and is reported to the server in the next
message; a fault that would endanger this client's privacy (a threshold lower than ours, survivors
too few to hide our input, a client named both survivor and dropped) aborts the round for this client:
it answers nothing more.
"""

from __future__ import annotations

import bisect
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import nacl.public
import nacl.signing
import numpy as np

from clipfl.errors import ClipflError, LocalProtocolError, RemoteProtocolError
from clipfl.secagg import keys as K
from clipfl.secagg import shamir
from clipfl.secagg.config import SecAggConfig
from clipfl.secagg.graph import regular_graph
from clipfl.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ClientMessage,
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
from clipfl.secagg.prg import MaskStream
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


class SecAggClient:
    """One client's part of one round of SecAgg / SecAgg+."""

    def __init__(
        self,
        *,
        client_id: int,
        round: int,
        config: SecAggConfig,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        signing_key: nacl.signing.SigningKey | None = None,
        verify_keys: Mapping[int, bytes] | None = None,
    ) -> None:
        if config.identities and (signing_key is None or verify_keys is None):
            raise LocalProtocolError(
                "identities are on: the client needs its signing key and the verify keys"
            )
        self.client_id = client_id
        self.round = round
        self.config = config
        self._random_bytes = random_bytes
        self._signing_key = signing_key
        self._verify_keys = dict(verify_keys or {})
        self._stage = Stage.SETUP
        self._aborted: str | None = None
        self._outgoing: list[ClientMessage] = []
        self._inbox: list[PrivatePayload] = []
        self._input: np.ndarray | None = None
        # filled as the round goes
        self._threshold = 0
        self._length = 0
        self._x: dict[int, int] = {}
        self._neighbors: frozenset[int] = frozenset()
        self._keys: K.RoundKeys | None = None
        self._boxes: dict[int, nacl.public.Box] = {}
        self._seeds: dict[int, bytes] = {}
        self._b = b""
        self._own_shares = (0, 0)
        self._shares: dict[int, tuple[int, int]] = {}
        self._mask_peers: frozenset[int] = frozenset()
        self._share_rejects: dict[int, str] = {}
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
        if self._input is not None or self._stage in (Stage.UNMASKING, Stage.DONE):
            raise LocalProtocolError(f"client {self.client_id}: input already set")
        if not isinstance(vector, np.ndarray) or vector.dtype != np.uint32 or vector.ndim != 1:
            raise LocalProtocolError("input must be a 1-D uint32 array (encode it with FixedPoint)")
        if self._length and vector.shape[0] != self._length:
            raise LocalProtocolError(f"input has {vector.shape[0]} coordinates, the round has {self._length}")
        self._input = vector
        if self._stage is Stage.MASKED_INPUT:
            self._send_masked_input()

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
            elif isinstance(message, UnmaskRequest):
                self._on_unmask_request(message)
            elif isinstance(message, PrivateDelivery):
                self._on_private(message)
            elif isinstance(message, Abort):
                self._abort(f"server aborted the round: {message.reason}")
        except RemoteProtocolError as exc:
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
            ciphertexts[peer] = K.seal(self._boxes[peer], plain.pack(), self._random_bytes)
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

    def _on_setup(self, msg: RoundSetup) -> None:
        if msg.mode != self.config.mode:
            raise RemoteProtocolError(
                f"server runs {msg.mode!r}, this client is configured for {self.config.mode!r}"
            )
        if self.client_id not in msg.clients:
            raise RemoteProtocolError("this client is not among the round's clients")
        try:
            resolved = self.config.resolved(len(msg.clients))
        except ClipflError as exc:
            raise RemoteProtocolError(f"round setup is impossible here: {exc}") from exc
        if (msg.threshold, msg.neighbors) != (resolved.threshold, resolved.neighbors):
            raise RemoteProtocolError(
                f"server announced t={msg.threshold}, k={msg.neighbors}; this client requires "
                f"t={resolved.threshold}, k={resolved.neighbors} for n={resolved.n}"
            )
        if self._input is not None and self._input.shape[0] != msg.vector_length:
            raise RemoteProtocolError(
                f"round vector length {msg.vector_length} differs from the input's {self._input.shape[0]}"
            )
        self._threshold = msg.threshold
        self._length = msg.vector_length
        self._neighbors = regular_graph(msg.clients, msg.neighbors, msg.graph_seed)[self.client_id]
        # Shamir x-coordinates (rank in the round, from 1) of those this client shares with: O(k), not O(n)
        order = sorted(msg.clients)
        self._x = {cid: bisect.bisect_left(order, cid) + 1 for cid in (*self._neighbors, self.client_id)}
        self._keys = K.RoundKeys.generate(self._random_bytes)
        signature = None
        if self._signing_key is not None:
            statement = K.keys_statement(
                round_=self.round,
                client_id=self.client_id,
                c_public=self._keys.c_public,
                s_public=self._keys.s_public,
            )
            signature = K.sign_keys(self._signing_key, statement)
        self._outgoing.append(
            AdvertiseKeys(
                round=self.round,
                c_public=self._keys.c_public,
                s_public=self._keys.s_public,
                signature=signature,
            )
        )

    def _check_peer_keys(
        self, v: int, c_public: bytes, s_public: bytes, signature: bytes | None
    ) -> str | None:
        """Why peer ``v``'s advertised keys are unacceptable, or ``None``."""
        if self.config.identities:
            verify_key = self._verify_keys.get(v)
            if verify_key is None:
                return "no registered identity"
            if signature is None:
                return "keys are not signed"
            statement = K.keys_statement(round_=self.round, client_id=v, c_public=c_public, s_public=s_public)
            if not K.verify_signature(verify_key, statement, signature):
                return "bad signature on advertised keys"
        try:
            K.check_public_key(c_public)
            K.check_public_key(s_public)
        except ValueError as exc:
            return str(exc)
        return None

    def _on_keys(self, msg: KeysBroadcast) -> None:
        assert self._keys is not None
        offered = set(msg.c_publics)
        strangers = offered - self._neighbors
        if strangers:
            raise RemoteProtocolError(
                f"server sent keys of clients that are not neighbours: {sorted(strangers)[:5]}"
            )
        s_private = bytes(self._keys.s_private)
        for v in sorted(offered):
            reason = self._check_peer_keys(v, msg.c_publics[v], msg.s_publics[v], msg.signatures.get(v))
            if reason is not None:
                self.peer_failures[v] = reason
                continue
            self._boxes[v] = nacl.public.Box(self._keys.c_private, nacl.public.PublicKey(msg.c_publics[v]))
            self._seeds[v] = K.mask_seed(
                s_private, msg.s_publics[v], round_=self.round, u=self.client_id, v=v
            )
        peers = sorted(self._boxes)
        if len(peers) + 1 < self._threshold:
            raise RemoteProtocolError(
                f"only {len(peers)} usable neighbours: shares could never reach t={self._threshold}"
            )
        self._b = self._random_bytes(shamir.SECRET_BYTES)
        xs = [self._x[v] for v in peers] + [self._x[self.client_id]]
        b_shares = shamir.split(self._b, threshold=self._threshold, xs=xs, random_bytes=self._random_bytes)
        s_shares = shamir.split(s_private, threshold=self._threshold, xs=xs, random_bytes=self._random_bytes)
        me = self._x[self.client_id]
        self._own_shares = (b_shares[me], s_shares[me])
        ciphertexts = {}
        for v in peers:
            plain = K.SharePlaintext(
                self.round, self.client_id, v, b_shares[self._x[v]], s_shares[self._x[v]]
            )
            ciphertexts[v] = K.seal(self._boxes[v], plain.pack(), self._random_bytes)
        self._outgoing.append(
            ShareKeys(
                round=self.round,
                ciphertexts=ciphertexts,
                commitment=K.commitment(self._b, round_=self.round, u=self.client_id),
                rejected=dict(self.peer_failures),
            )
        )

    def _on_masked_input_request(self, msg: MaskedInputRequest) -> None:
        senders = frozenset(msg.ciphertexts)
        strangers = senders - self._boxes.keys()
        if strangers:
            raise RemoteProtocolError(
                f"server routed shares from clients this client did not accept: {sorted(strangers)[:5]}"
            )
        if len(senders) + 1 < self._threshold:
            raise RemoteProtocolError(
                f"only {len(senders)} neighbours shared keys: fewer than t={self._threshold} holders"
            )
        for v in sorted(senders):
            try:
                plain = K.open_sealed(self._boxes[v], msg.ciphertexts[v])
                share = K.SharePlaintext.unpack(plain, round_=self.round, sender=v, receiver=self.client_id)
            except ValueError as exc:
                self._share_rejects[v] = f"sealed shares rejected: {exc}"
                self.peer_failures[v] = self._share_rejects[v]
                continue
            self._shares[v] = (share.b_share, share.s_share)
        # Mask with the server's U2 except the senders we reject: the server fails every rejected
        # sender (its masked input never counts) and knows we did not mask with it, so it removes
        # only the masks that were really applied. A sender that garbles all its shares then costs
        # the round nothing, where masking with it would leave masks nobody can rebuild.
        self._mask_peers = senders - self._share_rejects.keys()
        if self._input is not None:
            self._send_masked_input()

    def _send_masked_input(self) -> None:
        assert self._input is not None
        y = np.empty(self._length, dtype=np.uint32)
        stream = MaskStream(self._length)
        stream.add_into(y, self._input, K.self_mask_seed(self._b, round_=self.round, u=self.client_id))
        for v in sorted(self._mask_peers):
            if v < self.client_id:
                stream.add(y, self._seeds[v])
            else:
                stream.subtract(y, self._seeds[v])
        self._masks_applied = 1 + len(self._mask_peers)
        self._input = None
        self._stage = Stage.UNMASKING
        self._outgoing.append(MaskedInput(round=self.round, vector=y, rejected=dict(self._share_rejects)))

    def _on_unmask_request(self, msg: UnmaskRequest) -> None:
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        if survivors & dropped:
            raise RemoteProtocolError(
                f"clients named both survivor and dropped: {sorted(survivors & dropped)[:5]}"
            )
        if self.client_id not in survivors:
            raise RemoteProtocolError("this client is listed as dropped: refusing to reveal its mask key")
        strangers = ((survivors - {self.client_id}) - self._mask_peers) | (dropped - self._mask_peers)
        if strangers:
            raise RemoteProtocolError(
                f"unmask request names clients outside my mask set: {sorted(strangers)[:5]}"
            )
        if len(survivors) < self._threshold:
            raise RemoteProtocolError(
                f"only {len(survivors)} survivors among my neighbours and me (t={self._threshold}): "
                "unmasking would expose too small a sum"
            )
        shares = dict(self._shares)
        shares[self.client_id] = self._own_shares
        b_shares = {v: shamir.share_to_bytes(shares[v][0]) for v in sorted(survivors) if v in shares}
        s_shares = {v: shamir.share_to_bytes(shares[v][1]) for v in sorted(dropped) if v in shares}
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
                K.open_sealed(box, msg.ciphertext),
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
