"""Key material of one round: X25519 pairs, seed derivation, sealed shares and signed key statements.

Each client makes two fresh X25519 pairs per round (Bonawitz et al., CCS 2017, round 0): ``c`` for
``nacl.public.Box`` encryption of Shamir shares and private messages, ``s`` for agreeing pairwise mask
seeds. Because keys are fresh and the round and the ordered pair enter every derivation, no seed or
ciphertext of one round is valid in another.

Plaintexts that travel under a ``Box`` start with a one-byte kind, the round, the sender and the
receiver, so that a ciphertext reflected back to its author, replayed in another round or routed to the
wrong client is recognised: ``Box(c_u, c_v)`` and ``Box(c_v, c_u)`` share one key, so the ids inside are
what tells direction.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from clipfl.secagg.shamir import SHARE_BYTES

__all__ = [
    "BOX_OVERHEAD",
    "KEY_BYTES",
    "PRIVATE_OVERHEAD",
    "SHARE_CIPHERTEXT_BYTES",
    "SHARE_PLAINTEXT_BYTES",
    "SIGNATURE_BYTES",
    "PrivatePlaintext",
    "RoundKeys",
    "SharePlaintext",
    "check_public_key",
    "commitment",
    "consistency_statement",
    "instructions_digest",
    "keys_digest",
    "keys_statement",
    "mask_seed",
    "public_key_of",
    "self_mask_seed",
    "share_commitment",
    "sign_keys",
    "verify_signature",
]

KEY_BYTES = 32
SIGNATURE_BYTES = 64
NONCE_BYTES = nacl.public.Box.NONCE_SIZE
BOX_OVERHEAD = NONCE_BYTES + 16  # nonce, then the Poly1305 tag (crypto_box_MACBYTES)
RandomBytes = Callable[[int], bytes]

_HEADER = struct.Struct(">BQQQ")  # kind, round, sender, receiver
_SHARE_KIND = 0x53  # "S"
_PRIVATE_KIND = 0x4D  # "M"
_SEQ = struct.Struct(">I")
SHARE_PLAINTEXT_BYTES = _HEADER.size + 2 * SHARE_BYTES
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + BOX_OVERHEAD
PRIVATE_OVERHEAD = _HEADER.size + _SEQ.size + BOX_OVERHEAD


@dataclass(frozen=True, slots=True)
class RoundKeys:
    """A client's two X25519 key pairs for one round, as 32-byte strings."""

    c_private: bytes
    s_private: bytes
    c_public: bytes
    s_public: bytes

    @classmethod
    def generate(cls, random_bytes: RandomBytes) -> RoundKeys:
        c_private, s_private = random_bytes(KEY_BYTES), random_bytes(KEY_BYTES)
        return cls(c_private, s_private, public_key_of(c_private), public_key_of(s_private))


def check_public_key(public: bytes) -> None:
    """``ValueError`` unless ``public`` is 32 bytes and not a low-order point (which zeroes secrets)."""
    if len(public) != KEY_BYTES:
        raise ValueError(f"a public key is {KEY_BYTES} bytes, got {len(public)}")
    try:
        nacl.bindings.crypto_scalarmult(b"\x01" * 31 + b"\x40", public)
    except Exception as exc:  # libsodium refuses an all-zero shared secret
        raise ValueError("public key is a low-order point") from exc


