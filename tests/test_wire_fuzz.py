"""The decoder is total (DESIGN section 2, rule 4 of the examples): whatever frames a peer sends,
``decode`` returns a registered message or raises ``RemoteProtocolError``, and nothing else.

The fuzzing starts from a valid message of every registered type (secure aggregation's included) and
mutates its envelope field by field with every kind of value msgpack can carry: lists and maps where
scalars belong, ints past int64, negative ints, floats, NaN, bytes for str and str for bytes, nesting,
ext types, extra and missing keys, tensor descriptors with odd names, dtypes and shapes, and frame
counts that do not match. Issue 14 found a 43-byte, 2-frame message that stopped the server: it is
here, with each way it and its relatives failed, as a regression test.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clipfl.messages as m
from clipfl import secagg as sa
from clipfl.config import RunConfig
from clipfl.errors import RemoteProtocolError
from clipfl.settings import CodecParams
from clipfl.wire import PROTOCOL_VERSION, DecodeError, Limits, decode, encode, registered_types

KEY = bytes(range(32))
SIG = bytes(range(64))
W = {"conv.w": np.arange(6, dtype=np.float32).reshape(2, 3), "conv.b": np.ones(3, np.float32)}

EXAMPLES: dict[str, Any] = {
    "register": m.Register(
        client_id=1, num_samples=10, dataset="digits", capabilities=["clip"], token=bytes(32)
    ),
    "welcome": m.Welcome(
        client_id=1, token=bytes(range(32)), settings=RunConfig(secagg="secagg+").run_settings()
    ),
    "reject": m.Reject(reason="no"),
    "not_registered": m.NotRegistered(reason="who are you"),
    "round_start": m.RoundStart(round=2),
    "fit_ins": m.FitIns(
        round=2,
        weights=W,
        train=RunConfig().train_settings(),
        seed=7,
        deadline=3.5,
        keep_ratio=0.5,
        codec=CodecParams(clients=5, max_weight=100, clip_range=1.0),
    ),
    "fit_res": m.FitRes(
        round=2, delta=W, num_samples=5, metrics={"loss": 0.5}, trained_units=np.array([True, False])
    ),
    "timing_relay": m.TimingRelay(round=2, sender=3, payload=b"timing"),
    "receipt": m.Receipt(round=2),
    "shutdown": m.Shutdown(reason="done"),
    "secagg.setup": sa.RoundSetup(
        round=2, mode="secagg+", clients=[0, 1, 2], threshold=2, neighbors=2, vector_length=9
    ),
    "secagg.advertise_keys": sa.AdvertiseKeys(round=2, c_public=KEY, s_public=KEY, signature=SIG),
    "secagg.keys": sa.KeysBroadcast(
        round=2, c_publics={0: KEY, 1: KEY}, s_publics={0: KEY, 1: KEY}, signatures={0: SIG, 1: SIG}
    ),
    "secagg.share_keys": sa.ShareKeys(
        round=2, ciphertexts={1: b"ct"}, commitment=KEY, share_commitments={1: SIG}, rejected={2: "bad"}
    ),
    "secagg.masked_input_request": sa.MaskedInputRequest(
        round=2, ciphertexts={1: b"ct", 2: b"ct2"}, share_commitments={1: SIG, 2: SIG}
    ),
    "secagg.masked_input": sa.MaskedInput(round=2, vector=np.arange(9, dtype=np.uint32), rejected={}),
    "secagg.consistency_check": sa.ConsistencyCheck(round=2, survivors=[0, 1]),
    "secagg.consistency_signature": sa.ConsistencySignature(round=2, signature=SIG),
    "secagg.unmask_request": sa.UnmaskRequest(round=2, signatures={0: SIG, 1: SIG}),
    "secagg.unmask_shares": sa.UnmaskShares(round=2, b_shares={0: b"s0"}, s_shares={2: b"s2"}),
    "secagg.relay": sa.RelayPrivate(round=2, ciphertexts={1: b"sealed"}),
    "secagg.private": sa.PrivateDelivery(round=2, sender=1, ciphertext=b"sealed"),
    "secagg.abort": sa.Abort(round=2, reason="too few"),
}


def _frames(msg: Any) -> list[bytes]:
    return [bytes(f) for f in encode(msg)]


def test_every_registered_message_type_has_an_example() -> None:
    """A new message type must join the fuzzing: add a valid instance of it to EXAMPLES above."""
    missing = {n for n in registered_types() if not n.startswith("test.")} - set(EXAMPLES)
    assert not missing, f"add examples to tests/test_wire_fuzz.py for {sorted(missing)}"
    for name, msg in EXAMPLES.items():
        assert type(decode(_frames(msg))) is registered_types()[name]


# --------------------------------------------------------------------------------- value strategies

SPECIAL_INTS = [0, -1, 1, 2**31, 2**32, 2**40, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from(SPECIAL_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=40),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
)
hashables = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(hashables, children, max_size=4),
    max_leaves=10,
)
HUGE = [2**31, 2**32, 2**39, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
shapes = st.one_of(
    st.lists(st.integers(0, 8), max_size=4),
    st.lists(st.sampled_from([0, 1, 2, *HUGE]), min_size=1, max_size=9),
    st.lists(st.sampled_from([0, *HUGE]), min_size=2, max_size=4),
    st.lists(st.integers(-(2**63), 2**64 - 1), max_size=10),
    values,
)
dtypes = st.one_of(
    st.sampled_from(
        ["float32", "uint32", "bool", "uint8", "float64", "int64", "object", "<f4", ">f4", "float128", "U8"]
    ),
    st.sampled_from(["V8", "complex64", "O", "S3", "M8", "datetime64", "f", "i", "?", ""]),
    values,
)
frame_bytes = st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\x00", b"\x02", b"\xff" * 8]))


# ------------------------------------------------------------------------------------- mutations


def _fitting_frame(shape: Any, dtype: Any) -> bytes:
    """Bytes as many as ``shape`` of ``dtype`` needs, when that is small: the size a decoder that
    trusted the shape would compute, so that the decoder's later steps get exercised too."""
    if not (isinstance(shape, list) and all(type(d) is int for d in shape)):
        return b""
    itemsize = np.dtype(dtype).itemsize if dtype in ("float32", "uint32", "bool", "uint8", "int64") else 4
    wrapped = int(np.prod(np.array(shape, dtype=object)) if shape else 1) * itemsize % (1 << 64)
    return bytes(wrapped) if wrapped <= 4096 else b""


