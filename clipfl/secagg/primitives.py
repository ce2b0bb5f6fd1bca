"""The cryptography that secure aggregation calls, in one object the protocol is handed.

``SecAggClient`` and ``SecAggServer`` decide everything themselves (stages, thresholds, who dropped,
what to reveal) and call a ``Primitives`` for every cryptographic operation: round keys, the pairwise
channel, mask seeds, signatures, Shamir sharing and mask expansion. ``REAL`` is the cryptography of
``keys.py``, ``shamir.py`` and ``prg.py``: X25519, XSalsa20-Poly1305 boxes, Ed25519, Shamir over
2^521 - 1, AES-256-CTR masks. It is the only one a deployed client or server ever uses.

``MODELLED`` is for the simulator's ``--secagg-cost model`` and nothing else: every message keeps its
exact size and every protocol decision is the real code's, but no operation costs more than a hash:
public keys are hashes of private ones, the channel is a plaintext in a box-sized frame, signatures are
64 zero bytes that always verify, every Shamir share is the secret itself and masks are zero. The sum
is still exact (zero masks cancel), and the simulated time of each step is charged from the cost model
either way, so a simulation gives the same results with both; only its wall time and memory differ.
It protects nothing: it exists so that a 10,000-client federation can be sized on one machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import nacl.bindings
import nacl.exceptions
import nacl.signing
import numpy as np

from clipfl.secagg import keys as K
from clipfl.secagg import shamir
from clipfl.secagg.prg import MaskStream

__all__ = ["MODELLED", "REAL", "Channel", "ModelledPrimitives", "Primitives"]

RandomBytes = Callable[[int], bytes]


class Channel(Protocol):
    """An authenticated, encrypted channel between two clients of one round (through the server)."""

    def seal(self, plaintext: bytes, random_bytes: RandomBytes) -> bytes: ...

    def open(self, sealed: bytes) -> bytes:
        """The plaintext; ``ValueError`` when ``sealed`` does not authenticate."""
        ...


class _BoxChannel:
    """``nacl.public.Box`` between two X25519 keys: ``nonce || XSalsa20-Poly1305 ciphertext``."""

    __slots__ = ("_shared",)

    def __init__(self, c_private: bytes, peer_c_public: bytes) -> None:
        try:
            self._shared = nacl.bindings.crypto_box_beforenm(peer_c_public, c_private)
        except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError, ValueError) as exc:
            raise ValueError(f"peer channel key is unusable: {exc}") from exc

    def seal(self, plaintext: bytes, random_bytes: RandomBytes) -> bytes:
        nonce = random_bytes(K.NONCE_BYTES)
        return nonce + nacl.bindings.crypto_box_easy_afternm(plaintext, nonce, self._shared)

    def open(self, sealed: bytes) -> bytes:
        nonce, ciphertext = sealed[: K.NONCE_BYTES], sealed[K.NONCE_BYTES :]
        try:
            return nacl.bindings.crypto_box_open_easy_afternm(ciphertext, nonce, self._shared)
        except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, ValueError, TypeError) as exc:
            raise ValueError("ciphertext does not open") from exc


class Primitives:
    """The real cryptography (``REAL``); see the module docstring."""

    name = "real"

    def generate_keys(self, random_bytes: RandomBytes) -> K.RoundKeys:
        return K.RoundKeys.generate(random_bytes)

    def check_public_key(self, public: bytes) -> None:
        K.check_public_key(public)

    def public_key_of(self, private: bytes) -> bytes:
        return K.public_key_of(private)

    def channel(self, keys: K.RoundKeys, peer_c_public: bytes) -> Channel:
        """The channel to a peer; ``ValueError`` for an unusable (low-order) key."""
        return _BoxChannel(keys.c_private, peer_c_public)

    def mask_seed(self, s_private: bytes, peer_s_public: bytes, *, round_: int, u: int, v: int) -> bytes:
        return K.mask_seed(s_private, peer_s_public, round_=round_, u=u, v=v)

    def sign(self, signing_key: nacl.signing.SigningKey, statement: bytes) -> bytes:
        return K.sign_keys(signing_key, statement)

    def verify(self, verify_key: bytes, statement: bytes, signature: bytes) -> bool:
        return K.verify_signature(verify_key, statement, signature)

    def split(
        self, secret: bytes, *, threshold: int, xs: Iterable[int], random_bytes: RandomBytes
    ) -> dict[int, int]:
        return shamir.split(secret, threshold=threshold, xs=xs, random_bytes=random_bytes)

    def combine(self, shares: Mapping[int, int], threshold: int) -> bytes:
        return shamir.combine(shares, threshold)

    def mask_stream(self, length: int) -> MaskStream:
        return MaskStream(length)


def _model_public(private: bytes) -> bytes:
    return hashlib.blake2b(private, digest_size=K.KEY_BYTES, person=b"clipfl.model.pk").digest()


class _ClearChannel:
    """A box-sized frame around the plaintext: 24 zero bytes, the plaintext, 16 zero bytes."""

    __slots__ = ()

    def seal(self, plaintext: bytes, random_bytes: RandomBytes) -> bytes:
        return bytes(K.NONCE_BYTES) + plaintext + bytes(K.BOX_OVERHEAD - K.NONCE_BYTES)

    def open(self, sealed: bytes) -> bytes:
        if len(sealed) < K.BOX_OVERHEAD:
            raise ValueError("ciphertext does not open")
        return bytes(sealed[K.NONCE_BYTES : len(sealed) - (K.BOX_OVERHEAD - K.NONCE_BYTES)])


_CLEAR = _ClearChannel()
_ZERO_SEED = bytes(32)


class _ZeroMaskStream(MaskStream):
    """Masks that are all zero: adding or subtracting one changes nothing."""

    __slots__ = ()

    def add(self, target: np.ndarray, seed: bytes) -> None:
        self._check_target(target)

    def subtract(self, target: np.ndarray, seed: bytes) -> None:
        self._check_target(target)

    def add_into(self, out: np.ndarray, source: np.ndarray, seed: bytes) -> None:
        self._check_target(out)
        self._check_target(source)
        np.copyto(out, source)


class ModelledPrimitives(Primitives):
    """No cryptography, same sizes (``MODELLED``): for simulations sized by the cost model only."""

    name = "model"

    def generate_keys(self, random_bytes: RandomBytes) -> K.RoundKeys:
        c_private, s_private = random_bytes(K.KEY_BYTES), random_bytes(K.KEY_BYTES)
        return K.RoundKeys(c_private, s_private, _model_public(c_private), _model_public(s_private))

    def check_public_key(self, public: bytes) -> None:
        if len(public) != K.KEY_BYTES:
            raise ValueError(f"a public key is {K.KEY_BYTES} bytes, got {len(public)}")

    def public_key_of(self, private: bytes) -> bytes:
        return _model_public(private)

    def channel(self, keys: K.RoundKeys, peer_c_public: bytes) -> Channel:
        self.check_public_key(peer_c_public)
        return _CLEAR  # one object for every pair: a client of 10^4 holds a thousand channels

    def mask_seed(self, s_private: bytes, peer_s_public: bytes, *, round_: int, u: int, v: int) -> bytes:
        return _ZERO_SEED  # the masks are zero whatever the seed

    def sign(self, signing_key: nacl.signing.SigningKey, statement: bytes) -> bytes:
        return bytes(K.SIGNATURE_BYTES)

    def verify(self, verify_key: bytes, statement: bytes, signature: bytes) -> bool:
        return len(signature) == K.SIGNATURE_BYTES

    def split(
        self, secret: bytes, *, threshold: int, xs: Iterable[int], random_bytes: RandomBytes
    ) -> dict[int, int]:
        value = int.from_bytes(secret, "big")
        return dict.fromkeys(xs, value)

    def combine(self, shares: Mapping[int, int], threshold: int) -> bytes:
        if threshold < 1 or len(shares) < threshold:
            raise ValueError(f"{len(shares)} shares cannot rebuild a secret of threshold {threshold}")
        return shares[min(shares)].to_bytes(shamir.SECRET_BYTES, "big")

    def mask_stream(self, length: int) -> MaskStream:
        return _ZeroMaskStream(length)


REAL = Primitives()
MODELLED = ModelledPrimitives()
