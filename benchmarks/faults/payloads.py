"""What an attacker sends: valid-looking messages, structured malformed ones, and random fuzz.

Built the way an attacker would build them: valid messages with the protocol's own public codec
(``clipfl.wire.encode`` on ``clipfl.messages`` classes, as any client does), malformed ones by hand
with msgpack. The structured list holds the failures issue 14 found (the 43-byte, 2-frame killer:
a dtype sent as a msgpack list; shapes that overflow int64 or hold a zero beside huge dimensions)
and their neighbours: every envelope field given a type that msgpack can express but the schema does
not, truncated envelopes, tensors whose frames disagree with their descriptors.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import msgpack
import numpy as np

from clipfl.messages import FitRes, Register, TimingRelay
from clipfl.wire import encode

__all__ = [
    "KILLER",
    "fuzz_message",
    "poisoned_fit_res",
    "register",
    "structured_malformed",
]

Frames = list[bytes]


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _flat(frames: list[bytes | memoryview]) -> Frames:
    return [bytes(f) for f in frames]


# The message that stopped the server in issue 14: 43 bytes in 2 frames, from a peer that never
# registered, whose tensor descriptor names its dtype as a msgpack list (unhashable in a set lookup).
KILLER: Frames = [_pack({"v": 1, "t": "fit_res", "f": {}, "x": [["delta", "w1234", ["f4"], [1]]]}), b"\0" * 4]


def register(client_id: int, num_samples: int = 100, *, token: bytes | None = None) -> Frames:
    """A ``Register`` as a client sends it (the embedded digits dataset)."""
    msg = Register(
        client_id=client_id, num_samples=num_samples, dataset="digits", capabilities=["fedavg"], token=token
    )
    return _flat(encode(msg))


def poisoned_fit_res(round_number: int, scale: float = 1e6) -> Frames:
    """A plain-mode update that would wreck the model if it were aggregated: huge deltas, 10**9 samples."""
    delta = {"fc1.weight": np.full((4, 4), scale, np.float32)}
    msg = FitRes(
        round=round_number,
        delta=delta,
        num_samples=10**9,
        metrics={},
        trained_units=np.ones(1, np.bool_),
    )
    return _flat(encode(msg))


def _tensor_msg(dtype: object, shape: object, body: bytes = b"\0" * 4) -> Frames:
    env = {"v": 1, "t": "fit_res", "f": {"round": 1, "num_samples": 1, "metrics": {}}, "x": []}
    env["x"] = [["delta", "w", dtype, shape], ["trained_units", None, "bool", [1]]]
    return [_pack(env), body, b"\1"]


def _valid_envelope() -> dict[str, object]:
    return msgpack.unpackb(encode(TimingRelay(round=1, sender=0, payload=b"x"))[0], raw=False)


# Values of every msgpack type, for the field-by-field mutations.
_ODD_VALUES: tuple[object, ...] = (
    None,
    True,
    -1,
    2**64 - 1,
    -(2**63),
    1.5e308,
    float("nan"),
    "",
    "x" * 300,
    b"\xff\xfe",
    [],
    [[[[[]]]]],
    {},
    {"a": {"b": {"c": []}}},
    {1: 2},
    msgpack.ExtType(5, b"ext"),
)


def structured_malformed() -> Iterator[Frames]:
    """Every structured malformed message, each once (about 150)."""
    yield KILLER
    for dtype in (["f4"], {"a": 1}, None, 7, "object", "<f4", "float128", "U10", b"float32"):
        yield _tensor_msg(dtype, [1])
    for shape in ([2**62, 2**62], [0, 2**63 - 1], [2**63], [-1], [1] * 64, "1", [1.5], None, [[1]]):
        yield _tensor_msg("float32", shape)
    yield _tensor_msg("float32", [1], b"\0" * 3)  # frame shorter than the descriptor
    yield _tensor_msg("float32", [1], b"\0" * 5)  # longer
    yield [_pack({"v": 1, "t": "fit_res", "f": {}, "x": [["delta", "w", "float32", [1]]] * 3}), b"\0" * 4]
    base = _valid_envelope()
    for key in ("v", "t", "f", "x"):
        for value in _ODD_VALUES:
            yield [_pack({**base, key: value})]
        yield [_pack({k: v for k, v in base.items() if k != key})]
    fields = dict(base["f"])  # type: ignore[call-overload]
    for field in fields:
        for value in _ODD_VALUES:
            yield [_pack({**base, "f": {**fields, field: value}})]
    yield [_pack({**base, "f": {**fields, "extra": 1}})]
    yield [_pack({**base, "t": "register", "f": {"client_id": -5, "num_samples": 0, "dataset": "digits"}})]
    yield [_pack({**base, "t": "welcome", "f": {"client_id": 0, "settings": {}, "token": b"t"}})]
    whole = _pack(base)
    for cut in range(1, len(whole)):
        yield [whole[:cut]]
    yield [b""]
    yield [b"\0heartbeat", b"x"]
    yield [b"\xc1"]  # the one byte msgpack never uses
    yield [_pack([1, 2, 3])]
    yield [_pack(base), b"unexpected frame"]


def fuzz_message(rng: random.Random) -> Frames:
    """One random message: random bytes, a mutated valid envelope, or a random msgpack object."""
    kind = rng.randrange(4)
    if kind == 0:
        return [rng.randbytes(rng.randrange(1, 200)) for _ in range(rng.randrange(1, 5))]
    if kind == 1:
        frames = _flat(encode(TimingRelay(round=1, sender=0, payload=rng.randbytes(16))))
        head = bytearray(frames[0])
        for _ in range(rng.randrange(1, 4)):
            head[rng.randrange(len(head))] = rng.randrange(256)
        return [bytes(head), *frames[1:]]
    if kind == 2:
        return [_pack(_random_object(rng, 3))]
    body = rng.randbytes(rng.randrange(0, 64))
    return _tensor_msg(rng.choice(["float32", "int64", "bool", "uint8"]), [rng.randrange(-2, 40)], body)


def _random_object(rng: random.Random, depth: int) -> object:
    pick = rng.randrange(7 if depth > 0 else 5)
    if pick == 0:
        return rng.randrange(-(2**63), 2**64)
    if pick == 1:
        return rng.random() * 10 ** rng.randrange(-5, 300)
    if pick == 2:
        return rng.choice(["v", "t", "f", "x", "fit_res", "register", "welcome", ""])
    if pick == 3:
        return rng.randbytes(rng.randrange(8))
    if pick == 4:
        return None
    if pick == 5:
        return [_random_object(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(["v", "t", "f", "x", "round"]): _random_object(rng, depth - 1)
        for _ in range(rng.randrange(4))
    }
