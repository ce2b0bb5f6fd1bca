"""The wire format: a msgpack envelope plus raw little-endian tensor frames.

A message is a frozen dataclass registered under a type name. On the wire it becomes::

    frame 0      msgpack map {"v": PROTOCOL_VERSION, "t": type name, "f": {small fields},
                              "x": [[field, key, dtype, shape], ...]}
    frame 1..n   the raw bytes of each tensor, in the order of "x"

Array fields (``np.ndarray``, or ``dict[str, np.ndarray]`` for a model state) travel as frames and
are never pickled; everything else goes in the envelope. Decoding validates every byte that came
from the network against the dataclass's type hints and the configured ``Limits``: a bad message
raises ``DecodeError`` (a ``RemoteProtocolError``) and nothing else (property tests in
``tests/test_wire_fuzz.py`` hold this).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import numpy as np

from clipfl.errors import LocalProtocolError, RemoteProtocolError
from transports.base import MessageLimits, frames_nbytes

__all__ = [
    "ALLOWED_DTYPES",
    "PROTOCOL_VERSION",
    "DecodeError",
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

    def for_transport(self) -> MessageLimits:
        """The same bounds for the transport, which checks them as a message's frames arrive."""
        return MessageLimits(
            max_frames=self.max_frames,
            max_frame_bytes=max(self.max_tensor_bytes, self.max_envelope_bytes),
            max_total_bytes=self.max_total_bytes,
        )


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
#
# Decoding is total: every input either decodes or raises ``DecodeError``. Each step checks the type
# of what msgpack produced before using it (a list where a dtype name belongs is unhashable, a shape
# whose dimensions multiply past int64 makes NumPy raise), and every error message quotes peer data
# only through ``_short``, so a rejected megabyte cannot become a megabyte of log.

_INT64 = 1 << 63


class DecodeError(RemoteProtocolError):
    """A peer's message that does not decode; ``message_type`` is its type name once the envelope
    named a registered one (None before), so that a log line can say what was dropped."""

    def __init__(self, what: str, message_type: str | None = None) -> None:
        super().__init__(what)
        self.message_type = message_type


