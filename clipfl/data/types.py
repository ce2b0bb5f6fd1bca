"""The in-memory form of every dataset: compact NumPy arrays, turned into tensors once per client.

Samples are stored as they come off the disk (uint8 pixels, small-integer token ids) so that a 50,000
image CIFAR-10 train set is 150 MB rather than 600 MB of float32, and so that the decode-once cache
(``clipfl.data.cache``) can save and map them unchanged. ``to_tensors`` converts a whole client's
index set in one vectorised step: there are no per-sample Python objects anywhere on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["ArraySplit", "Dataset", "Normalization", "to_tensors"]


@dataclass(frozen=True, slots=True)
class Normalization:
    """How stored integer pixels become model input: ``(x * scale - mean[c]) / std[c]`` per channel.

    ``scale`` maps the stored range onto [0, 1] (1/255 for bytes, 1/16 for scikit-learn's digits);
    ``mean`` and ``std`` are per channel, on that [0, 1] scale.
    """

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError("Normalization needs one mean and one std per channel")
        if any(s <= 0 for s in self.std) or self.scale <= 0:
            raise ValueError("Normalization scale and std must be positive")


@dataclass(frozen=True, slots=True, eq=False)
class ArraySplit:
    """One split (train or test) of a dataset.

    ``x``: images as uint8 ``(N, C, H, W)``, or token ids as an integer ``(N, T)`` array.
    ``y``: int64 labels ``(N,)`` (the class, or the next character's id).
    ``groups``: per-sample index of the writer/role that produced it, for the natural partition;
    ``None`` for datasets without one.
    ``norm``: how to turn pixels into floats; ``None`` means ``x`` holds token ids (int64 on output).
    """

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None
    norm: Normalization | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")
        if self.groups is not None and len(self.groups) != len(self.y):
            raise ValueError(f"groups has {len(self.groups)} entries for {len(self.y)} samples")
        if self.norm is not None and self.x.ndim == 4 and self.x.shape[1] != len(self.norm.mean):
            raise ValueError(f"x has {self.x.shape[1]} channels, the normalization {len(self.norm.mean)}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, slots=True, eq=False)
class Dataset:
    """A dataset with its train and held-out test splits and what a model needs to know about it.

    ``natural_clients`` is the number of writers/roles with train samples (``None`` when the data has
    no natural partition); ``vocab`` is the symbol table of text datasets (id = position, and
    ``len(vocab)`` is the reserved id of unknown symbols; ``None`` for images); ``group_names`` names
    the writer/role of each group index; ``source`` says which format and file it was read from.
    """

    name: str
    train: ArraySplit
    test: ArraySplit
    num_classes: int
    input_shape: tuple[int, ...]
    natural_clients: int | None = None
    vocab: str | None = None
    group_names: tuple[str, ...] | None = field(default=None, repr=False)
    class_names: tuple[str, ...] | None = field(default=None, repr=False)
    source: str = "embedded"

    @property
    def is_text(self) -> bool:
        return self.vocab is not None


def to_tensors(split: ArraySplit, indices: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors of ``split`` (or of its ``indices``), built in one vectorised step.

    Images come back float32 ``(N, C, H, W)`` normalised by ``split.norm``; token ids come back int64
    ``(N, T)``; labels int64 ``(N,)``. The result owns its memory, so a client can keep it for the
    whole run and batch it by slicing (``x[perm[i:i+b]]``) without a ``DataLoader``.
    """
    x = split.x if indices is None else split.x[np.asarray(indices, dtype=np.int64)]
    y = split.y if indices is None else split.y[np.asarray(indices, dtype=np.int64)]
    # Always copies: the split's arrays may be read-only maps of the cache file, and a tensor sharing
    # their memory would fault on the first in-place write.
    yt = torch.from_numpy(np.array(y, dtype=np.int64, order="C", copy=True))
    if split.norm is None:
        return torch.from_numpy(np.array(x, dtype=np.int64, order="C", copy=True)), yt
    n = split.norm
    xt = torch.from_numpy(np.array(x, dtype=np.float32, order="C", copy=True))
    shape = (1, len(n.mean)) + (1,) * (xt.dim() - 2)
    mean = torch.tensor(n.mean, dtype=torch.float32).view(shape)
    std = torch.tensor(n.std, dtype=torch.float32).view(shape)
    xt.mul_(n.scale).sub_(mean).div_(std)
    return xt, yt
