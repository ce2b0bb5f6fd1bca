"""The mask generator: a 32-byte seed expanded by AES-256-CTR straight into a NumPy uint32 buffer.

Measured on this project's 2-core Xeon (AES-NI, AVX2), one core, 1.5M uint32 (6 MB) per call,
best of 10, measured while choosing (``benchmarks/secagg.py`` reports the chosen one each run):

============================================  ==========
AES-256-CTR, ``cryptography`` ``update_into``  8.0 GB/s
AES-128-CTR, same                              10.3 GB/s
ChaCha20, ``cryptography`` (OpenSSL)           6.6 GB/s
ChaCha20-Poly1305 via PyNaCl (allocates)       0.86 GB/s
============================================  ==========

PyNaCl 1.6 exposes no raw ChaCha20 keystream (only the AEAD constructions, which allocate and
authenticate), so libsodium is out; OpenSSL's AES-256-CTR through ``Cipher.update_into`` writes the
keystream of an all-zero input into a preallocated buffer without a copy and takes the 32-byte seed as
its key unchanged. Every seed is derived for one round and one purpose (``keys.py``), so the fixed zero
counter block never repeats under one key. On a CPU without AES-NI ChaCha20 would be the better pick.

Adding the mask to a vector is a second pass (``np.add(..., out=...)``, wrapping modulo 2^32), about
0.4 ms for 1.5M coordinates; ``MaskStream`` reuses one keystream buffer for a client's k+1 masks,
and all streams of a process share one read-only zero source.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["SEED_BYTES", "MaskStream", "expand"]

SEED_BYTES = 32
_COUNTER_BLOCK = bytes(16)


def _check_seed(seed: bytes) -> None:
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes")


_zero_source = np.zeros(0, dtype=np.uint8)


def _zeros(nbytes: int) -> memoryview:
    """A read-only view of ``nbytes`` zeros, from one buffer shared by every stream of the process.

    The keystream is the encryption of zeros; sharing the zeros saves each client and each round a
    fresh multi-megabyte allocation and its page faults.
    """
    global _zero_source
    if _zero_source.nbytes < nbytes:
        _zero_source = np.zeros(nbytes, dtype=np.uint8)
        _zero_source.flags.writeable = False
    return _zero_source[:nbytes].data


class MaskStream:
    """Expands seeds into masks of one fixed length, reusing a keystream buffer."""

    __slots__ = ("_keystream", "_zeros", "length")

    def __init__(self, length: int) -> None:
        if length < 1:
            raise ValueError(f"mask length must be positive, got {length}")
        self.length = length
        self._zeros = _zeros(4 * length)
        self._keystream = np.empty(length, dtype=np.uint32)

    def keystream(self, seed: bytes) -> np.ndarray:
        """``PRG(seed)`` as uint32; the returned array is overwritten by the next call."""
        _check_seed(seed)
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(_COUNTER_BLOCK)).encryptor()
        encryptor.update_into(self._zeros, self._keystream.view(np.uint8).data)
        return self._keystream

    def add(self, target: np.ndarray, seed: bytes) -> None:
        """``target += PRG(seed)`` modulo 2^32, in place."""
        self._check_target(target)
        np.add(target, self.keystream(seed), out=target)

    def add_into(self, out: np.ndarray, source: np.ndarray, seed: bytes) -> None:
        """``out = source + PRG(seed)`` modulo 2^32: the first mask without a separate copy pass."""
        self._check_target(out)
        self._check_target(source)
        np.add(source, self.keystream(seed), out=out)

    def subtract(self, target: np.ndarray, seed: bytes) -> None:
        """``target -= PRG(seed)`` modulo 2^32, in place."""
        self._check_target(target)
        np.subtract(target, self.keystream(seed), out=target)

    def _check_target(self, target: np.ndarray) -> None:
        if target.dtype != np.uint32 or target.shape != (self.length,):
            raise ValueError(
                f"masks apply to uint32 vectors of {self.length}, got {target.dtype} {target.shape}"
            )


def expand(seed: bytes, length: int) -> np.ndarray:
    """A fresh uint32 array holding ``PRG(seed)`` of ``length`` coordinates."""
    return MaskStream(length).keystream(seed)
