"""A roster of client identities that the server cannot forge: id -> Ed25519 identity -> CurveZMQ key.

Why: secure aggregation is only as private as the clients' knowledge of each other's keys. If the server
could hand a client keys of its own choosing for a peer, it would open every share that client seals
(Bonawitz et al., CCS 2017, section 6: the active setting needs a PKI). The roster is that PKI: an
operator, who is not the server, signs one list binding each client id to its Ed25519 identity verify
key (which signs the client's per-round keys) and, when there is one, to its CurveZMQ public key
(which the server uses to admit the connection: one id per key). Clients get the operator's verify key
out of band and accept a peer's keys only when they carry a valid signature by the identity that the
roster lists for that peer's id.

The signature covers the canonical msgpack encoding of the roster's body (version, federation name,
entries sorted by id), so the exact signed bytes are reproducible on every machine. The file format is
one msgpack map ``{"body": bytes, "operator": 32 bytes, "signature": 64 bytes}``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import msgpack
import nacl.exceptions
import nacl.signing

from clipfl.errors import ConfigError

__all__ = ["ROSTER_VERSION", "Roster", "RosterEntry"]

ROSTER_VERSION = 1
_MAX_ROSTER_BYTES = 16 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RosterEntry:
    """One client: its id, its Ed25519 identity verify key, and its CurveZMQ public key if any."""

    client_id: int
    identity_key: bytes
    curve_key: bytes | None = None

    def __post_init__(self) -> None:
        if type(self.client_id) is not int or not 0 <= self.client_id < 1 << 63:
            raise ConfigError(f"roster client id must be an int in [0, 2^63), got {self.client_id!r}")
        if type(self.identity_key) is not bytes or len(self.identity_key) != 32:
            raise ConfigError(f"roster identity key of client {self.client_id} must be 32 bytes")
        if self.curve_key is not None and (
            type(self.curve_key) is not bytes or not 1 <= len(self.curve_key) <= 64
        ):
            raise ConfigError(f"roster CurveZMQ key of client {self.client_id} must be 1 to 64 bytes")


def _body(federation: str, entries: Iterable[RosterEntry]) -> bytes:
    rows = [[e.client_id, e.identity_key, e.curve_key] for e in sorted(entries, key=lambda e: e.client_id)]
    return msgpack.packb([ROSTER_VERSION, federation, rows], use_bin_type=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Roster:
    """The signed roster. Build with ``Roster.sign``, read with ``Roster.load`` (which verifies)."""

    federation: str
    entries: tuple[RosterEntry, ...]
    operator_key: bytes
    signature: bytes
    _by_id: Mapping[int, RosterEntry] = field(init=False, repr=False, compare=False)
    _identities: Mapping[int, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = [e.client_id for e in self.entries]
        if len(set(ids)) != len(ids):
            raise ConfigError("roster lists a client id twice")
        curves = [e.curve_key for e in self.entries if e.curve_key is not None]
        if len(set(curves)) != len(curves):
            raise ConfigError("roster binds one CurveZMQ key to two client ids")
        identities = [e.identity_key for e in self.entries]
        if len(set(identities)) != len(identities):
            raise ConfigError("roster binds one identity key to two client ids")
        object.__setattr__(self, "entries", tuple(sorted(self.entries, key=lambda e: e.client_id)))
        # read-only indexes, built once: every client of a round looks itself and its peers up
        object.__setattr__(self, "_by_id", MappingProxyType({e.client_id: e for e in self.entries}))
        by_identity = {e.client_id: e.identity_key for e in self.entries}
        object.__setattr__(self, "_identities", MappingProxyType(by_identity))

    # -- building and checking ----------------------------------------------------------------------

    @classmethod
    def sign(
        cls, entries: Iterable[RosterEntry], operator: nacl.signing.SigningKey, *, federation: str = "clipfl"
    ) -> Roster:
        """The roster of ``entries`` signed by the operator's Ed25519 key."""
        entries = tuple(entries)
        body = _body(federation, entries)
        signature = bytes(operator.sign(body).signature)
        return cls(
            federation=federation,
            entries=entries,
            operator_key=bytes(operator.verify_key),
            signature=signature,
        )

    @property
    def body(self) -> bytes:
        """The exact bytes the operator signed."""
        return _body(self.federation, self.entries)

    def verify(self, operator_verify_key: bytes) -> None:
        """``ConfigError`` unless this roster carries a valid signature by ``operator_verify_key``.

        The key to check against must come out of band (never from the server or the roster file).
        """
        if bytes(operator_verify_key) != self.operator_key:
            raise ConfigError("the roster was signed by another operator key: get the right roster or key")
        try:
            nacl.signing.VerifyKey(bytes(operator_verify_key)).verify(self.body, self.signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError) as exc:
            raise ConfigError("the roster's signature is invalid: it was altered after signing") from exc

    # -- lookups -------------------------------------------------------------------------------------

    @property
    def client_ids(self) -> frozenset[int]:
        return frozenset(e.client_id for e in self.entries)

    def entry(self, client_id: int) -> RosterEntry | None:
        return self._by_id.get(client_id)

    def identity_keys(self) -> Mapping[int, bytes]:
        """Each client id's Ed25519 identity verify key."""
        return self._identities

    def client_for_curve_key(self, curve_key: bytes) -> int | None:
        """The one client id that may connect with ``curve_key`` (attack 7: one id per key), or ``None``."""
        for e in self.entries:
            if e.curve_key is not None and e.curve_key == bytes(curve_key):
                return e.client_id
        return None

    # -- files ---------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        return msgpack.packb(
            {"body": self.body, "operator": self.operator_key, "signature": self.signature}, use_bin_type=True
        )

    @classmethod
    def from_bytes(cls, data: bytes, operator_verify_key: bytes) -> Roster:
        """Parse and verify against the operator key; ``ConfigError`` for anything wrong."""
        try:
            outer = msgpack.unpackb(data, raw=False, strict_map_key=True)
            body, operator, signature = outer["body"], outer["operator"], outer["signature"]
            version, federation, rows = msgpack.unpackb(body, raw=False)
            if version != ROSTER_VERSION:
                raise ConfigError(f"roster format version {version}, this clipfl reads {ROSTER_VERSION}")
            entries = tuple(
                RosterEntry(client_id=cid, identity_key=ident, curve_key=curve) for cid, ident, curve in rows
            )
            roster = cls(federation=federation, entries=entries, operator_key=operator, signature=signature)
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise ConfigError(f"not a clipfl roster: {exc}") from exc
        if roster.body != body:
            raise ConfigError(
                "the roster body is not in canonical form: re-sign it with python -m clipfl.keys"
            )
        roster.verify(operator_verify_key)
        return roster

    def save(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.write_bytes(self.to_bytes())
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], operator_verify_key: bytes) -> Roster:
        """Read ``path`` and verify it against ``operator_verify_key``."""
        source = Path(path)
        try:
            if source.stat().st_size > _MAX_ROSTER_BYTES:
                raise ConfigError(f"roster {source} is larger than {_MAX_ROSTER_BYTES} bytes")
            data = source.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the roster {source}: {exc.strerror}") from exc
        return cls.from_bytes(data, operator_verify_key)
