"""Exact forward cost of a model, full or pruned, for one sample.

Convention: the count is of multiply-accumulates (MACs) of the weight products, per sample:

* Conv2d: ``H_out * W_out * C_out * (C_in / groups) * kh * kw``;
* Linear: ``in_features * out_features`` per position (times the leading non-batch dimensions);
* LSTM: per time step and layer ``4 * H * (in + H)``: the input and the recurrent matmul of the
  four gates i, f, g, o.

Bias additions, activations, gate non-linearities, BatchNorm (folded into the conv at inference),
pooling, dropout and embedding lookups count 0: they are element-wise or memory-bound and below 2 %
of the MACs of the models clipfl trains. Training cost is a near-constant multiple (about 3x) of this
count, so the *ratio* of two counts is what the planner uses to predict a sub-model's fit time.

``forward_macs`` measures a real module with forward hooks; ``layout_macs`` computes the same number
from a ``UnitLayout`` and per-layer unit counts without building anything, which is what the planner
evaluates for every candidate keep ratio. Tests hold the two equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from clipfl.clip.selection import kept_counts
from clipfl.clip.units import PASSTHROUGH, UnitLayout, tracing_mode
from clipfl.errors import ConfigError

__all__ = ["flop_ratio", "forward_macs", "layout_macs"]

_FREE: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten, nn.Embedding, *PASSTHROUGH)


def forward_macs(model: nn.Module, input_shape: Sequence[int], dtype: torch.dtype | None = None) -> int:
    """MACs of one forward pass of one sample of shape ``input_shape`` (no batch dimension).

    ``dtype`` of the dummy input defaults to ``long`` for models with an ``nn.Embedding``, else float32.
    Raises ``ConfigError`` for a leaf module whose cost this counter does not know.
    """
    leaves = [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]
    for name, m in leaves:
        if not isinstance(m, (nn.Conv2d, nn.Linear, nn.LSTM, *_FREE)):
            raise ConfigError(f"layer {name} ({type(m).__name__}) has no FLOP rule")
    if dtype is None:
        dtype = torch.long if any(isinstance(m, nn.Embedding) for _, m in leaves) else torch.float32
    total = 0

    def count(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        elif isinstance(module, nn.LSTM):
            x = inputs[0]
            steps = x.shape[0] if x.dim() == 2 or not module.batch_first else x.shape[1]
            h = module.hidden_size
            sizes = [module.input_size] + [h] * (module.num_layers - 1)
            total += steps * sum(4 * h * (n_in + h) for n_in in sizes) * (2 if module.bidirectional else 1)

    handles = [
        m.register_forward_hook(count) for _, m in leaves if isinstance(m, nn.Conv2d | nn.Linear | nn.LSTM)
    ]
    try:
        with tracing_mode(model):
            model(torch.zeros((1, *input_shape), dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return int(total)


def layout_macs(layout: UnitLayout, counts: Sequence[int] | None = None) -> int:
    """MACs per sample of the model described by ``layout`` keeping ``counts[g]`` units of group ``g``."""
    n = list(layout.sizes) if counts is None else list(counts)
    if len(n) != len(layout.groups):
        raise ValueError(f"counts has {len(n)} entries, the layout has {len(layout.groups)} groups")
    total = 0
    for layer in layout.layers:
        out_n = layer.out_size if layer.out_group is None else n[layer.out_group]
        in_n = layer.in_size if layer.in_group is None else n[layer.in_group]
        if layer.kind == "conv2d":
            total += layer.positions * layer.kernel * in_n * out_n
        elif layer.kind == "linear":
            total += in_n * layer.in_spread * out_n
        elif layer.kind == "lstm":
            total += layer.positions * 4 * out_n * (in_n + out_n)
    return total


def flop_ratio(layout: UnitLayout, keep_ratio: float) -> float:
    """MACs of the sub-model that ``keep_ratio`` builds, over the full model's."""
    return layout_macs(layout, kept_counts(layout, keep_ratio)) / layout_macs(layout)
