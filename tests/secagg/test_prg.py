"""The mask PRG: AES-256-CTR keystream as uint32, masks that cancel exactly."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from clipfl.secagg.prg import MaskStream, expand


def test_keystream_is_aes256_of_the_counter_blocks() -> None:
    """Cross-check with a second route: AES-256-ECB of the big-endian counters 0, 1, 2, ..."""
    seed = bytes(range(32))
    counters = b"".join(i.to_bytes(16, "big") for i in range(8))
    ecb = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
    reference = np.frombuffer(ecb.update(counters) + ecb.finalize(), dtype="<u4")
    np.testing.assert_array_equal(expand(seed, 32), reference)


@given(st.binary(min_size=32, max_size=32), st.integers(1, 5000))
def test_expand_is_deterministic_and_prefix_stable(seed: bytes, length: int) -> None:
    a = expand(seed, length)
    assert a.dtype == np.uint32 and a.shape == (length,)
    np.testing.assert_array_equal(a, expand(seed, length + 7)[:length])


def test_different_seeds_give_unrelated_masks() -> None:
    a, b = expand(b"\x00" * 32, 100_000), expand(b"\x00" * 31 + b"\x01", 100_000)
    assert np.mean(a == b) < 1e-3
    assert abs(a.astype(np.float64).mean() / 2**32 - 0.5) < 0.01


def test_add_then_subtract_restores_the_vector_bit_for_bit() -> None:
    x = np.random.default_rng(0).integers(0, 2**32, 1000, dtype=np.uint32)
    y = x.copy()
    stream = MaskStream(1000)
    stream.add(y, b"k" * 32)
    assert not np.array_equal(x, y)
    stream.subtract(y, b"k" * 32)
    np.testing.assert_array_equal(x, y)


def test_masks_refuse_wrong_targets_and_seeds() -> None:
    stream = MaskStream(10)
    with pytest.raises(ValueError):
        stream.add(np.zeros(10, np.int64), b"k" * 32)
    with pytest.raises(ValueError):
        stream.add(np.zeros(9, np.uint32), b"k" * 32)
    with pytest.raises(ValueError):
        stream.keystream(b"short")
