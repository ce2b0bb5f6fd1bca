"""CurveZMQ for the ZeroMQ transport: encryption of every frame and admission by public key.

CurveZMQ (ZeroMQ's CurveCP handshake, Curve25519 + XSalsa20-Poly1305) encrypts and authenticates
each connection. The server holds one key pair and hands its *public* key to the clients out of band;
every client has its own key pair, and the server admits a client only when the client's public key
is in an allow-list directory (one ``NAME.key`` certificate per allowed client, the format of
``zmq.auth.create_certificates``).

Admission is decided during the handshake by a ZAP handler (ZeroMQ's authentication protocol, RFC 27)
running on the server's event loop: a refused client never completes the handshake, so the ROUTER
socket never sees a single message from it, the transport never reports it, and the server allocates
no per-client state for it. Each refused key is logged once (later attempts by the same key only
count), within a bounded memory, so a stranger retrying forever cannot flood the log or the heap.

The ZAP handler must run before the socket binds: with no handler, libzmq lets any CURVE client in.
``ZmqServerTransport(curve=CurveServer(...))`` takes care of that order.

Secure aggregation is layered on top: CurveZMQ keeps outsiders out; the masks keep the server
itself from reading any single client's update.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from transports.errors import TransportConfigError

__all__ = [
    "ZAP_DOMAIN",
    "AllowList",
    "CurveClient",
    "CurveGate",
    "CurveKeyPair",
    "CurveServer",
    "create_key_pair",
    "load_public_key",
]

log = logging.getLogger("transports.curve")

ZAP_DOMAIN = "transports.curve"  # server-local: ties the server sockets to their ZAP handler
# Distinct refused keys remembered for "log once": past this, refusals are only counted.
MAX_REMEMBERED_REFUSALS = 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True, repr=False)
class CurveKeyPair:
    """A Curve25519 key pair, both halves Z85-encoded (40 ASCII bytes each), as ZeroMQ takes them."""

    public: bytes
    secret: bytes

    def __repr__(self) -> str:  # never print a secret key by accident
        return f"CurveKeyPair(public={self.public.decode()!r}, secret=<hidden>)"

    @classmethod
    def load(cls, secret_file: str | os.PathLike[str]) -> Self:
        """Read a ``*.key_secret`` certificate (it holds both keys)."""
        public, secret = _load_certificate(secret_file)
        if secret is None:
            raise TransportConfigError(
                f"{secret_file} holds only a public key; pass the matching .key_secret file"
            )
        return cls(public, secret)


def _load_certificate(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise TransportConfigError(f"cannot read a CurveZMQ certificate from {path}: {exc}") from exc
    if len(public) != 40 or (secret is not None and len(secret) != 40):
        raise TransportConfigError(f"{path} is not a CurveZMQ certificate (keys must be 40 Z85 characters)")
    return public, secret


def load_public_key(public_file: str | os.PathLike[str]) -> bytes:
    """The Z85 public key of a ``*.key`` (or ``*.key_secret``) certificate."""
    return _load_certificate(public_file)[0]


def create_key_pair(
    directory: str | os.PathLike[str], name: str, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public, to share) and ``NAME.key_secret`` (owner-only) in ``directory``."""
    if not _NAME.match(name):
        raise TransportConfigError(f"key name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if not overwrite and (public.exists() or secret.exists()):
        raise TransportConfigError(
            f"{public} or {secret} already exists; refusing to replace a key (use --force)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the secret file must never exist with wider permissions, even briefly
    try:
        made_public, made_secret = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old_umask)
    os.chmod(made_public, 0o644)
    os.chmod(made_secret, 0o600)
    return Path(made_public), Path(made_secret)


class AllowList:
    """The admitted client public keys: every certificate in one directory (``*.key``, ``*.key_secret``).

    Re-read with ``reload()`` after adding or removing certificates; the running server then admits
    new clients with the new list (established connections stay).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._keys: frozenset[bytes] = frozenset()
        self._logged: set[bytes] = set()
        self.refused = 0
        """Handshakes refused so far (every attempt counts, each key is logged once)."""
        self.reload()

    def reload(self) -> int:
        """Re-read the directory; return how many keys are allowed."""
        if not self.directory.is_dir():
            raise TransportConfigError(f"allow-list {self.directory} is not a directory of client .key files")
        keys = set()
        for path in sorted(self.directory.iterdir()):
            if path.suffix in (".key", ".key_secret") and path.is_file():
                keys.add(load_public_key(path))
        self._keys = frozenset(keys)
        if not keys:
            log.warning("allow-list %s holds no client key: every client will be refused", self.directory)
        return len(keys)

    def __contains__(self, z85_key: object) -> bool:
        return z85_key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, z85_key: bytes, address: str = "") -> bool:
        """Admit or refuse one handshake; log the first refusal of each key."""
        if z85_key in self._keys:
            return True
        self.refused += 1
        where = f" from {address}" if address else ""
        if z85_key in self._logged:
            log.debug("refused CurveZMQ client key %s%s again", z85_key.decode(errors="replace"), where)
        elif len(self._logged) < MAX_REMEMBERED_REFUSALS:
            self._logged.add(z85_key)
            log.warning(
                "refused CurveZMQ client key %s%s: not in the allow-list %s",
                z85_key.decode(errors="replace"),
                where,
                self.directory,
            )
        elif len(self._logged) == MAX_REMEMBERED_REFUSALS:
            self._logged.add(b"")  # the sentinel: say this once
            log.warning(
                "more than %d distinct refused keys: further refusals are only counted",
                MAX_REMEMBERED_REFUSALS,
            )
        return False


class CurveGate(AsyncioAuthenticator):
    """The running ZAP handler of a server context; ``stop()`` it before terminating the context."""

    def __init__(self, context: zmq.Context[Any], allow: AllowList) -> None:
        super().__init__(context, log=logging.getLogger("transports.curve.zap"))
        self.allow_list = allow
        self._address = ""
        outer = self

        class _Provider:
            def callback(self, domain: str, z85_key: bytes) -> bool:
                return outer.allow_list.check(z85_key, outer._address)

        self.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_Provider())

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # The provider's callback is not told the peer's address; requests are handled one at a
        # time on this loop, so remembering it for the duration of one request is safe.
        self._address = msg[3].decode("ascii", "replace") if len(msg) > 3 else ""
        try:
            await super().handle_zap_message(msg)
        finally:
            self._address = ""


@dataclass(frozen=True, slots=True)
class CurveServer:
    """The server side: its key pair and the allow-list directory of client public keys."""

    keys: CurveKeyPair
    allowed_dir: Path

    @classmethod
    def from_files(cls, secret_file: str | os.PathLike[str], allowed_dir: str | os.PathLike[str]) -> Self:
        server = cls(CurveKeyPair.load(secret_file), Path(allowed_dir))
        AllowList(server.allowed_dir)  # fail now, at start-up, on a missing or unreadable directory
        return server

    def start(self, context: zmq.Context[Any]) -> CurveGate:
        """Start the ZAP handler on ``context`` (inside the running event loop)."""
        gate = CurveGate(context, AllowList(self.allowed_dir))
        gate.start()
        log.info("CurveZMQ on: %d allowed client keys in %s", len(gate.allow_list), self.allowed_dir)
        return gate

    def secure(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE server socket (before it binds)."""
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.secret)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.public)


@dataclass(frozen=True, slots=True)
class CurveClient:
    """A client side: its own key pair and the server's public key."""

    keys: CurveKeyPair
    server_key: bytes

    @classmethod
    def from_files(
        cls, secret_file: str | os.PathLike[str], server_public_file: str | os.PathLike[str]
    ) -> Self:
        return cls(CurveKeyPair.load(secret_file), load_public_key(server_public_file))

    def secure(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client of the server (before it connects)."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.secret)
