"""The server side of secure aggregation as a sans-IO state machine.

Bonawitz et al. (CCS 2017) with the SecAgg+ graph of Bell et al. (CCS 2020); the theory of operation
and the table of legal moves are in ``clipfl.secagg.stages``.

The driver calls ``start``, routes each client's message to ``receive(client_id, message)``, sends what
``data_to_send`` returns, and calls ``expire_stage`` when the stage deadline fires; the server also
moves on by itself as soon as every live client has answered (``waiting_for`` is then empty). A
client's fault (a malformed, inconsistent or late message) fails that client for the round with a
reason in ``failures``; it never raises and never reaches the sum. ``LocalProtocolError`` is raised
only for the driver's own misuse (``receive`` before ``start``, ``result`` before ``done``).

Memory: the masked vectors of the collection stage are kept (by reference) until the stage ends, so
that a client accused by a peer, or failed by the driver, can still be taken out of the sum; the
sum itself is formed when unmasking completes.

Every share a client reveals is checked against the per-share commitment its dealer published, so a
lying holder is identified with one hash and failed, and its share skipped: a lie cannot abort the
round (Bonawitz et al. leave robustness against lying clients open; per-share commitments make it
linear work instead of a search over subsets). Every rebuilt secret is checked too (``b_u`` against
its commitment, ``s_u`` against the advertised public key): a dealer whose verified shares do not
rebuild its committed secret is named in the abort.

Accusations (a client rejecting a peer's keys or shares) cannot be checked by the server. Each client
may accuse at most ``config.max_accusations`` peers in a round: within the budget the accused leaves
the round (both do, when two accuse each other); beyond it the accuser is failed and its accusations
ignored, so one client cannot evict the peers it chooses or abort the round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clipfl.errors import LocalProtocolError, RemoteProtocolError
from clipfl.secagg import keys as K
from clipfl.secagg import shamir
from clipfl.secagg.config import SecAggConfig
from clipfl.secagg.graph import round_graph
from clipfl.secagg.messages import (
    MAX_REASON,
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
from clipfl.secagg.primitives import REAL, Primitives
from clipfl.secagg.roster import Roster
from clipfl.secagg.stages import COMPLETIONS, Role, Stage, next_stage

__all__ = ["SecAggServer", "ServerStatistics"]

logger = logging.getLogger(__name__)

_COLLECTING = frozenset(COMPLETIONS)


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    round: int
    stage: str
    clients: int
    alive: int
    failed: int
    survivors: int
    dropped: int
    messages_received: int
    ignored_messages: int
    relayed: int
    undeliverable: int


class SecAggServer:
    """The server's part of one round of SecAgg / SecAgg+ over ``clients``' uint32 vectors."""

    def __init__(
        self,
        *,
        round: int,
        clients: Sequence[int],
        vector_length: int,
        config: SecAggConfig,
        roster: Roster | None = None,
        instructions: bytes = b"",
        primitives: Primitives = REAL,
    ) -> None:
        """``roster``: the operator-signed roster (verified by the caller); with it, advertised keys and
        consistency signatures are checked here too, so a client with a bad signature is failed at
        once instead of making every honest client refuse the round. ``instructions``: the bytes this
        server gave every client to train under (the same for all), which the signatures cover.
        ``primitives``: the cryptography (``REAL``; ``MODELLED`` only in a simulation sized by cost)."""
        ids = list(clients)
        if len(set(ids)) != len(ids) or not all(type(c) is int and c >= 0 for c in ids):
            raise LocalProtocolError("client ids must be distinct non-negative ints")
        if type(vector_length) is not int or vector_length < 1:
            raise LocalProtocolError(f"vector_length must be a positive int, got {vector_length!r}")
        self.round = round
        self.config = config
        self.params = config.resolved(len(ids))  # ConfigError for an impossible round
        self.clients = tuple(sorted(ids))
        self.vector_length = vector_length
        self._identities = roster.identity_keys() if roster is not None else None
        self._crypto = primitives
        self._instructions = K.instructions_digest(instructions)
        self._keys_digest = b""
        self._x = {cid: i + 1 for i, cid in enumerate(self.clients)}
        self._graph: dict[int, frozenset[int]] = {}
        self._stage = Stage.SETUP
        self._aborted: str | None = None
        self._outgoing: list[tuple[int, ServerMessage]] = []
        self._alive = set(self.clients)
        self._answered: set[int] = set()
        self.failures: dict[int, str] = {}
        """Every client failed this round, with the stage and the reason."""
        self._advertised: dict[int, AdvertiseKeys] = {}
        self._sent_keys: dict[int, frozenset[int]] = {}
        self._share_ciphertexts: dict[int, dict[int, bytes]] = {}
        self._commitments: dict[int, bytes] = {}
        self._key_rejects: dict[int, dict[int, str]] = {}
        self._share_commitments: dict[int, dict[int, bytes]] = {}
        self._accusations: dict[int, dict[int, str]] = {}
        self._routed: dict[int, frozenset[int]] = {}
        self._masked: dict[int, np.ndarray] = {}
        self._share_rejects: dict[int, dict[int, str]] = {}
        self._survivors: frozenset[int] = frozenset()
        self._dropped: frozenset[int] = frozenset()
        self._masked_with: dict[int, frozenset[int]] = {}
        self._signatures: dict[int, bytes] = {}
        self._asked: dict[int, tuple[frozenset[int], frozenset[int]]] = {}
        self._b_shares: dict[int, dict[int, int]] = {}
        self._s_shares: dict[int, dict[int, int]] = {}
        self._result: np.ndarray | None = None
        self._received = 0
        self._ignored = 0
        self._relayed = 0
        self._undeliverable = 0

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
    def survivors(self) -> frozenset[int]:
        """Clients whose inputs are in the sum (U3), known once masked inputs are collected.

        A survivor that fails during unmasking stays here (its input is already committed) and also
        appears in ``failures``.
        """
        return self._survivors

    @property
    def graph(self) -> Mapping[int, frozenset[int]]:
        return self._graph

    def waiting_for(self) -> frozenset[int]:
        """Live clients that have not answered the current stage."""
        if self._stage not in _COLLECTING:
            return frozenset()
        return frozenset(self._alive - self._answered)

    def result(self) -> np.ndarray:
        """The uint32 sum of the survivors' inputs, once ``done``."""
        if self._result is None:
            raise LocalProtocolError(f"no result in stage {self._stage.value}: the round is not done")
        return self._result

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            round=self.round,
            stage=self._stage.value,
            clients=len(self.clients),
            alive=len(self._alive),
            failed=len(self.failures),
            survivors=len(self._survivors),
            dropped=len(self._dropped),
            messages_received=self._received,
            ignored_messages=self._ignored,
            relayed=self._relayed,
            undeliverable=self._undeliverable,
        )

    # -- verbs ---------------------------------------------------------------------------------------

    def data_to_send(self) -> list[tuple[int, ServerMessage]]:
        """Drain ``(client_id, message)`` pairs to send, in order."""
        out, self._outgoing = self._outgoing, []
        return out

    def start(self) -> None:
        """Queue ``RoundSetup`` for every client (the graph comes later, from the advertised keys)."""
        if self._stage is not Stage.SETUP:
            raise LocalProtocolError("the round has already started")
        self._stage = Stage.ADVERTISE_KEYS
        setup = RoundSetup(  # one message object for all: n copies of the client list would be O(n^2)
            round=self.round,
            mode=self.params.mode,
            clients=list(self.clients),
            threshold=self.params.threshold,
            neighbors=self.params.neighbors,
            vector_length=self.vector_length,
        )
        for cid in self.clients:
            self._outgoing.append((cid, setup))

    def receive(self, client_id: int, message: ClientMessage) -> None:
        """Process one message from ``client_id``; a bad one fails that client, nothing is raised."""
        if self._stage is Stage.SETUP:
            raise LocalProtocolError("receive() before start()")
        self._received += 1
        if client_id not in self._x:
            self._ignored += 1
            logger.warning(
                "round %d: ignored a message from client %r, not in this round", self.round, client_id
            )
            return
        if self._stage in (Stage.DONE, Stage.ABORTED) or client_id not in self._alive:
            self._ignored += 1
            return
        if getattr(message, "round", None) != self.round:
            self.fail(
                client_id,
                f"message for round {getattr(message, 'round', None)!r}, this is round {self.round}",
            )
            return
        try:
            next_stage(Role.SERVER, self._stage, message)
        except LocalProtocolError as exc:
            self.fail(client_id, str(exc))
            return
        if isinstance(message, RelayPrivate):
            try:
                self._on_relay(client_id, message)
            except RemoteProtocolError as exc:
                self.fail(client_id, str(exc))
            return
        if client_id in self._answered:
            self.fail(client_id, f"answered stage {self._stage.value} twice")
            return
        try:
            if isinstance(message, AdvertiseKeys):
                self._on_advertise(client_id, message)
            elif isinstance(message, ShareKeys):
                self._on_share_keys(client_id, message)
            elif isinstance(message, MaskedInput):
                self._on_masked_input(client_id, message)
            elif isinstance(message, ConsistencySignature):
                self._on_consistency_signature(client_id, message)
            elif isinstance(message, UnmaskShares):
                self._on_unmask_shares(client_id, message)
        except RemoteProtocolError as exc:
            self.fail(client_id, str(exc))
            return
        self._answered.add(client_id)
        self._maybe_complete()

    def fail(self, client_id: int, reason: str) -> None:
        """Drop ``client_id`` for the rest of the round (the driver saw it disconnect, or it misbehaved)."""
        self._fail_quiet(client_id, reason)
        self._maybe_complete()

    def expire_stage(self) -> None:
        """The stage deadline fired: drop who has not answered and move on (or abort)."""
        if self._stage not in _COLLECTING:
            return
        for cid in sorted(self.waiting_for()):
            self._fail_quiet(cid, "missed the stage deadline")
        self._complete()

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _fail_quiet(self, client_id: int, reason: str) -> None:
        if client_id not in self._alive:
            return
        self._alive.discard(client_id)
        self.failures[client_id] = f"{self._stage.value}: {reason}"
        logger.warning(
            "round %d: client %d failed in %s: %s", self.round, client_id, self._stage.value, reason
        )
        if self._stage is Stage.MASKED_INPUT:
            self._masked.pop(client_id, None)

    def _maybe_complete(self) -> None:
        if self._stage in _COLLECTING and not (self._alive - self._answered):
            self._complete()

    def _complete(self) -> None:
        """End the current stage: clients failed here are attributed to it; then move on."""
        stage = self._stage
        if stage is Stage.ADVERTISE_KEYS:
            self._complete_advertise()
        elif stage is Stage.SHARE_KEYS:
            self._complete_share_keys()
        elif stage is Stage.MASKED_INPUT:
            self._complete_masked_input()
        elif stage is Stage.CONSISTENCY:
            self._complete_consistency()
        else:
            self._complete_unmasking()
        if self._stage is not Stage.ABORTED:
            self._stage = COMPLETIONS[stage]
            self._answered = set()

    def _abort(self, reason: str) -> None:
        logger.warning("round %d aborted: %s", self.round, reason)
        self._stage = Stage.ABORTED
        self._aborted = reason
        self._masked.clear()
        self._outgoing = [
            (cid, Abort(round=self.round, reason=reason[:MAX_REASON])) for cid in sorted(self._alive)
        ]

    def _live_members(self, stage_name: str) -> set[int] | None:
        """The live clients, pruned of those whose secrets too few live neighbours could hold;
        ``None`` (after aborting) when fewer than ``t`` remain."""
        t = self.params.threshold
        members = set(self._alive)
        while True:
            if len(members) < t:
                self._abort(f"only {len(members)} clients left after {stage_name}, threshold is {t}")
                return None
            starved = sorted(u for u in members if len(self._graph.get(u, frozenset()) & members) + 1 < t)
            if not starved:
                return members
            for u in starved:
                self._fail_quiet(u, f"fewer than t={t} live share holders among its neighbours")
                members.discard(u)

    # -- stage 0: AdvertiseKeys ----------------------------------------------------------------------

    def _on_advertise(self, u: int, msg: AdvertiseKeys) -> None:
        try:
            self._crypto.check_public_key(msg.c_public)
            self._crypto.check_public_key(msg.s_public)
        except ValueError as exc:
            raise RemoteProtocolError(str(exc)) from exc
        if self._identities is not None:
            statement = K.keys_statement(
                round_=self.round,
                client_id=u,
                c_public=msg.c_public,
                s_public=msg.s_public,
                instructions=self._instructions,
            )
            verify_key = self._identities.get(u)
            if msg.signature is None:
                raise RemoteProtocolError("identities are required but the keys are not signed")
            if verify_key is None or not self._crypto.verify(verify_key, statement, msg.signature):
                raise RemoteProtocolError("bad signature on advertised keys (wrong identity or instructions)")
        self._advertised[u] = msg

    def _complete_advertise(self) -> None:
        members = set(self._alive)
        t = self.params.threshold
        if len(members) < max(t, 2):
            self._abort(f"only {len(members)} clients left after advertising keys, threshold is {t}")
            return
        keys = {v: (self._advertised[v].c_public, self._advertised[v].s_public) for v in members}
        self._keys_digest = K.keys_digest(self.round, keys)
        self._graph = round_graph(sorted(members), self.params.neighbors, self._keys_digest)
        for u in sorted(members):
            self._sent_keys[u] = self._graph[u]
        signed = all(self._advertised[v].signature is not None for v in members)
        broadcast = KeysBroadcast(
            round=self.round,
            c_publics={v: keys[v][0] for v in sorted(members)},
            s_publics={v: keys[v][1] for v in sorted(members)},
            signatures={v: self._advertised[v].signature for v in sorted(members)} if signed else {},  # type: ignore[misc]
        )
        for u in sorted(members):
            self._outgoing.append((u, broadcast))

    # -- stage 1: ShareKeys --------------------------------------------------------------------------

    def _on_share_keys(self, u: int, msg: ShareKeys) -> None:
        expected = self._sent_keys[u]
        sealed, rejected = set(msg.ciphertexts), set(msg.rejected)
        if sealed & rejected:
            raise RemoteProtocolError(
                f"both shared with and rejected clients {sorted(sealed & rejected)[:5]}"
            )
        if sealed | rejected != expected:
            unknown = sorted((sealed | rejected) - expected)[:5]
            missing = sorted(expected - sealed - rejected)[:5]
            raise RemoteProtocolError(
                f"wrong set of shares: {len(sealed)} sealed + {len(rejected)} rejected for {len(expected)} "
                f"neighbours (unknown {unknown}, missing {missing})"
            )
        if set(msg.share_commitments) != sealed | {u}:
            raise RemoteProtocolError(
                "share commitments do not name exactly the sealed holders and the dealer"
            )
        if len(sealed) + 1 < self.params.threshold:
            raise RemoteProtocolError(
                f"only {len(sealed)} shares sealed, threshold is {self.params.threshold}"
            )
        for v, ciphertext in msg.ciphertexts.items():
            if len(ciphertext) != K.SHARE_CIPHERTEXT_BYTES:
                raise RemoteProtocolError(
                    f"sealed shares for {v}: {len(ciphertext)} bytes, not {K.SHARE_CIPHERTEXT_BYTES}"
                )
        self._share_ciphertexts[u] = dict(msg.ciphertexts)
        self._commitments[u] = msg.commitment
        self._share_commitments[u] = dict(msg.share_commitments)
        self._key_rejects[u] = dict(msg.rejected)

    def _complete_share_keys(self) -> None:
        self._apply_accusations(self._key_rejects, "rejected the keys of")
        members = self._live_members("sharing keys")
        if members is None:
            return
        for u in sorted(members):
            senders = self._graph[u] & members
            self._routed[u] = frozenset(senders)
            request = MaskedInputRequest(
                round=self.round,
                ciphertexts={v: self._share_ciphertexts[v][u] for v in sorted(senders)},
                share_commitments={v: self._share_commitments[v][u] for v in sorted(senders)},
            )
            self._outgoing.append((u, request))
        self._share_ciphertexts.clear()

    def _apply_accusations(self, accusations: Mapping[int, Mapping[int, str]], verb: str) -> None:
        """Honour accusations within each accuser's budget for the round; fail accusers beyond it.

        All at once, so order does not matter. Two clients that accuse each other both leave.
        """
        budget = self.config.max_accusations
        honoured: dict[int, Mapping[int, str]] = {}
        for accuser in sorted(self._alive):
            new = accusations.get(accuser, {})
            if not new:
                continue
            named = self._accusations.setdefault(accuser, {})
            named.update(new)
            if len(named) > budget:
                self._fail_quiet(
                    accuser,
                    f"accused {len(named)} peers this round, more than the budget of {budget}: "
                    "accusations ignored",
                )
            else:
                honoured[accuser] = new
        accused: dict[int, str] = {}
        for accuser, new in honoured.items():
            for v, reason in sorted(new.items()):
                accused.setdefault(v, f"client {accuser} {verb} it: {reason}")
        for v, reason in accused.items():
            self._fail_quiet(v, reason)

    # -- stage 2: MaskedInputCollection --------------------------------------------------------------

    def _on_masked_input(self, u: int, msg: MaskedInput) -> None:
        vector = msg.vector
        if vector.dtype != np.uint32 or vector.ndim != 1 or vector.shape[0] != self.vector_length:
            raise RemoteProtocolError(
                f"masked vector is {vector.dtype} {vector.shape}, expected uint32 ({self.vector_length},)"
            )
        unknown = set(msg.rejected) - self._routed[u]
        if unknown:
            raise RemoteProtocolError(f"rejects shares from clients that sent it none: {sorted(unknown)[:5]}")
        self._masked[u] = vector
        self._share_rejects[u] = dict(msg.rejected)

    def _complete_masked_input(self) -> None:
        self._apply_accusations(self._share_rejects, "could not open the shares of")
        t = self.params.threshold
        survivors = frozenset(self._alive)
        dropped = frozenset(self._routed) - survivors
        if len(survivors) < t:
            self._abort(f"only {len(survivors)} masked inputs, threshold is {t}")
            return
        for u in sorted(survivors):
            if len(self._graph[u] & survivors) + 1 < t:
                self._abort(f"client {u} has {len(self._graph[u] & survivors)} surviving neighbours; t={t}")
                return
        masked_with = {
            v: frozenset(w for w in self._graph[v] & survivors if v not in self._share_rejects.get(w, {}))
            for v in dropped
        }
        for v in sorted(dropped):
            if masked_with[v] and len(masked_with[v]) < t:
                self._abort(f"dropped client {v} has {len(masked_with[v])} surviving share holders; t={t}")
                return
        self._survivors, self._dropped, self._masked_with = survivors, dropped, masked_with
        check = ConsistencyCheck(round=self.round, survivors=sorted(survivors))
        for u in sorted(survivors):
            self._outgoing.append((u, check))

    # -- stage 3: ConsistencyCheck ------------------------------------------------------------------

    def _on_consistency_signature(self, u: int, msg: ConsistencySignature) -> None:
        if self._identities is not None:
            statement = K.consistency_statement(
                round_=self.round,
                survivors=self._survivors,
                keys=self._keys_digest,
                instructions=self._instructions,
            )
            identity = self._identities[u]
            if msg.signature is None or not self._crypto.verify(identity, statement, msg.signature):
                raise RemoteProtocolError("bad consistency signature on the survivor set")
        if msg.signature is not None:
            self._signatures[u] = msg.signature

    def _complete_consistency(self) -> None:
        t = self.params.threshold
        signers = frozenset(self._alive & self._survivors)
        needed = self.params.consistency if self._identities is not None else t
        if len(signers) < max(t, needed):
            self._abort(
                f"only {len(signers)} clients answered the consistency check, {max(t, needed)} needed"
            )
            return
        signatures = {v: self._signatures[v] for v in sorted(signers) if v in self._signatures}
        request = UnmaskRequest(round=self.round, signatures=signatures)
        for u in sorted(signers):
            lacking = self._share_rejects.get(u, {})
            asked = (
                frozenset(self._graph[u] & self._survivors | {u}),
                frozenset(v for v in self._graph[u] & self._dropped if v not in lacking),
            )
            self._asked[u] = asked
            self._outgoing.append((u, request))

    # -- stage 3: Unmasking --------------------------------------------------------------------------

    def _on_unmask_shares(self, u: int, msg: UnmaskShares) -> None:
        survivors, dropped = self._asked[u]
        for name, got, wanted in (("b", msg.b_shares, survivors), ("s", msg.s_shares, dropped)):
            if set(got) != wanted:
                raise RemoteProtocolError(
                    f"wrong number of {name}-shares: {len(got)} for {sorted(got)[:5]}, expected {len(wanted)}"
                )
        parsed: list[tuple[dict[int, dict[int, int]], int, int]] = []
        for kind, store, shares in (
            (b"b", self._b_shares, msg.b_shares),
            (b"s", self._s_shares, msg.s_shares),
        ):
            for v, data in shares.items():
                try:
                    y = shamir.share_from_bytes(data)
                except ValueError as exc:
                    raise RemoteProtocolError(f"share of client {v}: {exc}") from exc
                committed = self._share_commitments[v][u]
                expected = committed[:32] if kind == b"b" else committed[32:]
                if K.share_commitment(round_=self.round, dealer=v, holder=u, kind=kind, share=y) != expected:
                    raise RemoteProtocolError(
                        f"revealed a {kind.decode()}-share of client {v} that does not match its commitment"
                    )
                parsed.append((store, v, y))
        for store, v, y in parsed:
            store.setdefault(v, {})[self._x[u]] = y

    def _complete_unmasking(self) -> None:
        t, round_ = self.params.threshold, self.round
        b_secrets: dict[int, bytes] = {}
        for u in sorted(self._survivors):
            shares = self._b_shares.get(u, {})
            b = self._rebuild(u, shares, b"b")
            if b is None:
                self._abort(
                    f"cannot rebuild the self-mask secret of client {u} from {len(shares)} verified "
                    f"shares (t={t})"
                )
                return
            b_secrets[u] = b
        s_secrets: dict[int, bytes] = {}
        for v in sorted(self._dropped):
            if not self._masked_with[v]:
                continue
            shares = self._s_shares.get(v, {})
            s = self._rebuild(v, shares, b"s")
            if s is None:
                self._abort(
                    f"cannot rebuild the mask key of dropped client {v} from {len(shares)} shares (t={t})"
                )
                return
            s_secrets[v] = s
        total = np.zeros(self.vector_length, dtype=np.uint32)
        for u in sorted(self._survivors):
            np.add(total, self._masked[u], out=total)
        stream = self._crypto.mask_stream(self.vector_length)
        for u, b in b_secrets.items():
            stream.subtract(total, K.self_mask_seed(b, round_=round_, u=u))
        for v, s in s_secrets.items():
            for u in sorted(self._masked_with[v]):
                seed = self._crypto.mask_seed(s, self._advertised[u].s_public, round_=round_, u=u, v=v)
                # u added PRG(s_uv) when v < u and subtracted it when v > u: undo that.
                if v < u:
                    stream.subtract(total, seed)
                else:
                    stream.add(total, seed)
        self._masked.clear()
        self._b_shares.clear()
        self._s_shares.clear()
        self._result = total

    def _rebuild(self, dealer: int, shares: Mapping[int, int], kind: bytes) -> bytes | None:
        """The secret of ``dealer`` from ``t`` shares already checked against their commitments.

        Honest shares of an honest dealer lie on one polynomial, so any ``t`` give the secret: one
        interpolation, no search. ``None`` when too few arrived, or when the dealer's own verified
        shares do not rebuild what it committed to (then the dealer lied, and the abort says so).
        """
        t = self.params.threshold
        if len(shares) < t:
            return None
        try:
            secret = self._crypto.combine(shares, t)
        except ValueError:
            secret = None
        if kind == b"b":
            valid = (
                secret is not None
                and K.commitment(secret, round_=self.round, u=dealer) == (self._commitments[dealer])
            )
        else:
            advertised = self._advertised[dealer].s_public
            valid = secret is not None and self._crypto.public_key_of(secret) == advertised
        if secret is None or not valid:
            logger.warning(
                "round %d: client %d dealt shares that do not rebuild its secret", self.round, dealer
            )
            return None
        return secret

    # -- the client-to-client channel ----------------------------------------------------------------

    def _on_relay(self, u: int, msg: RelayPrivate) -> None:
        allowed = self._sent_keys.get(u, frozenset())
        strangers = set(msg.ciphertexts) - allowed
        if strangers:
            raise RemoteProtocolError(
                f"private message for clients it holds no keys of: {sorted(strangers)[:5]}"
            )
        limit = self.config.max_private_bytes + K.PRIVATE_OVERHEAD
        for r, ciphertext in msg.ciphertexts.items():
            if not K.PRIVATE_OVERHEAD <= len(ciphertext) <= limit:
                raise RemoteProtocolError(
                    f"private ciphertext for {r} of {len(ciphertext)} bytes, limit {limit}"
                )
        for r, ciphertext in sorted(msg.ciphertexts.items()):
            if r in self._alive:
                self._outgoing.append((r, PrivateDelivery(round=self.round, sender=u, ciphertext=ciphertext)))
                self._relayed += 1
            else:
                self._undeliverable += 1