def public_key_of(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private scalar (to check a rebuilt ``s_u``)."""
    return nacl.bindings.crypto_scalarmult_base(private)


def _ids(round_: int, a: int, b: int) -> bytes:
    return struct.pack(">QQQ", round_, a, b)


def mask_seed(s_private: bytes, peer_s_public: bytes, *, round_: int, u: int, v: int) -> bytes:
    """The pairwise seed ``s_uv``: BLAKE2b keyed by the X25519 secret over (round, min, max).

    Raises ``ValueError`` for a low-order peer key.
    """
    try:
        shared = nacl.bindings.crypto_scalarmult(s_private, peer_s_public)
    except Exception as exc:
        raise ValueError("peer mask key is a low-order point") from exc
    data = _ids(round_, min(u, v), max(u, v))
    return hashlib.blake2b(data, digest_size=32, key=shared, person=b"clipfl.mask.v1").digest()


def self_mask_seed(b: bytes, *, round_: int, u: int) -> bytes:
    """The PRG key of client ``u``'s self mask, from its shared secret ``b_u``."""
    return hashlib.blake2b(_ids(round_, u, u), digest_size=32, key=b, person=b"clipfl.self.v1").digest()


def commitment(b: bytes, *, round_: int, u: int) -> bytes:
    """A hiding, binding commitment to ``b_u``: lets the server verify a rebuilt ``b_u``."""
    return hashlib.blake2b(_ids(round_, u, u), digest_size=32, key=b, person=b"clipfl.commit.v1").digest()


def instructions_digest(instructions: bytes) -> bytes:
    """The 32-byte hash of what a client trains under (opaque bytes from the driver), bound into
    every statement it signs, so clients given different instructions cannot agree (attack 8)."""
    return hashlib.blake2b(bytes(instructions), digest_size=32, person=b"clipfl.instr.v1").digest()


def keys_statement(
    *, round_: int, client_id: int, c_public: bytes, s_public: bytes, instructions: bytes = bytes(32)
) -> bytes:
    """The bytes a client signs with its Ed25519 identity to vouch for its advertised keys.

    ``instructions`` is the ``instructions_digest`` of what it was told to train under.
    """
    return b"clipfl.secagg.keys.v2" + _ids(round_, client_id, client_id) + c_public + s_public + instructions


def keys_digest(round_: int, keys: Mapping[int, tuple[bytes, bytes]]) -> bytes:
    """A hash of every advertised key pair of the round (id -> (c, s)): the SecAgg+ graph seed.

    Every client computes it from the broadcast it verified, so the server cannot choose the graph;
    it is also signed in the consistency check, so clients shown different key sets disagree.
    """
    h = hashlib.blake2b(struct.pack(">Q", round_), digest_size=32, person=b"clipfl.keyset.v1")
    for cid in sorted(keys):
        c_public, s_public = keys[cid]
        h.update(struct.pack(">Q", cid) + c_public + s_public)
    return h.digest()


def consistency_statement(
    *, round_: int, survivors: Iterable[int], keys: bytes, instructions: bytes
) -> bytes:
    """What a client signs in the consistency check (Bonawitz et al., CCS 2017, round 4 of the active
    protocol): the round, the survivor set U3 the server announced, the key-set digest it saw and its
    instructions digest. Shares are revealed only against ``t`` signatures on these exact bytes."""
    ids = sorted(survivors)
    h = hashlib.blake2b(struct.pack(f">{len(ids)}Q", *ids), digest_size=32, person=b"clipfl.u3.v1")
    return b"clipfl.secagg.consistency.v1" + struct.pack(">Q", round_) + h.digest() + keys + instructions


def share_commitment(*, round_: int, dealer: int, holder: int, kind: bytes, share: int) -> bytes:
    """A binding commitment to one Shamir share (``kind`` b"b" or b"s") that ``dealer`` gave ``holder``.

    The dealer publishes one per holder; the holder checks its share against it on receipt, and the
    server checks every revealed share against it, so a lying holder is identified with one hash
    instead of a search over subsets. Hiding: a share of a degree ``t - 1`` polynomial is uniform, and
    ``t - 1`` known shares leave the 256-bit secret to guess before any other commitment can be tested.
    """
    data = _ids(round_, dealer, holder) + kind + share.to_bytes(SHARE_BYTES, "big")
    return hashlib.blake2b(data, digest_size=32, person=b"clipfl.share.v1").digest()


def _check_header(data: bytes, kind: int, round_: int, sender: int, receiver: int) -> None:
    got_kind, got_round, got_sender, got_receiver = _HEADER.unpack_from(data)
    if got_kind != kind:
        raise ValueError("plaintext of the wrong kind")
    if got_round != round_:
        raise ValueError(f"plaintext is for round {got_round}, not {round_}")
    if (got_sender, got_receiver) != (sender, receiver):
        raise ValueError(f"plaintext is from {got_sender} to {got_receiver}, not from {sender} to {receiver}")


@dataclass(frozen=True, slots=True)
class SharePlaintext:
    """The pair of Shamir shares (of ``b_u`` and ``s_u``) that ``sender`` gives ``receiver``."""

    round: int
    sender: int
    receiver: int
    b_share: int
    s_share: int

    def pack(self) -> bytes:
        return (
            _HEADER.pack(_SHARE_KIND, self.round, self.sender, self.receiver)
            + self.b_share.to_bytes(SHARE_BYTES, "big")
            + self.s_share.to_bytes(SHARE_BYTES, "big")
        )

    @classmethod
    def unpack(cls, data: bytes, *, round_: int, sender: int, receiver: int) -> SharePlaintext:
        """Parse and check the ids; ``ValueError`` names what is wrong."""
        if len(data) != SHARE_PLAINTEXT_BYTES:
            raise ValueError(f"share plaintext is {len(data)} bytes, not {SHARE_PLAINTEXT_BYTES}")
        _check_header(data, _SHARE_KIND, round_, sender, receiver)
        offset = _HEADER.size
        b_share = int.from_bytes(data[offset : offset + SHARE_BYTES], "big")
        s_share = int.from_bytes(data[offset + SHARE_BYTES :], "big")
        return cls(round_, sender, receiver, b_share, s_share)


@dataclass(frozen=True, slots=True)
class PrivatePlaintext:
    """A client-to-client message; ``seq`` rises per (sender, receiver) so replays are refused."""

    round: int
    sender: int
    receiver: int
    seq: int
    payload: bytes

    def pack(self) -> bytes:
        return (
            _HEADER.pack(_PRIVATE_KIND, self.round, self.sender, self.receiver)
            + _SEQ.pack(self.seq)
            + self.payload
        )

    @classmethod
    def unpack(cls, data: bytes, *, round_: int, sender: int, receiver: int) -> PrivatePlaintext:
        if len(data) < _HEADER.size + _SEQ.size:
            raise ValueError("private plaintext is too short")
        _check_header(data, _PRIVATE_KIND, round_, sender, receiver)
        (seq,) = _SEQ.unpack_from(data, _HEADER.size)
        return cls(round_, sender, receiver, seq, bytes(data[_HEADER.size + _SEQ.size :]))


def sign_keys(signing_key: nacl.signing.SigningKey, statement: bytes) -> bytes:
    """The detached 64-byte Ed25519 signature of a key statement."""
    return bytes(signing_key.sign(statement).signature)


def verify_signature(verify_key: bytes, statement: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``verify_key``'s signature of ``statement``."""
    try:
        nacl.signing.VerifyKey(verify_key).verify(statement, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False
    return True
