"""Which connection is which registered client: connection bookkeeping, apart from protocol state.

A connection (a transport peer) is bound to at most one client id, and an id to at most one
connection. Binding a connection that already speaks for another id clears that id's session, so
that no round ever waits for a client whose connection now answers to another name. Each session
has a secret token (sent in ``Welcome``); while an id's connection is alive, only a registration
that carries the token may move the id to another connection (``may_take``). Under CurveZMQ each
admitted key is bound to the first id it registers as: one key, one id, for the whole run
(``key_conflict``), so an admitted client can neither take another's id nor hold several.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from clipfl.engine.update import ClientInfo
from clipfl.messages import TOKEN_BYTES

__all__ = ["ClientSession", "Sessions"]


@dataclass(slots=True)
class ClientSession:
    info: ClientInfo
    peer: bytes | None
    credential: str | None = None
    token: bytes = field(default_factory=lambda: secrets.token_bytes(TOKEN_BYTES), repr=False)


class Sessions:
    def __init__(self) -> None:
        self._by_id: dict[int, ClientSession] = {}
        self._by_peer: dict[bytes, int] = {}
        self._by_key: dict[str, int] = {}

    def client_of(self, peer: bytes) -> int | None:
        return self._by_peer.get(peer)

    def peer_of(self, client_id: int) -> bytes | None:
        session = self._by_id.get(client_id)
        return session.peer if session is not None else None

    def may_take(self, client_id: int, peer: bytes, token: bytes | None, credential: str | None) -> bool:
        """Whether ``peer`` may register as ``client_id``: the id is free, not connected, already
        this connection's, or the registration proves it is the same client (its key, or the
        session token)."""
        session = self._by_id.get(client_id)
        if session is None or session.peer is None or session.peer == peer:
            return True
        if credential is not None and credential == session.credential:
            return True
        return token is not None and hmac.compare_digest(token, session.token)

    def key_conflict(self, client_id: int, credential: str | None) -> str | None:
        """Why ``credential`` may not register as ``client_id`` (one key, one id), or None."""
        if credential is None:
            return None
        owner = self._by_key.get(credential)
        if owner is not None and owner != client_id:
            return f"this CurveZMQ key is registered as client {owner}: one key, one client id"
        session = self._by_id.get(client_id)
        if session is not None and session.credential is not None and session.credential != credential:
            return f"client {client_id} registered with another CurveZMQ key"
        return None

    def token_of(self, client_id: int) -> bytes:
        return self._by_id[client_id].token

    def bind(self, info: ClientInfo, peer: bytes, credential: str | None = None) -> list[int]:
        """Bind ``peer`` to ``info.client_id``; return the ids whose sessions this ends.

        The id's previous connection (a reconnect) and the connection's previous id (registering
        again under another name) both lose their binding.
        """
        ended = []
        old_peer = self.peer_of(info.client_id)
        if old_peer is not None and old_peer != peer:
            self._by_peer.pop(old_peer, None)
            ended.append(info.client_id)
        old_id = self._by_peer.get(peer)
        if old_id is not None and old_id != info.client_id:
            self._by_id[old_id].peer = None
            ended.append(old_id)
        self._by_peer[peer] = info.client_id
        known = self._by_id.get(info.client_id)
        if known is not None:  # the same client again: its token stays valid
            known.info, known.peer = info, peer
            known.credential = known.credential or credential
        else:
            self._by_id[info.client_id] = ClientSession(info, peer, credential)
        if credential is not None:
            self._by_key[credential] = info.client_id
        return ended

    def unbind(self, peer: bytes) -> int | None:
        """The connection closed: its client (if any) stays registered but unreachable."""
        client_id = self._by_peer.pop(peer, None)
        if client_id is not None:
            session = self._by_id[client_id]
            if session.peer == peer:
                session.peer = None
        return client_id

    def connected(self) -> list[ClientInfo]:
        return [s.info for s in self._by_id.values() if s.peer is not None]

    def peers(self) -> list[bytes]:
        return [s.peer for s in self._by_id.values() if s.peer is not None]

    def __len__(self) -> int:
        return len(self._by_id)
