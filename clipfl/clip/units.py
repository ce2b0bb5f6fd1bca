"""Prunable units of a model and how every state coordinate ties to them.

CLIP prunes *units*: the output channels of a Conv2d, the output features of a Linear (never the
classifier's), the hidden units of each LSTM layer. A unit is not one tensor row: dropping channel
``c`` of a conv removes its filter, its bias, its BatchNorm entries and the next layer's weights that
read ``c``. Scores, sub-models, re-inflation and the secure-aggregation coverage all need the same
answer to "which units does this coordinate belong to?", so it is computed once, here.

Every coordinate of the flat state (``clipfl.params.ParamSpec`` order) has an *out* unit (the unit of
its own layer that it produces) and an *in* unit (the unit of the previous layer that it reads); either
may be absent. Absent is written as the index ``layout.units`` (one past the last unit): the "rest"
slot, so that vectorised code can index a vector of ``units + 1`` entries without branches.

Supported models (anything else raises ``ConfigError`` naming the layer, never a silent fallback):

* a ``torch.nn.Sequential`` (nested Sequentials allowed) of Conv2d (groups=1), Linear, BatchNorm1d/2d,
  Flatten, pooling, dropout and element-wise activations;
* a character LSTM, recognised by duck typing: attributes ``embedding`` (Embedding), ``lstm`` (LSTM,
  unidirectional, no projection) and ``fc`` (Linear), applied in that order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from clipfl.errors import ConfigError
from clipfl.params import ParamSpec

__all__ = ["Axis", "Layer", "LayerKind", "TensorTie", "UnitGroup", "UnitLayout"]

LayerKind = Literal["conv2d", "linear", "batchnorm", "lstm"]

# Layers that map each channel (or feature) to the same channel: they carry unit identity through.
PASSTHROUGH: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_SEQUENTIAL_LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten, *PASSTHROUGH)


@dataclass(frozen=True, slots=True)
class UnitGroup:
    """The prunable units of one layer: they occupy ``offset .. offset + size - 1`` of the unit vector."""

    name: str
    size: int
    offset: int


@dataclass(frozen=True, slots=True)
class Axis:
    """How one tensor axis indexes the units of a group.

    The axis has ``repeat * size * spread`` entries: ``repeat`` consecutive blocks (an LSTM's four gate
    blocks i, f, g, o), each holding every unit of the group, each unit owning ``spread`` consecutive
    entries (a conv channel's ``H * W`` features after a flatten). Position ``a`` belongs to unit
    ``(a // spread) % size``.
    """

    group: int
    dim: int
    repeat: int = 1
    spread: int = 1


@dataclass(frozen=True, slots=True)
class TensorTie:
    """Which axes of one state tensor index units: ``out`` (axis 0) and ``inp`` (axis 1), or neither."""

    name: str
    shape: tuple[int, ...]
    out: Axis | None
    inp: Axis | None


@dataclass(frozen=True, slots=True)
class Layer:
    """A layer with weights, as the slicer and the FLOP counter see it.

    ``out_group``/``in_group`` are ``None`` where the units are not prunable (the classifier's outputs,
    the first layer's inputs). ``in_size`` counts input *units* (channels), each feeding ``in_spread``
    input features; ``positions`` is how many times per sample the weights are applied (output pixels
    of a conv, time steps of an LSTM, 1 for a Linear); ``kernel`` is ``kh * kw`` of a conv.
    ``lstm_layer`` is the layer index inside an ``nn.LSTM``.
    """

    path: str
    kind: LayerKind
    out_group: int | None
    in_group: int | None
    in_size: int
    out_size: int
    in_spread: int = 1
    positions: int = 1
    kernel: int = 1
    lstm_layer: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class UnitLayout:
    """The prunable units of a model and, per flat-state coordinate, the units it is tied to.

    ``out_unit[k]`` / ``in_unit[k]`` are unit indices, ``units`` meaning "none" (the rest slot);
    ``trainable[k]`` is False for buffers (BatchNorm running statistics), which are sliced and
    aggregated with their channel but carry no invariance signal.
    """

    spec: ParamSpec
    groups: tuple[UnitGroup, ...]
    layers: tuple[Layer, ...]
    ties: tuple[TensorTie, ...]
    out_unit: np.ndarray
    in_unit: np.ndarray
    trainable: np.ndarray
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype

    @property
    def units(self) -> int:
        """Number of prunable units (the rest slot has this index)."""
        return sum(g.size for g in self.groups)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(g.size for g in self.groups)

    def split(self, per_unit: np.ndarray) -> tuple[np.ndarray, ...]:
        """Split a vector with one entry per unit (rest slot optional) into per-group views."""
        return tuple(per_unit[g.offset : g.offset + g.size] for g in self.groups)

    def unit_mask(self, kept: Sequence[np.ndarray]) -> np.ndarray:
        """Boolean vector of ``units + 1`` entries: True for kept units and for the rest slot."""
        if len(kept) != len(self.groups):
            raise ValueError(f"kept has {len(kept)} groups, the layout has {len(self.groups)}")
        mask = np.zeros(self.units + 1, dtype=bool)
        mask[-1] = True
        for g, idx in zip(self.groups, kept, strict=True):
            idx = np.asarray(idx, dtype=np.int64)
            if idx.size == 0 or idx.min() < 0 or idx.max() >= g.size or np.unique(idx).size != idx.size:
                raise ValueError(
                    f"kept units of {g.name!r} must be 1..{g.size} distinct indices in [0, {g.size})"
                )
            mask[g.offset + idx] = True
        return mask

    def coordinate_mask(self, kept: Sequence[np.ndarray]) -> np.ndarray:
        """True for every state coordinate a sub-model keeping ``kept`` still has (both its units kept)."""
        unit = self.unit_mask(kept)
        return unit[self.out_unit] & unit[self.in_unit]

    @classmethod
    def of(cls, model: nn.Module, input_shape: Sequence[int]) -> UnitLayout:
        """Discover the units of ``model`` for one sample of shape ``input_shape`` (no batch dimension).

        For a Sequential the shape is traced with one forward pass (it fixes ``H * W`` at a flatten
        and the conv output sizes for FLOP counting); for the LSTM it is ``(sequence_length,)``.
        Raises ``ConfigError`` naming the first layer the slicer does not support.
        """
        shape = tuple(int(s) for s in input_shape)
        if isinstance(model, nn.Sequential):
            groups, layers = _walk_sequential(model, shape)
            dtype = torch.float32
        elif _looks_like_char_lstm(model):
            groups, layers = _walk_char_lstm(model, shape)
            dtype = torch.long
        else:
            raise ConfigError(
                f"model {type(model).__name__} is not supported by the CLIP slicer: use an nn.Sequential of "
                "Conv2d/Linear/BatchNorm/pooling/activation layers, or a model with embedding, lstm and fc"
            )
        spec = ParamSpec.of(model)
        ties = _ties(layers, spec)
        out_unit, in_unit = _coordinate_units(spec, groups, ties)
        params = {name for name, _ in model.named_parameters()}
        trainable = np.concatenate(
            [np.full(z, n in params, dtype=bool) for n, z in zip(spec.names, spec.sizes, strict=True)]
        )
        return cls(spec, groups, layers, ties, out_unit, in_unit, trainable, shape, dtype)


@contextmanager
def tracing_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for a shape trace; every module's own train flag is restored after.

    A trace in train mode would update BatchNorm running statistics: discovery must not touch the model.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Leaf modules of nested Sequentials in execution order; any other container is refused."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            out.extend(_leaves(child, f"{path}."))
        elif next(child.children(), None) is not None:
            raise ConfigError(
                f"layer {path} ({type(child).__name__}) is a container the CLIP slicer does not support"
            )
        else:
            out.append((path, child))
    return out


def _walk_sequential(
    model: nn.Sequential, shape: tuple[int, ...]
) -> tuple[tuple[UnitGroup, ...], tuple[Layer, ...]]:
    leaves = _leaves(model)
    for path, m in leaves:
        if not isinstance(m, _SEQUENTIAL_LAYERS):
            raise ConfigError(f"layer {path} ({type(m).__name__}) is not supported by the CLIP slicer")
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros"):
            raise ConfigError(f"layer {path} (Conv2d): the CLIP slicer needs groups=1 and zero padding")
        if isinstance(m, nn.Flatten) and (m.start_dim != 1 or m.end_dim != -1):
            raise ConfigError(f"layer {path} (Flatten): the CLIP slicer needs start_dim=1, end_dim=-1")
    weighted = [i for i, (_, m) in enumerate(leaves) if isinstance(m, nn.Conv2d | nn.Linear)]
    if not weighted:
        raise ConfigError("the model has no Conv2d or Linear layer: nothing to prune")
    last = weighted[-1]
    groups: list[UnitGroup] = []
    layers: list[Layer] = []
    current: int | None = None  # the group whose units the activation's channels/features are
    spread = 1
    offset = 0
    x = torch.zeros((1, *shape))
    with tracing_mode(model):
        for i, (path, m) in enumerate(leaves):
            try:
                y = m(x)
            except RuntimeError as exc:
                raise ConfigError(
                    f"layer {path} ({type(m).__name__}) rejects input of shape {tuple(x.shape)}"
                ) from exc
            if isinstance(m, nn.Conv2d | nn.Linear):
                if isinstance(m, nn.Linear) and x.dim() != 2:
                    raise ConfigError(f"layer {path} (Linear) reads a {x.dim()}-d input; flatten it first")
                out_size = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
                out_group: int | None = None
                if i != last:
                    out_group = len(groups)
                    groups.append(UnitGroup(path, out_size, offset))
                    offset += out_size
                in_features = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
                conv = isinstance(m, nn.Conv2d)
                layers.append(
                    Layer(
                        path,
                        "conv2d" if conv else "linear",
                        out_group,
                        current,
                        in_size=in_features // spread if current is not None else in_features,
                        out_size=out_size,
                        in_spread=spread if current is not None else 1,
                        positions=int(y.shape[2] * y.shape[3]) if conv else 1,
                        kernel=int(m.kernel_size[0] * m.kernel_size[1]) if isinstance(m, nn.Conv2d) else 1,
                    )
                )
                current, spread = out_group, 1
            elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                if current is not None and spread != 1:
                    raise ConfigError(f"layer {path} ({type(m).__name__}) normalises flattened conv features")
                layers.append(Layer(path, "batchnorm", current, None, m.num_features, m.num_features))
            elif isinstance(m, nn.Flatten):
                spread *= math.prod(int(s) for s in x.shape[2:])
            x = y
    return tuple(groups), tuple(layers)


def _looks_like_char_lstm(model: nn.Module) -> bool:
    return (
        isinstance(getattr(model, "embedding", None), nn.Embedding)
        and isinstance(getattr(model, "lstm", None), nn.LSTM)
        and isinstance(getattr(model, "fc", None), nn.Linear)
    )


def _walk_char_lstm(
    model: nn.Module, shape: tuple[int, ...]
) -> tuple[tuple[UnitGroup, ...], tuple[Layer, ...]]:
    for name, child in model.named_children():
        if name not in ("embedding", "lstm", "fc") and (
            not isinstance(child, PASSTHROUGH) or next(child.parameters(), None) is not None
        ):
            raise ConfigError(f"layer {name} ({type(child).__name__}) is not supported by the CLIP slicer")
    emb, lstm, fc = model.embedding, model.lstm, model.fc
    assert isinstance(emb, nn.Embedding) and isinstance(lstm, nn.LSTM) and isinstance(fc, nn.Linear)
    if lstm.bidirectional or lstm.proj_size != 0:
        raise ConfigError("layer lstm (LSTM): the CLIP slicer needs a unidirectional LSTM without projection")
    if len(shape) != 1:
        raise ConfigError(f"an LSTM model's input shape is (sequence_length,), got {shape}")
    if lstm.input_size != emb.embedding_dim or fc.in_features != lstm.hidden_size:
        raise ConfigError("embedding -> lstm -> fc sizes do not chain")
    hidden = lstm.hidden_size
    groups = tuple(UnitGroup(f"lstm.l{k}", hidden, k * hidden) for k in range(lstm.num_layers))
    layers = [
        Layer(
            "lstm",
            "lstm",
            out_group=k,
            in_group=k - 1 if k > 0 else None,
            in_size=lstm.input_size if k == 0 else hidden,
            out_size=hidden,
            positions=shape[0],
            lstm_layer=k,
        )
        for k in range(lstm.num_layers)
    ]
    layers.append(Layer("fc", "linear", None, lstm.num_layers - 1, fc.in_features, fc.out_features))
    return groups, tuple(layers)


def _ties(layers: Sequence[Layer], spec: ParamSpec) -> tuple[TensorTie, ...]:
    """One tie per state tensor (untied tensors, like an embedding table, get ``out = inp = None``)."""
    shapes = dict(zip(spec.names, spec.shapes, strict=True))
    tied: dict[str, tuple[Axis | None, Axis | None]] = {}

    def tie(name: str, out: Axis | None, inp: Axis | None) -> None:
        if name in shapes:
            tied[name] = (out, inp)

    for layer in layers:
        p = f"{layer.path}."
        out = None if layer.out_group is None else Axis(layer.out_group, 0)
        inp = None if layer.in_group is None else Axis(layer.in_group, 1, spread=layer.in_spread)
        if layer.kind in ("conv2d", "linear"):
            tie(p + "weight", out, inp)
            tie(p + "bias", out, None)
        elif layer.kind == "batchnorm":
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                tie(p + leaf, out, None)
        else:
            k, g = layer.lstm_layer, layer.out_group
            assert g is not None
            gates = Axis(g, 0, repeat=4)
            tie(f"{p}weight_ih_l{k}", gates, inp)
            tie(f"{p}weight_hh_l{k}", gates, Axis(g, 1))
            tie(f"{p}bias_ih_l{k}", gates, None)
            tie(f"{p}bias_hh_l{k}", gates, None)
    return tuple(TensorTie(n, s, *tied.get(n, (None, None))) for n, s in shapes.items())


def _axis_units(axis: Axis, length: int, groups: Sequence[UnitGroup]) -> np.ndarray:
    g = groups[axis.group]
    if length != axis.repeat * g.size * axis.spread:
        raise ConfigError(
            f"tensor axis of length {length} does not hold {axis.repeat} x {g.size} units x {axis.spread} "
            f"entries of {g.name!r}: the model's layers do not chain as the slicer assumed"
        )
    return g.offset + (np.arange(length, dtype=np.int64) // axis.spread) % g.size


def _coordinate_units(
    spec: ParamSpec, groups: Sequence[UnitGroup], ties: Sequence[TensorTie]
) -> tuple[np.ndarray, np.ndarray]:
    rest = sum(g.size for g in groups)
    out_unit = np.full(spec.size, rest, dtype=np.int64)  # int64: numpy's and torch's native index type
    in_unit = np.full(spec.size, rest, dtype=np.int64)
    for tie, offset, size in zip(ties, spec.offsets, spec.sizes, strict=True):
        for axis, target in ((tie.out, out_unit), (tie.inp, in_unit)):
            if axis is None:
                continue
            units = _axis_units(axis, tie.shape[axis.dim], groups)
            view = [1] * len(tie.shape)
            view[axis.dim] = -1
            target[offset : offset + size] = np.broadcast_to(units.reshape(view), tie.shape).reshape(-1)
    return out_unit, in_unit