def _mutate_descriptor(data: st.DataObject, x: list[Any], frames: list[bytes], names: list[str]) -> None:
    if not x:
        x.append(data.draw(values))
        frames.append(data.draw(frame_bytes))
        return
    i = data.draw(st.integers(0, len(x) - 1))
    descriptor = x[i]
    if not isinstance(descriptor, list) or len(descriptor) != 4:
        x[i] = data.draw(values)
        return
    part = data.draw(st.integers(0, 4))
    if part == 0:
        descriptor[0] = data.draw(st.one_of(st.sampled_from(names), values))
    elif part == 1:
        descriptor[1] = data.draw(st.one_of(st.sampled_from([None, "conv.w", "conv.b"]), values))
    elif part == 2:
        descriptor[2] = data.draw(dtypes)
    elif part == 3:
        shape = descriptor[3] = data.draw(shapes)
        if data.draw(st.booleans()) and i + 1 < len(frames):  # a frame that fits the shape, if any can
            frames[i + 1] = _fitting_frame(shape, descriptor[2])
    else:
        x[i] = data.draw(st.one_of(values, st.lists(values, min_size=3, max_size=5)))


def _mutate(data: st.DataObject, env: dict[Any, Any], frames: list[bytes]) -> None:
    f, x = env.get("f"), env.get("x")
    names: list[Any] = list(f) if isinstance(f, dict) else []
    op = data.draw(
        st.sampled_from(["field", "nested", "del_field", "add_field", "top", "descriptor", "frame", "type"])
    )
    if op == "field" and names:
        assert isinstance(f, dict)
        f[data.draw(st.sampled_from(names))] = data.draw(values)
    elif op == "nested" and names:
        assert isinstance(f, dict)
        field = data.draw(st.sampled_from(names))
        value = f[field]
        if isinstance(value, list) and value:
            value[data.draw(st.integers(0, len(value) - 1))] = data.draw(values)
        elif isinstance(value, dict) and value:
            key = data.draw(st.sampled_from(list(value)))
            if data.draw(st.booleans()):
                value[key] = data.draw(values)
            else:
                value[data.draw(hashables)] = value.pop(key)
        else:
            f[field] = [value, data.draw(values)]
    elif op == "del_field" and names:
        assert isinstance(f, dict)
        del f[data.draw(st.sampled_from(names))]
    elif op == "add_field" and isinstance(f, dict):
        f[data.draw(hashables)] = data.draw(values)
    elif op == "top":
        key = data.draw(st.sampled_from(["v", "t", "f", "x", "extra", 0]))
        if data.draw(st.booleans()):
            env.pop(key, None)
        else:
            env[key] = data.draw(st.one_of(values, st.just(PROTOCOL_VERSION + 1)))
    elif op == "descriptor" and isinstance(x, list):
        _mutate_descriptor(data, x, frames, [n for n in names if isinstance(n, str)] or ["delta", "vector"])
    elif op == "frame":
        kind = data.draw(st.sampled_from(["drop", "add", "replace", "truncate", "duplicate"]))
        if kind == "add" or len(frames) < 2:
            frames.append(data.draw(frame_bytes))
        elif kind == "drop":
            del frames[data.draw(st.integers(1, len(frames) - 1))]
        elif kind == "replace":
            frames[data.draw(st.integers(1, len(frames) - 1))] = data.draw(frame_bytes)
        elif kind == "truncate":
            i = data.draw(st.integers(1, len(frames) - 1))
            frames[i] = frames[i][:-1]
        elif isinstance(x, list) and x:  # the same tensor twice
            x.append(x[0])
            frames.append(frames[1])
    elif op == "type":
        env["t"] = data.draw(st.sampled_from(sorted(EXAMPLES)))


