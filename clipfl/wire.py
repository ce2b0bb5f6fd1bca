"""The wire format: a msgpack envelope plus raw little-endian tensor frames.

A message is a frozen dataclass registered under a type name. On the wire it becomes::

    frame 0      msgpack map {"v": PROTOCOL_VERSION, "t": type name, "f": {small fields},
                              "x": [[field, key, dtype, shape], ...]}
    frame 1..n   the raw bytes of each tensor, in the order of "x"

Array fields (``np.ndarray``, or ``dict[str, np.ndarray]`` for a model state) travel as frames and
are never pickled; everything else goes in the envelope. Decoding validates every byte that came
from the network against the dataclass's type hints and the configured ``Limits``: a bad message
raises ``RemoteProtocolError`` and nothing else (a property test holds this).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import numpy as np

from clipfl.errors import LocalProtocolError, RemoteProtocolError
from transports.base import frames_nbytes

__all__ = [
    "ALLOWED_DTYPES",
    "PROTOCOL_VERSION",
    "Limits",
    "Message",
    "decode",
    "encode",
    "message",
    "registered_types",
]

PROTOCOL_VERSION = 1

ALLOWED_DTYPES = frozenset(
    {"bool", "uint8", "int8", "int16", "int32", "int64", "uint32", "uint64", "float16", "float32", "float64"}
)

Message = Any
"""Any registered message dataclass instance."""

Frame = bytes | memoryview
M = TypeVar("M")

_REGISTRY: dict[str, type] = {}
_NAMES: dict[type, str] = {}
_HINTS: dict[type, dict[str, Any]] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size limits for what a peer may send; the defaults fit a VGG-9 update with room to spare.

    As websockets caps frames at ``max_size=2**20`` by default, every limit here is finite so that
    a peer cannot make us allocate without bound.
    """

    max_envelope_bytes: int = 1 << 20
    max_frames: int = 512
    max_tensor_bytes: int = 256 << 20
    max_total_bytes: int = 512 << 20
    max_ndim: int = 8

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"Limits.{f.name} must be positive")


