"""The wire codec (DESIGN section 2): round trips, and any bytes from a peer decode or raise
RemoteProtocolError, never anything else."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from clipfl.config import RunConfig
from clipfl.errors import LocalProtocolError, RemoteProtocolError
from clipfl.messages import FitIns, FitRes, Receipt, Register, Welcome
from clipfl.settings import TrainSettings
from clipfl.wire import PROTOCOL_VERSION, Limits, decode, encode, message


@message("test.sample")
@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    round: int
    name: str
    blob: bytes
    ratio: float
    flags: list[bool]
    table: dict[int, bytes]
    maybe: int | None
    vector: np.ndarray


names = st.text(min_size=1, max_size=12)
float32_arrays = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5), elements=st.floats(-1e6, 1e6, width=32)
)
states = st.dictionaries(names, float32_arrays, max_size=4)
TRAIN = TrainSettings(epochs=1, batch_size=32, lr=0.05, optimizer="sgd", momentum=0.9)


def _fit_ins(rnd: int, weights: dict[str, np.ndarray]) -> FitIns:
    return FitIns(
        round=rnd, weights=weights, train=TRAIN, seed=rnd, deadline=None, keep_ratio=None, codec=None
    )


def _same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype
        np.testing.assert_array_equal(a[k], b[k])


@given(rnd=st.integers(1, 10**6), weights=states)
def test_fit_ins_round_trips(rnd: int, weights: dict[str, np.ndarray]) -> None:
    msg = _fit_ins(rnd, weights)
    back = decode(encode(msg))
    assert isinstance(back, FitIns) and back.round == rnd and back.train == TRAIN and back.seed == rnd
    _same_state(back.weights, weights)


@given(delta=states, n=st.integers(1, 10**9), loss=st.floats(-1e9, 1e9))
def test_fit_res_round_trips(delta: dict[str, np.ndarray], n: int, loss: float) -> None:
    back = decode(
        encode(
            FitRes(
                round=3,
                delta=delta,
                num_samples=n,
                metrics={"train_loss": loss},
                trained_units=np.ones(1, bool),
            )
        )
    )
    assert back.num_samples == n and back.metrics == {"train_loss": loss}
    _same_state(back.delta, delta)


@given(
    name=st.text(max_size=20),
    blob=st.binary(max_size=64),
    ratio=st.floats(allow_nan=False),
    flags=st.lists(st.booleans(), max_size=5),
    table=st.dictionaries(st.integers(0, 2**31), st.binary(max_size=8), max_size=5),
    maybe=st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    vector=hnp.arrays(st.sampled_from([np.uint32, np.int64, np.float64, np.uint8]), st.integers(0, 50)),
)
def test_every_supported_field_type_round_trips(name, blob, ratio, flags, table, maybe, vector) -> None:
    msg = Sample(
        round=1, name=name, blob=blob, ratio=ratio, flags=flags, table=table, maybe=maybe, vector=vector
    )
    back = decode(encode(msg))
    assert (back.name, back.blob, back.ratio, back.flags, back.table, back.maybe) == (
        name,
        blob,
        ratio,
        flags,
        table,
        maybe,
    )
    assert back.vector.dtype == vector.dtype
    np.testing.assert_array_equal(back.vector, vector)


@settings(max_examples=300)
@given(frames=st.lists(st.binary(max_size=200), min_size=0, max_size=4))
def test_random_bytes_decode_or_raise_remote_protocol_error(frames: list[bytes]) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(frames)


def _envelope(**overrides: object) -> bytes:
    env: dict[str, object] = {"v": PROTOCOL_VERSION, "t": "receipt", "f": {"round": 1}, "x": []}
    env.update(overrides)
    return msgpack.packb(env)


_fields = st.dictionaries(
    st.sampled_from(["round", "client_id", "num_samples", "dataset", "capabilities", "x"]),
    st.one_of(
        st.integers(-(2**63), 2**64 - 1),
        st.text(max_size=4),
        st.binary(max_size=4),
        st.none(),
        st.lists(st.integers(-(2**63), 2**63), max_size=3),
    ),
    max_size=5,
)


@settings(max_examples=300)
@given(
    t=st.sampled_from(["receipt", "register", "fit_res", "welcome", "nope"]),
    f=_fields,
    x=st.lists(
        st.lists(
            st.one_of(
                st.text(max_size=6), st.none(), st.integers(-2, 9), st.lists(st.integers(-3, 4), max_size=3)
            ),
            max_size=5,
        ),
        max_size=3,
    ),
    data=st.lists(st.binary(max_size=32), max_size=3),
)
def test_structured_garbage_decodes_or_raises_remote_protocol_error(t, f, x, data) -> None:
    """Well-formed msgpack with wrong contents: a stricter fuzz than random bytes."""
    with contextlib.suppress(RemoteProtocolError):
        decode([msgpack.packb({"v": PROTOCOL_VERSION, "t": t, "f": f, "x": x}), *data])


@pytest.mark.parametrize(
    ("frames", "why"),
    [
        ([_envelope(v=99)], "protocol version"),
        ([_envelope(t="launch_missiles")], "unknown message type"),
        ([_envelope(f={"round": "one"})], "expected int"),
        ([_envelope(f={"round": True})], "expected int"),
        ([_envelope(f={})], "missing"),
        ([_envelope(f={"round": 1, "extra": 2})], "unknown fields"),
        ([_envelope(), b"\x00" * 4], "descriptors"),
        ([msgpack.packb([1, 2])], "not a map"),
        ([b"\xc1"], "not valid msgpack"),
        ([], "empty"),
    ],
)
def test_malformed_envelopes_are_named(frames: list[bytes], why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        decode(frames)


def _fit_res_frames(dtype: str, shape: list[int], data: bytes) -> list[bytes]:
    env = {
        "v": PROTOCOL_VERSION,
        "t": "fit_res",
        "f": {"round": 1, "num_samples": 5, "metrics": {}},
        "x": [["delta", "w", dtype, shape], ["trained_units", None, "bool", [1]]],
    }
    return [msgpack.packb(env), data, b"\x01"]


def test_tensor_whose_bytes_do_not_match_its_shape_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="has 12 bytes"):
        decode(_fit_res_frames("float32", [2, 2], b"\x00" * 12))


def test_disallowed_dtype_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="not allowed"):
        decode(_fit_res_frames("object", [1], b"\x00" * 8))


def test_wrong_dtype_for_a_field_is_refused_by_the_message() -> None:
    with pytest.raises(RemoteProtocolError, match="must be float32"):
        decode(_fit_res_frames("float64", [1], b"\x00" * 8))


def test_size_limits_are_enforced() -> None:
    frames = encode(
        FitRes(
            round=1,
            delta={"w": np.zeros(1000, np.float32)},
            num_samples=1,
            metrics={},
            trained_units=np.ones(1, bool),
        )
    )
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        decode(frames, Limits(max_tensor_bytes=1000))
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        decode(frames, Limits(max_total_bytes=2000))
    with pytest.raises(RemoteProtocolError, match="frames exceed"):
        decode(frames, Limits(max_frames=1))


def test_constructor_validation_becomes_remote_protocol_error() -> None:
    env = {
        "v": PROTOCOL_VERSION,
        "t": "register",
        "f": {"client_id": -1, "num_samples": 3, "dataset": "digits", "capabilities": [], "token": None},
        "x": [],
    }
    with pytest.raises(RemoteProtocolError, match="client_id"):
        decode([msgpack.packb(env)])


def test_big_endian_arrays_arrive_as_the_same_numbers() -> None:
    data = np.arange(6, dtype=">f4").reshape(2, 3)
    back = decode(encode(_fit_ins(1, {"w": data.astype(np.float32)})))
    np.testing.assert_array_equal(back.weights["w"], data)


def test_unregistered_class_cannot_be_sent() -> None:
    @dataclass(frozen=True)
    class Stray:
        round: int

    with pytest.raises(LocalProtocolError):
        encode(Stray(round=1))


def test_small_messages_round_trip() -> None:
    for msg in (
        Receipt(round=4),
        Register(client_id=2, num_samples=9, dataset="digits", capabilities=["a"]),
        Welcome(client_id=1, token=bytes(32), settings=RunConfig(secagg="secagg+").run_settings()),
    ):
        assert decode(encode(msg)) == msg