class _Mismatch(Exception):
    """A value does not fit its type hint; ``path`` collects the place, innermost first, as the
    error unwinds (so a valid message builds no location strings at all)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.path: list[str] = []


def _short(value: Any) -> str:
    """A bounded description of a peer-supplied value: never the repr of a large container."""
    if isinstance(value, str | bytes):
        text = repr(value[:32])
        return text + "..." if len(value) > 32 else text
    if value is None or isinstance(value, bool | int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:40] + "..."
    if isinstance(value, list | tuple | dict):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _all_of(values: Any, tp: Any) -> bool:
    """Whether every item is exactly of the scalar type ``tp`` (ints within int64): the fast path
    for long homogeneous lists and maps, which would otherwise cost a call per item."""
    if tp is int:
        return all(type(v) is int and -_INT64 <= v < _INT64 for v in values)
    if tp is float:
        return all(type(v) is float or (type(v) is int and -_INT64 <= v < _INT64) for v in values)
    if tp in (str, bytes, bool):
        return all(type(v) is tp for v in values)
    return False


def _check(value: Any, tp: Any) -> Any:
    """Validate a msgpack-decoded ``value`` against type hint ``tp``; return it (tuples for lists).

    Raises ``_Mismatch`` (peer's fault) or ``LocalProtocolError`` (a message class whose field type
    the wire cannot carry: our bug).
    """
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check(value, option)
            except _Mismatch:
                continue
        raise _Mismatch(f"{_short(value)} is not a valid {tp}")
    if origin is typing.Literal:
        if any(value == option and type(value) is type(option) for option in typing.get_args(tp)):
            return value
        raise _Mismatch(f"{_short(value)} is not one of {typing.get_args(tp)}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _check_settings(value, tp)
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch(f"expected nil, got {_short(value)}")
    if tp is bool:
        if type(value) is bool:
            return value
        raise _Mismatch(f"expected bool, got {_short(value)}")
    if tp is int:
        # int64: msgpack also carries uint64, which no field needs and NumPy or a format may refuse.
        if type(value) is int and -_INT64 <= value < _INT64:
            return value
        raise _Mismatch(f"expected int (64-bit signed), got {_short(value)}")
    if tp is float:
        if type(value) is float or (type(value) is int and -_INT64 <= value < _INT64):
            return float(value)
        raise _Mismatch(f"expected float, got {_short(value)}")
    if tp in (str, bytes):
        if type(value) is tp:
            return value
        raise _Mismatch(f"expected {tp.__name__}, got {_short(value)}")
    if origin in (list, tuple, Sequence):
        if type(value) is not list:
            raise _Mismatch(f"expected a list, got {_short(value)}")
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _Mismatch(f"expected {len(args)} items, got {len(value)}")
            items = list(zip(value, args, strict=True))
        else:
            item_tp = args[0] if args else Any
            if _all_of(value, item_tp):
                fast = [float(v) for v in value] if item_tp is float else value
                return tuple(fast) if origin is tuple else fast
            items = [(v, item_tp) for v in value]
        checked = []
        for i, (v, item_tp) in enumerate(items):
            try:
                checked.append(_check(v, item_tp))
            except _Mismatch as exc:
                exc.path.append(f"[{i}]")
                raise
        return tuple(checked) if origin is tuple else checked
    if origin is dict:
        if type(value) is not dict:
            raise _Mismatch(f"expected a map, got {_short(value)}")
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        if key_tp is not float and _all_of(value.keys(), key_tp) and _all_of(value.values(), value_tp):
            return {k: float(v) for k, v in value.items()} if value_tp is float else value
        out = {}
        for k, v in value.items():
            try:
                out[_check(k, key_tp)] = _check(v, value_tp)
            except _Mismatch as exc:
                exc.path.append(f"[{_short(k)}]")
                raise
        return out
    raise LocalProtocolError(f"type {tp} cannot be carried on the wire")


def _check_settings(value: Any, cls: type) -> Any:
    """A nested settings dataclass: exactly its fields, each checked; its constructor validates.

    A field the peer sends that this side does not know is an error, never ignored, and a missing one
    is never filled in with this side's default: both ends must mean the same settings.
    """
    if type(value) is not dict:
        raise _Mismatch(f"expected a map of {cls.__name__} fields, got {_short(value)}")
    hints = _hints(cls)
    unknown = [k for k in value if k not in hints]
    if unknown:
        raise _Mismatch(f"unknown {cls.__name__} settings {[_short(k) for k in unknown[:8]]}")
    missing = sorted(set(hints) - set(value))
    if missing:
        raise _Mismatch(f"{cls.__name__} settings {missing} are missing")
    kwargs = {}
    for name, tp in hints.items():
        try:
            kwargs[name] = _check(value[name], tp)
        except _Mismatch as exc:
            exc.path.append(f".{name}")
            raise
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # the constructor's validation: the peer's values
        raise _Mismatch(str(exc)[:300]) from None


def _tensor(frame: Frame, descriptor: Any, limits: Limits, name: str) -> tuple[str, str | None, np.ndarray]:
    def fail(what: str) -> typing.NoReturn:
        raise DecodeError(f"{name}: {what}", name)

    if type(descriptor) is not list or len(descriptor) != 4:
        fail(f"a tensor descriptor must be [field, key, dtype, shape], got {_short(descriptor)}")
    field, key, dtype, shape = descriptor
    if type(field) is not str or not (key is None or type(key) is str):
        fail(f"tensor field and key must be strings, got {_short(field)} and {_short(key)}")
    label = f"tensor {_short(field)}" + (f"/{_short(key)}" if key is not None else "")
    if type(dtype) is not str or dtype not in ALLOWED_DTYPES:
        fail(f"{label}: dtype {_short(dtype)} is not allowed (allowed: {', '.join(sorted(ALLOWED_DTYPES))})")
    if (
        type(shape) is not list
        or len(shape) > limits.max_ndim
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        fail(f"{label}: shape must be a list of at most {limits.max_ndim} non-negative ints")
    nbytes = memoryview(frame).nbytes
    if nbytes > limits.max_tensor_bytes:
        fail(f"{label} of {nbytes} bytes exceeds the limit of {limits.max_tensor_bytes}")
    dt = np.dtype(dtype).newbyteorder("<")  # safe: dtype is one of the allowed names
    # Exact Python integers: NumPy's int64 product wraps. The product of the non-zero dimensions is
    # bounded as well, because NumPy refuses a shape like [0, 2**39, 2**39] although it holds nothing.
    if math.prod(max(d, 1) for d in shape) * dt.itemsize > limits.max_tensor_bytes:
        fail(f"{label}: shape {shape} of {dtype} exceeds the limit of {limits.max_tensor_bytes} bytes")
    expected = math.prod(shape) * dt.itemsize
    if nbytes != expected:
        fail(f"{label} has {nbytes} bytes, shape {shape} of {dtype} needs {expected}")
    if not nbytes:
        return field, key, np.zeros(shape, dtype=dt)
    # NumPy keeps a bool byte of 2 as is: ~ of it is true again, so coverage arithmetic would break.
    if dt == np.bool_ and int(np.frombuffer(frame, dtype=np.uint8).max()) > 1:
        fail(f"{label}: a bool tensor may hold only the bytes 0 and 1")
    return field, key, np.frombuffer(frame, dtype=dt).reshape(shape)


def decode(frames: Sequence[Frame], limits: Limits = Limits()) -> Message:
    """Decode and validate frames from a peer; raise ``DecodeError`` (a ``RemoteProtocolError``) for
    anything invalid, and nothing else."""
    if not frames:
        raise DecodeError("empty message")
    if len(frames) > limits.max_frames:
        raise DecodeError(f"{len(frames)} frames exceed the limit of {limits.max_frames}")
    total = frames_nbytes(frames)
    if total > limits.max_total_bytes:
        raise DecodeError(f"message of {total} bytes exceeds the limit of {limits.max_total_bytes}")
    head = bytes(frames[0])
    if len(head) > limits.max_envelope_bytes:
        raise DecodeError(f"envelope of {len(head)} bytes exceeds the limit of {limits.max_envelope_bytes}")
    try:
        envelope = msgpack.unpackb(head, raw=False, strict_map_key=False)
    except (ValueError, TypeError) as exc:
        # msgpack's errors (ExtraData, FormatError, StackError, bad UTF-8) are ValueErrors; an
        # unhashable map key (a list or map used as a key) is a TypeError.
        raise DecodeError(f"envelope is not valid msgpack: {exc.__class__.__name__}") from None
    if type(envelope) is not dict:
        raise DecodeError(f"envelope is not a map but {_short(envelope)}")
    version = envelope.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise DecodeError(
            f"protocol version {_short(version)} is not supported (this side speaks {PROTOCOL_VERSION})"
        )
    name = envelope.get("t")
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None or not isinstance(name, str):
        raise DecodeError(f"unknown message type {_short(name)}")
    extra = set(envelope) - {"v", "t", "f", "x"}
    if extra:
        raise DecodeError(
            f"{name}: unknown envelope keys {', '.join(_short(k) for k in list(extra)[:3])}", name
        )
    raw_fields, descriptors = envelope.get("f"), envelope.get("x")
    if type(raw_fields) is not dict or type(descriptors) is not list:
        raise DecodeError(f"{name}: envelope needs a field map 'f' and a tensor list 'x'", name)
    if len(descriptors) != len(frames) - 1:
        raise DecodeError(
            f"{name}: {len(descriptors)} tensor descriptors for {len(frames) - 1} data frames", name
        )

    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for field, tp in hints.items():
        if _is_array_type(tp) or _is_state_type(tp):
            continue
        if field not in raw_fields:
            raise DecodeError(f"{name}: field {field!r} is missing", name)
        try:
            kwargs[field] = _check(raw_fields[field], tp)
        except _Mismatch as exc:
            raise DecodeError(f"{name}.{field}{''.join(reversed(exc.path))}: {exc.what}", name) from None
    unknown = [k for k in raw_fields if k not in kwargs]
    if unknown:
        raise DecodeError(f"{name}: unknown fields {', '.join(_short(k) for k in unknown[:3])}", name)
    for frame, descriptor in zip(frames[1:], descriptors, strict=True):
        field, key, array = _tensor(frame, descriptor, limits, name)
        tp = hints.get(field)
        if tp is not None and _is_array_type(tp) and key is None and field not in kwargs:
            kwargs[field] = array
        elif tp is not None and _is_state_type(tp) and key is not None:
            state = kwargs.setdefault(field, {})
            if key in state:
                raise DecodeError(f"{name}: tensor {field}/{_short(key)} appears twice", name)
            state[key] = array
        else:
            raise DecodeError(f"{name}: unexpected tensor {_short(field)} (key {_short(key)})", name)
    for field, tp in hints.items():
        if field not in kwargs:
            if _is_state_type(tp):
                kwargs[field] = {}
            else:
                raise DecodeError(f"{name}: tensor field {field!r} is missing", name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        # Constructors validate with TypeError/ValueError by contract (clipfl.messages, clipfl.secagg);
        # their messages may quote a value, so they are cut to one bounded line.
        raise DecodeError(f"{name}: {str(exc)[:200]}", name) from None
