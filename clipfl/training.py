"""Local training and evaluation: plain torch, no network.

Data arrive as whole tensors (``clipfl.data.to_tensors``) and are batched by slicing a seeded
permutation, which is cheaper than a ``DataLoader`` for data that already sit in memory.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from clipfl.settings import TrainSettings

__all__ = ["FitResult", "evaluate", "fit"]


@dataclass(frozen=True, slots=True)
class FitResult:
    loss: float
    samples: int
    cpu_seconds: float
    """CPU time of the calling thread during the fit: what emulated slowdowns multiply."""


@contextlib.contextmanager
def _subnormals_flushed() -> Iterator[None]:
    """Round subnormal floats to zero in this thread's arithmetic while training or testing (x86
    FTZ/DAZ; a no-op elsewhere), and restore IEEE arithmetic after.

    Training produces subnormals (below 1.2e-38) in activations and gradients, and x86 computes with
    them many times slower: VGG-9's fit of 512 CIFAR-10 images went from 1.5 s to 9 s of CPU by its
    third repetition without this, and a live straggler's emulated slowdown multiplied the slow time.
    The mode is the thread's processor state, so it is switched off again: the rest of the process
    (the codec, the aggregation) keeps IEEE arithmetic. Used as a decorator of ``fit`` and ``evaluate``.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr)
    return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum)


@_subnormals_flushed()
def fit(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings, *, seed: int
) -> FitResult:
    """Train ``model`` in place for ``settings.epochs`` epochs over ``(x, y)``."""
    cpu_start = time.thread_time()
    generator = torch.Generator().manual_seed(seed)
    optimizer = _optimizer(model, settings)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total, seen = 0.0, 0
    n = len(y)
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, settings.batch_size):
            idx = order[start : start + settings.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
    mean = total / seen if seen else math.nan
    return FitResult(loss=mean, samples=n, cpu_seconds=time.thread_time() - cpu_start)


@torch.no_grad()
@_subnormals_flushed()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """``(mean cross-entropy loss, accuracy in [0, 1])`` of ``model`` on ``(x, y)``."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = model(xb)
        total_loss += float(loss_fn(out, yb))
        correct += int((out.argmax(dim=1) == yb).sum())
    n = max(len(y), 1)
    return total_loss / n, correct / n