def _decodes_or_remote_error(frames: list[bytes]) -> None:
    try:
        msg = decode(frames)
    except RemoteProtocolError:
        return
    assert type(msg) in registered_types().values()
    again = decode(encode(msg))  # what decodes is a valid message: it encodes and decodes again
    assert type(again) is type(msg)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_envelopes_decode_or_raise_remote_protocol_error(name: str, data: st.DataObject) -> None:
    frames = _frames(EXAMPLES[name])
    env = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate(data, env, frames)
    try:
        frames[0] = msgpack.packb(env, use_bin_type=data.draw(st.booleans()))
    except (TypeError, ValueError, OverflowError):  # a mutation msgpack itself cannot carry
        return
    _decodes_or_remote_error(frames)


WITH_TENSORS = sorted(n for n, msg in EXAMPLES.items() if len(encode(msg)) > 1)


@pytest.mark.parametrize("name", WITH_TENSORS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_tensor_descriptors_decode_or_raise(name: str, data: st.DataObject) -> None:
    """Names, keys, dtypes and shapes of the tensors, with data frames that fit the shape when they can."""
    frames = _frames(EXAMPLES[name])
    env = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate_descriptor(data, env["x"], frames, ["delta", "weights", "vector", "trained_units", "round"])
    try:
        frames[0] = msgpack.packb(env, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return
    _decodes_or_remote_error(frames)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(EXAMPLES)),
    cut=st.integers(0, 200),
    noise=st.binary(max_size=32),
    extra=st.lists(frame_bytes, max_size=3),
)
def test_damaged_bytes_of_valid_messages_decode_or_raise(
    name: str, cut: int, noise: bytes, extra: list
) -> None:
    """Truncated or overwritten envelope bytes, with any data frames after them."""
    frames = _frames(EXAMPLES[name])
    head = frames[0]
    cut %= len(head) + 1
    _decodes_or_remote_error([head[:cut] + noise + head[cut + len(noise) :], *frames[1:], *extra])


# ---------------------------------------------------------------------------- named regressions


def _env(t: str, f: dict[str, Any], x: list[Any]) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, "t": t, "f": f, "x": x}, use_bin_type=True)


def test_the_43_byte_two_frame_message_of_issue_14_is_refused() -> None:
    """Issue 14, failure 1: a dtype sent as a msgpack list raised TypeError (unhashable), which escaped
    the receive loop and ended the server."""
    frames = [_env("receipt", {"round": 1}, [["a", None, ["x"], []]]), b"\x00" * 8]
    assert [len(f) for f in frames] == [35, 8] and sum(map(len, frames)) == 43
    with pytest.raises(DecodeError, match="dtype a list of 1 items is not allowed") as info:
        decode(frames)
    assert info.value.message_type == "receipt"


FIT = {"round": 1, "num_samples": 3, "metrics": {}}


def _fit_res(dtype: Any, shape: Any, data: bytes = b"") -> list[bytes]:
    x = [["delta", "w", dtype, shape], ["trained_units", None, "bool", [1]]]
    return [_env("fit_res", FIT, x), data, b"\x01"]


