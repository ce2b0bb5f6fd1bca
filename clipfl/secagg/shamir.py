"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field of p = 2^521 - 1.

Why write it: the few Python packages that do this either split bytes with GF(256) per byte or pull
in a large dependency; what secure aggregation needs is twenty lines of polynomial arithmetic that the
tests in ``tests/secagg/test_shamir.py`` check exhaustively. The Mersenne prime 2^521 - 1 exceeds
2^256, so one 32-byte secret is one field element, and a share is one element: 66 bytes.

A secret ``S`` becomes the constant term of a random polynomial ``f`` of degree ``t - 1``; holder ``x``
(a nonzero field element, here a client's position in the round plus one) receives ``f(x)``. Any ``t``
shares determine ``f`` and so ``S = f(0)`` by Lagrange interpolation; ``t - 1`` shares are consistent
with every possible secret, so they reveal nothing.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "combine",
    "combine_verified",
    "share_from_bytes",
    "share_to_bytes",
    "split",
]

PRIME = 2**521 - 1
SECRET_BYTES = 32
SHARE_BYTES = 66  # ceil(521 / 8)

RandomBytes = Callable[[int], bytes]


def _random_element(random_bytes: RandomBytes) -> int:
    """A uniform field element: 521 random bits, rejecting the one value (p itself) outside the field."""
    while True:
        value = int.from_bytes(random_bytes(SHARE_BYTES), "big") & PRIME
        if value < PRIME:
            return value


def split(secret: bytes, *, threshold: int, xs: Iterable[int], random_bytes: RandomBytes) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of ``secret`` for each holder ``x``; any ``threshold`` of them rebuild it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret is {SECRET_BYTES} bytes, got {len(secret)}")
    points = list(xs)
    if len(set(points)) != len(points) or not all(0 < x < PRIME for x in points):
        raise ValueError("holder x-coordinates must be distinct nonzero field elements")
    if not 1 <= threshold <= len(points):
        raise ValueError(f"threshold {threshold} must lie in [1, {len(points)} holders]")
    coefficients = [int.from_bytes(secret, "big")] + [
        _random_element(random_bytes) for _ in range(threshold - 1)
    ]
    shares = {}
    for x in points:
        y = 0
        for a in reversed(coefficients):  # Horner
            y = (y * x + a) % PRIME
        shares[x] = y
    return shares


@functools.lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Coefficients ``l_i`` with ``f(0) = sum l_i f(x_i)``; cached because unmasking reuses one x-set."""
    coefficients = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        coefficients.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return tuple(coefficients)


def combine(shares: Mapping[int, int], threshold: int) -> bytes:
    """The secret from the ``threshold`` shares of smallest x; ``ValueError`` when they cannot be one.

    With fewer than ``threshold`` shares this refuses; with wrong shares the interpolated value is
    almost surely not a 32-byte number (p is 2^265 times larger), and ``ValueError`` says so. Use
    ``combine_verified`` when a wrong share must be detected for certain.
    """
    if threshold < 1 or len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot rebuild a secret of threshold {threshold}")
    xs = tuple(sorted(shares)[:threshold])
    if not all(0 < x < PRIME for x in xs) or not all(0 <= shares[x] < PRIME for x in xs):
        raise ValueError("a share lies outside the field")
    secret = sum(c * shares[x] for c, x in zip(_lagrange_at_zero(xs), xs, strict=True)) % PRIME
    if secret >= 1 << (8 * SECRET_BYTES):
        raise ValueError("the shares are inconsistent: they do not interpolate to a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")


def combine_verified(
    shares: Mapping[int, int],
    threshold: int,
    is_valid: Callable[[bytes], bool],
    *,
    max_attempts: int = 64,
) -> bytes | None:
    """The secret rebuilt from some ``threshold`` shares that ``is_valid`` accepts, or ``None``.

    ``is_valid`` checks the secret against a public commitment (a hash, or a public key), so a holder
    that sends a wrong share can make reconstruction fail but never make it return a wrong secret.
    Subsets are tried in a fixed order, at most ``max_attempts`` of them.
    """
    if threshold < 1 or len(shares) < threshold:
        return None
    for subset in itertools.islice(itertools.combinations(sorted(shares), threshold), max_attempts):
        try:
            secret = combine({x: shares[x] for x in subset}, threshold)
        except ValueError:
            continue
        if is_valid(secret):
            return secret
    return None


def share_to_bytes(y: int) -> bytes:
    """A share value as its fixed 66-byte big-endian encoding."""
    return y.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """The share value of a 66-byte encoding; ``ValueError`` for a wrong length or a non-field value."""
    if len(data) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise ValueError("a share lies outside the field")
    return y
