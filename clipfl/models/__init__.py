"""The model registry: ``build_model(name, dataset)`` for every model a preset or a flag may name.

A builder takes the ``Dataset`` it will train on (or ``None``) plus keyword overrides, and reads the
number of classes, input channels or vocabulary size from the dataset, so that a model always fits
its data. Image models are plain ``nn.Sequential`` stacks and the text model is ``CharLSTM``: the two
shapes the CLIP slicer supports. Parameter counts are in ``clipfl.models.cnn`` and ``clipfl.models.lstm``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from torch import nn

from clipfl.data.types import Dataset
from clipfl.errors import ConfigError
from clipfl.models.cnn import digits_cnn, digits_mlp, femnist_cnn, vgg9
from clipfl.models.lstm import CharLSTM

__all__ = ["MODELS", "CharLSTM", "ModelEntry", "available_models", "build_model", "count_parameters"]


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A registered model: its builder and the dataset it was designed for."""

    name: str
    build: Callable[..., nn.Module]
    dataset: str
    summary: str


def _classes(dataset: Dataset | None, kw: dict[str, Any], default: int) -> int:
    return int(kw.pop("num_classes", dataset.num_classes if dataset is not None else default))


def _channels(dataset: Dataset | None, kw: dict[str, Any], default: int) -> int:
    return int(kw.pop("in_channels", dataset.input_shape[0] if dataset is not None else default))


WIDE_HIDDEN = 19_600
"""``digits_mlp_wide``'s hidden width: 75 * 19,600 + 10 = 1,470,010 parameters, VGG-9's 1,469,994."""


def _build_digits_mlp(dataset: Dataset | None, **kw: Any) -> nn.Module:
    n_in = int(np.prod(dataset.input_shape)) if dataset is not None else 64
    return digits_mlp(int(kw.pop("in_features", n_in)), num_classes=_classes(dataset, kw, 10), **kw)


def _build_digits_mlp_wide(dataset: Dataset | None, **kw: Any) -> nn.Module:
    return _build_digits_mlp(dataset, **{"hidden": WIDE_HIDDEN, **kw})


def _build_digits_cnn(dataset: Dataset | None, **kw: Any) -> nn.Module:
    return digits_cnn(_channels(dataset, kw, 1), _classes(dataset, kw, 10), **kw)


def _build_femnist_cnn(dataset: Dataset | None, **kw: Any) -> nn.Module:
    return femnist_cnn(_channels(dataset, kw, 1), _classes(dataset, kw, 62), **kw)


def _build_vgg9(dataset: Dataset | None, **kw: Any) -> nn.Module:
    return vgg9(_channels(dataset, kw, 3), _classes(dataset, kw, 10), **kw)


def _build_lstm(dataset: Dataset | None, **kw: Any) -> nn.Module:
    vocab = int(kw.pop("vocab_size", dataset.num_classes if dataset is not None else 81))
    return CharLSTM(vocab, **kw)


MODELS: Mapping[str, ModelEntry] = MappingProxyType(
    {
        e.name: e
        for e in (
            ModelEntry("digits_mlp", _build_digits_mlp, "digits", "Flatten, FC64, FC10 (4,810 parameters)"),
            ModelEntry(
                "digits_mlp_wide",
                _build_digits_mlp_wide,
                "digits",
                "Flatten, FC19600, FC10 (1,470,010: VGG-9's size, to time secure aggregation without "
                "VGG-9's training)",
            ),
            ModelEntry("digits_cnn", _build_digits_cnn, "digits", "2 convs, pool, FC64, FC10 (38,282)"),
            ModelEntry("femnist_cnn", _build_femnist_cnn, "femnist", "conv16, conv64, FC120, FC62 (410,022)"),
            ModelEntry("vgg9", _build_vgg9, "cifar10", "VGG-9 of FLuID and CLIP (1,469,994)"),
            ModelEntry("shakespeare_lstm", _build_lstm, "shakespeare", "embed 8, 2x LSTM128, FC (213,849)"),
        )
    }
)


def available_models() -> tuple[str, ...]:
    """The registered model names, sorted."""
    return tuple(sorted(MODELS))


def build_model(name: str, dataset: Dataset | None = None, **kw: Any) -> nn.Module:
    """A freshly initialised ``name`` sized for ``dataset``; keyword arguments override the builder's.

    Seed torch (``torch.manual_seed``) before calling when the initial weights must be reproducible.
    """
    entry = MODELS.get(name)
    if entry is None:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    try:
        return entry.build(dataset, **kw)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} does not accept these options: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (weights and biases; no buffers)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
