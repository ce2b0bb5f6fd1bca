"""Shamir sharing over GF(2^521 - 1): any t shares rebuild the secret, t - 1 do not."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipfl.secagg import shamir

secrets32 = st.binary(min_size=32, max_size=32)


@settings(max_examples=80, deadline=None)
@given(secret=secrets32, n=st.integers(1, 30), data=st.data())
def test_any_t_shares_rebuild_the_secret(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
    shares = shamir.split(secret, threshold=t, xs=xs, random_bytes=random.Random(n).randbytes)
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=n, unique=True))
    assert shamir.combine({x: shares[x] for x in subset}, t) == secret


@settings(max_examples=80, deadline=None)
@given(secret=secrets32, n=st.integers(2, 30), data=st.data())
def test_fewer_than_t_shares_do_not(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(2, n))
    xs = list(range(1, n + 1))
    shares = shamir.split(secret, threshold=t, xs=xs, random_bytes=random.Random(t).randbytes)
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t - 1, max_size=t - 1, unique=True))
    few = {x: shares[x] for x in subset}
    with pytest.raises(ValueError):
        shamir.combine(few, t)
    # Interpolating the t - 1 shares as if the threshold were t - 1 gives another value (or none).
    with contextlib.suppress(ValueError):
        assert shamir.combine(few, t - 1) != secret


@given(secret=secrets32, other=secrets32)
def test_t_minus_one_shares_are_consistent_with_any_secret(secret: bytes, other: bytes) -> None:
    """Perfect secrecy: the t-1 shares held by a coalition fit a sharing of any other secret too."""
    t, xs = 4, [1, 2, 3, 4, 5]
    shares = shamir.split(secret, threshold=t, xs=xs, random_bytes=random.Random(0).randbytes)
    coalition = {x: shares[x] for x in xs[: t - 1]}
    # the degree-(t-1) polynomial through (0, other) and the coalition's points exists and is unique:
    points = {0: int.from_bytes(other, "big"), **coalition}
    p = shamir.PRIME

    def interpolate(at: int) -> int:
        total = 0
        for xi, yi in points.items():
            num, den = 1, 1
            for xj in points:
                if xj != xi:
                    num, den = num * (at - xj) % p, den * (xi - xj) % p
            total = (total + yi * num * pow(den, -1, p)) % p
        return total

    fake = {**coalition, 5: interpolate(5)}
    assert shamir.combine(fake, t) == other  # same t-1 shares, a different secret


def test_combine_verified_skips_a_lying_holder() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, threshold=3, xs=[1, 2, 3, 4, 5], random_bytes=random.Random(1).randbytes)
    shares[1] = (shares[1] + 1) % shamir.PRIME  # holder 1 lies
    assert shamir.combine_verified(shares, 3, lambda s: s == secret) == secret
    assert (
        shamir.combine_verified({1: shares[1], 2: shares[2], 3: shares[3]}, 3, lambda s: s == secret) is None
    )


def test_share_bytes_round_trip_and_validation() -> None:
    y = shamir.PRIME - 1
    assert shamir.share_from_bytes(shamir.share_to_bytes(y)) == y
    with pytest.raises(ValueError, match="outside the field"):
        shamir.share_from_bytes(shamir.PRIME.to_bytes(66, "big"))
    with pytest.raises(ValueError, match="66 bytes"):
        shamir.share_from_bytes(b"\x00" * 65)


@pytest.mark.parametrize(
    ("secret", "t", "xs"),
    [(b"short", 2, [1, 2]), (bytes(32), 3, [1, 2]), (bytes(32), 2, [1, 1]), (bytes(32), 2, [0, 1])],
)
def test_split_refuses_bad_arguments(secret: bytes, t: int, xs: list[int]) -> None:
    with pytest.raises(ValueError):
        shamir.split(secret, threshold=t, xs=xs, random_bytes=random.Random(0).randbytes)
