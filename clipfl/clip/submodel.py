"""Physically smaller models, and their updates re-inflated to full size.

A straggler must really spend fewer FLOPs, so masking weights is not enough: the sub-model has fewer
conv channels, fewer Linear features, fewer LSTM units, and the next layer reads only the kept
inputs. Every kept unit keeps its weights' relative order, so the sub-model's flat state is exactly
the full flat state restricted to ``layout.coordinate_mask(kept)``, in the same order; that single
index array both loads the sub-model and re-inflates its delta.

After local training, ``inflate`` returns the delta relative to the global model on the kept
coordinates and zero elsewhere, plus the coverage vector that secure aggregation sums next to it
(DESIGN section 4): the client's weight on every unit it trained and on the rest slot, 0 on pruned
units.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from clipfl.clip.units import Layer, UnitLayout
from clipfl.errors import ConfigError
from clipfl.params import ParamSpec, load_state, state_of

__all__ = ["Inflated", "SubModel", "build_submodel", "full_coverage", "unit_coverage"]


class Inflated(NamedTuple):
    """A client's contribution at full size: unweighted delta (float32) and weighted coverage."""

    delta: np.ndarray
    coverage: np.ndarray


def unit_coverage(layout: UnitLayout, kept: Sequence[np.ndarray], weight: float = 1.0) -> np.ndarray:
    """Coverage of a client that kept ``kept``: ``weight`` on kept units and the rest slot, else 0."""
    return np.where(layout.unit_mask(kept), np.float64(weight), 0.0)


def full_coverage(layout: UnitLayout, weight: float = 1.0) -> np.ndarray:
    """Coverage of a client that trained the whole model."""
    return np.full(layout.units + 1, weight, dtype=np.float64)


@dataclass(frozen=True, slots=True, eq=False)
class SubModel:
    """A sub-model and where its coordinates live in the full model.

    ``index[k]`` is the full-state position of the sub-model's flat coordinate ``k``; ``base`` holds the
    global weights it started from (``full_global[index]``).
    """

    module: nn.Module
    layout: UnitLayout
    kept: tuple[np.ndarray, ...]
    index: np.ndarray
    base: np.ndarray

    @property
    def spec(self) -> ParamSpec:
        return ParamSpec.of(self.module)

    @property
    def trained_units(self) -> np.ndarray:
        """The units this sub-model trains, as coverage counts them (``UnitLayout.unit_mask``)."""
        return self.layout.unit_mask(self.kept)

    def inflate(
        self, trained: Mapping[str, np.ndarray] | np.ndarray | None = None, weight: float = 1.0
    ) -> Inflated:
        """Full-size delta of the trained sub-model (zeros where pruned) and its coverage.

        ``trained`` is the sub-model's state (named or flat); by default the module's current state.
        """
        spec = self.spec
        if trained is None:
            trained = state_of(self.module)
        flat = (
            spec.flatten(trained) if isinstance(trained, Mapping) else np.asarray(trained, dtype=np.float32)
        )
        if flat.shape != self.index.shape:
            raise ValueError(f"sub-model state has shape {flat.shape}, expected {self.index.shape}")
        delta = np.zeros(self.layout.spec.size, dtype=np.float32)
        delta[self.index] = flat - self.base
        return Inflated(delta, unit_coverage(self.layout, self.kept, weight))


def build_submodel(
    model: nn.Module,
    layout: UnitLayout,
    kept: Sequence[np.ndarray],
    global_state: np.ndarray | None = None,
) -> SubModel:
    """A smaller copy of ``model`` keeping units ``kept`` (per group), loaded from ``global_state``.

    ``global_state`` is the full model's flat state (default: the model's own weights). The full model
    is not modified. Integer buffers (BatchNorm's batch counter) are copied unchanged.
    """
    kept_sorted = tuple(np.sort(np.asarray(k, dtype=np.int64)) for k in kept)
    index = np.flatnonzero(layout.coordinate_mask(kept_sorted))
    full = (
        layout.spec.flatten(state_of(model)) if global_state is None else np.asarray(global_state, np.float32)
    )
    if full.shape != (layout.spec.size,):
        raise ValueError(f"global state has shape {full.shape}, the model needs ({layout.spec.size},)")
    counts = [k.size for k in kept_sorted]
    sub = copy.deepcopy(model)
    for path in dict.fromkeys(layer.path for layer in layout.layers):
        layers = [layer for layer in layout.layers if layer.path == path]
        old = sub.get_submodule(path)
        _replace(sub, path, _shrunk(old, layers, counts))
    spec = ParamSpec.of(sub)
    if spec.size != index.size:
        raise AssertionError(f"sub-model has {spec.size} coordinates, the kept mask selects {index.size}")
    base = full[index]
    load_state(sub, spec.unflatten(base.copy()))
    own = model.state_dict()
    with torch.no_grad():
        for name, value in sub.state_dict().items():
            if not value.is_floating_point():
                value.copy_(own[name])
    return SubModel(sub, layout, kept_sorted, index, base)


def _size(group: int | None, full: int, counts: Sequence[int], spread: int = 1) -> int:
    return full * spread if group is None else counts[group] * spread


def _shrunk(old: nn.Module, layers: Sequence[Layer], counts: Sequence[int]) -> nn.Module:
    """A fresh module like ``old`` with the kept numbers of inputs and outputs (weights loaded later)."""
    layer = layers[0]
    out_n = _size(layer.out_group, layer.out_size, counts)
    if isinstance(old, nn.Conv2d):
        in_n = _size(layer.in_group, layer.in_size, counts)
        return nn.Conv2d(
            in_n,
            out_n,
            old.kernel_size,  # type: ignore[arg-type]
            stride=old.stride,  # type: ignore[arg-type]
            padding=old.padding,  # type: ignore[arg-type]
            dilation=old.dilation,  # type: ignore[arg-type]
            bias=old.bias is not None,
        )
    if isinstance(old, nn.Linear):
        in_n = _size(layer.in_group, layer.in_size, counts, layer.in_spread)
        return nn.Linear(in_n, out_n, bias=old.bias is not None)
    if isinstance(old, nn.BatchNorm1d | nn.BatchNorm2d):
        return type(old)(
            out_n,
            eps=old.eps,
            momentum=old.momentum,
            affine=old.affine,
            track_running_stats=old.track_running_stats,
        )
    if isinstance(old, nn.LSTM):
        hidden = {counts[layer.out_group] for layer in layers if layer.out_group is not None}
        if len(hidden) != 1:
            raise ConfigError(
                f"an nn.LSTM keeps one hidden size for all layers, the selection keeps {sorted(hidden)}"
            )
        return nn.LSTM(
            _size(layer.in_group, layer.in_size, counts),
            hidden.pop(),
            num_layers=old.num_layers,
            bias=old.bias,
            batch_first=old.batch_first,
            dropout=old.dropout,
        )
    raise AssertionError(f"no slicing rule for {type(old).__name__}")


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)