@pytest.mark.parametrize(
    ("frames", "why"),
    [
        (_fit_res({"a": 1}, [1]), "dtype a dict of 1 items is not allowed"),
        (_fit_res(["float32"], [1]), "dtype a list of 1 items is not allowed"),
        (_fit_res("float32", [2**32, 2**32]), "exceeds the limit"),  # int64 product wraps to 0
        (_fit_res("float32", [0, 2**39, 2**39, 2**39]), "exceeds the limit"),  # NumPy: "array is too big"
        (_fit_res("float32", [2**64 - 1]), "exceeds the limit"),
        (_fit_res("float32", [-1]), "non-negative ints"),
        (_fit_res("float32", [True]), "non-negative ints"),
        (_fit_res("float32", [1.0], b"\x00" * 4), "non-negative ints"),
        (_fit_res("float32", {"0": 1}), "non-negative ints"),
        (_fit_res("float32", [1] * 9, b"\x00" * 4), "non-negative ints"),
        (
            [_env("fit_res", FIT, [["trained_units", None, "bool", [2]]]), b"\x01\x02"],
            "only the bytes 0 and 1",
        ),
        ([_env("receipt", {"round": 2**64 - 1}, [])], "64-bit signed"),
        ([_env("receipt", {"round": [1]}, [])], "expected int"),
        (
            [_env("welcome", {"client_id": 1, "token": bytes(32), "settings": {"a": [1]}}, [])],
            r"welcome.settings: unknown RunSettings settings",
        ),
        (
            [
                _env(
                    "secagg.keys",
                    {"round": 1, "c_publics": {}, "s_publics": {}, "signatures": {"k": b""}},
                    [],
                )
            ],
            "signatures",
        ),
        (
            [msgpack.packb({"v": 1, "t": "receipt", "f": {"round": 1}, "x": [], "y": 0})],
            "unknown envelope keys",
        ),
        ([msgpack.packb({"v": [1], "t": "receipt", "f": {}, "x": []})], "protocol version"),
        ([msgpack.packb({"v": 1, "t": ["receipt"], "f": {}, "x": []})], "unknown message type"),
        ([msgpack.packb({(1, 2): 1})], "not valid msgpack"),  # a list used as a map key: unhashable
    ],
)
def test_named_attacks_raise_decode_error(frames: list[bytes], why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        decode(frames)


def test_error_messages_quote_peer_data_only_briefly() -> None:
    """A rejected megabyte must not become a megabyte of log (issue 14, failure 6)."""
    garbage = "x" * 500_000
    attacks = [
        [msgpack.packb({"v": 1, "t": garbage, "f": {}, "x": []})],
        [_env("receipt", {"round": garbage}, [])],
        [_env("receipt", {"round": 1, garbage: 1}, [])],
        [_env("welcome", {"client_id": 1, "settings": {garbage: [garbage]}}, [])],
        _fit_res(garbage, [1]),
        [
            _env(
                "register",
                {"client_id": 1, "num_samples": 1, "dataset": "d", "capabilities": [garbage, 1]},
                [],
            )
        ],
    ]
    for frames in attacks:
        with pytest.raises(DecodeError) as info:
            decode(frames, Limits(max_envelope_bytes=2 << 20))
        assert len(str(info.value)) < 400, str(info.value)[:400]


def test_a_decoder_error_is_a_remote_protocol_error_with_the_type_when_known() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode([b"\xc1"])
    assert isinstance(info.value, DecodeError) and info.value.message_type is None
    with pytest.raises(DecodeError) as info:
        decode(_fit_res("float32", [1], b"\x00" * 3))
    assert info.value.message_type == "fit_res"


def test_long_homogeneous_fields_take_the_fast_path_with_the_same_result() -> None:
    """Long lists and maps of scalars are checked in one pass (a megabyte envelope of small items
    cost a second of the event loop item by item); the result is what the item-by-item check gives."""
    metrics = {str(i): i if i % 2 else float(i) for i in range(1000)}
    frames = [
        _env(
            "fit_res",
            {"round": 1, "num_samples": 3, "metrics": metrics},
            [["trained_units", None, "bool", [1]]],
        ),
        b"\x01",
    ]
    back = decode(frames)
    assert back.metrics == {k: float(v) for k, v in metrics.items()}
    assert all(type(v) is float for v in back.metrics.values())
    ids = decode([_env("secagg.consistency_check", {"round": 1, "survivors": list(range(5000))}, [])])
    assert ids.survivors == list(range(5000))
    with pytest.raises(DecodeError, match=r"survivors\[4999\]: expected int"):
        decode([_env("secagg.consistency_check", {"round": 1, "survivors": [*range(4999), "x"]}, [])])
