"""Local training's arithmetic: subnormal floats are flushed to zero while a fit or an evaluation runs,
and IEEE arithmetic is back after it.

Without the flush, VGG-9's fit of 512 CIFAR-10 images slowed from 1.5 s to 9 s of CPU within three
repetitions (subnormal activations and gradients), and a live straggler's emulated slowdown multiplied
the slow time; the simulator's cost model measured the slow fits as the model's speed. Left on, the
mode would break IEEE arithmetic for the rest of the process (the codec, the aggregation, Hypothesis).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from clipfl.settings import TrainSettings
from clipfl.training import evaluate, fit

SUBNORMAL = 1e-40  # below float32's smallest normal number, 1.18e-38


def _survives() -> bool:
    """Whether a subnormal float32 survives one multiplication in this thread."""
    return float(torch.tensor([SUBNORMAL], dtype=torch.float32) * 1.0) != 0.0


class _Probe(nn.Module):
    """A linear model that notes, at each forward pass, whether subnormals survived."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(_survives())
        return self.linear(x)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    fit(model, x, y, TrainSettings(epochs=1, batch_size=4, lr=0.1, optimizer="sgd", momentum=0.0), seed=0)


@pytest.mark.parametrize("run", [_fit, evaluate], ids=["fit", "evaluate"])
def test_subnormals_are_flushed_during_a_fit_or_evaluation_and_only_then(run: Callable[..., object]) -> None:
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero mode (torch.set_flush_denormal is x86-only)")
    assert _survives()  # the control: with the mode off, IEEE arithmetic keeps the subnormal
    torch.manual_seed(0)
    model = _Probe()
    run(model, torch.randn(8, 3), torch.tensor([0, 1] * 4))
    assert model.seen and not any(model.seen)  # flushed in every forward pass
    assert _survives()  # and IEEE again afterwards