def message(name: str) -> Callable[[type[M]], type[M]]:
    """Class decorator: register a frozen dataclass as the wire message ``name``."""

    def register(cls: type[M]) -> type[M]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass to be a wire message")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"wire message name {name!r} is already taken by {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        _NAMES[cls] = name
        return cls

    return register


def registered_types() -> dict[str, type]:
    """A copy of the registry: type name -> message class."""
    return dict(_REGISTRY)


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return hints


def _is_array_type(tp: Any) -> bool:
    return tp is np.ndarray or typing.get_origin(tp) is np.ndarray


def _is_state_type(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is dict and len(args) == 2 and args[0] is str and _is_array_type(args[1])


def _le(array: np.ndarray) -> np.ndarray:
    """A C-contiguous little-endian view or copy of ``array``, whose dtype is allowed."""
    if array.dtype.name not in ALLOWED_DTYPES:
        raise LocalProtocolError(f"cannot send dtype {array.dtype}: allowed are {sorted(ALLOWED_DTYPES)}")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return little if little.flags.c_contiguous else little.copy(order="C")


# ---------------------------------------------------------------------------------------------- encode


def encode(msg: Message) -> list[Frame]:
    """Frames for ``msg``: the envelope, then one frame per tensor (zero-copy memoryviews)."""
    cls = type(msg)
    name = _NAMES.get(cls)
    if name is None:
        raise LocalProtocolError(f"{cls.__name__} is not a registered wire message")
    fields: dict[str, Any] = {}
    descriptors: list[list[Any]] = []
    frames: list[Frame] = [b""]
    for field, tp in _hints(cls).items():
        value = getattr(msg, field)
        if _is_array_type(tp):
            arr = _le(np.asarray(value))
            descriptors.append([field, None, arr.dtype.name, list(arr.shape)])
            frames.append(arr.reshape(-1).view(np.uint8).data)
        elif _is_state_type(tp):
            for key, tensor in value.items():
                arr = _le(np.asarray(tensor))
                descriptors.append([field, key, arr.dtype.name, list(arr.shape)])
                frames.append(arr.reshape(-1).view(np.uint8).data)
        else:
            fields[field] = _plain(value)
    envelope = {"v": PROTOCOL_VERSION, "t": name, "f": fields, "x": descriptors}
    frames[0] = msgpack.packb(envelope, use_bin_type=True)
    return frames


def _plain(value: Any) -> Any:
    """``value`` with nested settings dataclasses turned into maps of their fields (msgpack types)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------- decode


def _fail(what: str) -> typing.NoReturn:
    raise RemoteProtocolError(what)


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Validate a msgpack-decoded ``value`` against type hint ``tp``; return it (tuples for lists)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check_value(value, option, where)
            except RemoteProtocolError:
                continue
        _fail(f"{where}: {type(value).__name__} is not a valid {tp}")
    if origin is typing.Literal:
        if any(value == option and type(value) is type(option) for option in typing.get_args(tp)):
            return value
        _fail(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _check_settings(value, tp, where)
    if tp is type(None):
        if value is None:
            return None
        _fail(f"{where}: expected nil, got {type(value).__name__}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        _fail(f"{where}: expected bool, got {type(value).__name__}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _fail(f"{where}: expected int, got {type(value).__name__}")
    if tp is float:
        if isinstance(value, float | int) and not isinstance(value, bool):
            return float(value)
        _fail(f"{where}: expected float, got {type(value).__name__}")
    if tp in (str, bytes):
        if isinstance(value, tp):
            return value
        _fail(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list):
            _fail(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                _fail(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(
                _check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        checked = [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    if origin is dict:
        if not isinstance(value, dict):
            _fail(f"{where}: expected a map, got {type(value).__name__}")
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        return {
            _check_value(k, key_tp, f"{where} key"): _check_value(v, value_tp, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    raise LocalProtocolError(f"{where}: type {tp} cannot be carried on the wire")


def _check_settings(value: Any, cls: type, where: str) -> Any:
    """A nested settings dataclass: exactly its fields, each checked; its constructor validates.

    A field the peer sends that this side does not know is an error, never ignored, and a missing one
    is never filled in with this side's default: both ends must mean the same settings.
    """
    if not isinstance(value, dict):
        _fail(f"{where}: expected a map of {cls.__name__} fields, got {type(value).__name__}")
    hints = _hints(cls)
    unknown = set(value) - set(hints)
    if unknown:
        _fail(f"{where}: unknown {cls.__name__} settings {sorted(map(str, unknown))}")
    missing = set(hints) - set(value)
    if missing:
        _fail(f"{where}: {cls.__name__} settings {sorted(missing)} are missing")
    kwargs = {name: _check_value(value[name], tp, f"{where}.{name}") for name, tp in hints.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        _fail(f"{where}: {exc}")


def _tensor(frame: Frame, descriptor: Any, limits: Limits, where: str) -> tuple[str, str | None, np.ndarray]:
    if not (isinstance(descriptor, list) and len(descriptor) == 4):
        _fail(f"{where}: a tensor descriptor must be [field, key, dtype, shape]")
    field, key, dtype, shape = descriptor
    if not isinstance(field, str) or not (key is None or isinstance(key, str)):
        _fail(f"{where}: tensor field and key must be strings")
    if dtype not in ALLOWED_DTYPES:
        _fail(f"{where}: dtype {dtype!r} is not allowed (allowed: {', '.join(sorted(ALLOWED_DTYPES))})")
    if (
        not isinstance(shape, list)
        or len(shape) > limits.max_ndim
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape)
    ):
        _fail(f"{where}: shape {shape!r} is not a list of at most {limits.max_ndim} non-negative ints")
    dt = np.dtype(dtype).newbyteorder("<")
    expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    nbytes = memoryview(frame).nbytes
    if nbytes != expected:
        _fail(
            f"{where}: tensor {field}{'/' + key if key else ''} has {nbytes} bytes, "
            f"shape {shape} of {dtype} needs {expected}"
        )
    if nbytes > limits.max_tensor_bytes:
        _fail(f"{where}: tensor of {nbytes} bytes exceeds the limit of {limits.max_tensor_bytes}")
    array = np.frombuffer(frame, dtype=dt).reshape(shape) if nbytes else np.zeros(shape, dtype=dt)
    return field, key, array


def decode(frames: Sequence[Frame], limits: Limits = Limits()) -> Message:
    """Decode and validate frames from a peer; raise ``RemoteProtocolError`` for anything invalid."""
    if not frames:
        _fail("empty message")
    if len(frames) > limits.max_frames:
        _fail(f"{len(frames)} frames exceed the limit of {limits.max_frames}")
    total = frames_nbytes(frames)
    if total > limits.max_total_bytes:
        _fail(f"message of {total} bytes exceeds the limit of {limits.max_total_bytes}")
    head = bytes(frames[0])
    if len(head) > limits.max_envelope_bytes:
        _fail(f"envelope of {len(head)} bytes exceeds the limit of {limits.max_envelope_bytes}")
    try:
        envelope = msgpack.unpackb(head, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many types (ValueError, ExtraData, FormatError, ...)
        _fail(f"envelope is not valid msgpack: {exc.__class__.__name__}")
    if not isinstance(envelope, dict):
        _fail("envelope is not a map")
    version = envelope.get("v")
    if version != PROTOCOL_VERSION:
        _fail(f"protocol version {version!r} is not supported (this side speaks {PROTOCOL_VERSION})")
    name = envelope.get("t")
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        _fail(f"unknown message type {name!r}")
    raw_fields, descriptors = envelope.get("f"), envelope.get("x")
    if not isinstance(raw_fields, dict) or not isinstance(descriptors, list):
        _fail(f"{name}: envelope needs a field map 'f' and a tensor list 'x'")
    if len(descriptors) != len(frames) - 1:
        _fail(f"{name}: {len(descriptors)} tensor descriptors for {len(frames) - 1} data frames")

    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for field, tp in hints.items():
        if _is_array_type(tp) or _is_state_type(tp):
            continue
        if field not in raw_fields:
            _fail(f"{name}: field {field!r} is missing")
        kwargs[field] = _check_value(raw_fields[field], tp, f"{name}.{field}")
    unknown = set(raw_fields) - set(kwargs)
    if unknown:
        _fail(f"{name}: unknown fields {sorted(map(str, unknown))}")
    for frame, descriptor in zip(frames[1:], descriptors, strict=True):
        field, key, array = _tensor(frame, descriptor, limits, str(name))
        tp = hints.get(field)
        if tp is not None and _is_array_type(tp) and key is None and field not in kwargs:
            kwargs[field] = array
        elif tp is not None and _is_state_type(tp) and key is not None:
            state = kwargs.setdefault(field, {})
            if key in state:
                _fail(f"{name}: tensor {field}/{key} appears twice")
            state[key] = array
        else:
            _fail(f"{name}: unexpected tensor {field!r} (key {key!r})")
    for field, tp in hints.items():
        if field not in kwargs:
            if _is_state_type(tp):
                kwargs[field] = {}
            else:
                _fail(f"{name}: tensor field {field!r} is missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        _fail(f"{name}: {exc}")
