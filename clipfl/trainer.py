"""The learning a federation does, in plain torch: a client's local data and fit, the server's test.

``federation_data`` loads and partitions the dataset once and hands each client its share, so that
a process running many clients (tests, the scale benchmark, a simulation) pays for it once.
``LocalTrainer`` trains the global model or a sub-model and returns the full-size delta and which
units were trained; ``Evaluator`` scores a flat global model on the test split. No network, no clock.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from clipfl.clip import SubModel
from clipfl.config import RunConfig
from clipfl.data import Dataset, load_dataset, make_partition, subsample, to_tensors
from clipfl.errors import ConfigError
from clipfl.models import build_model
from clipfl.params import ParamSpec, load_state, state_of
from clipfl.settings import TrainSettings
from clipfl.training import FitResult, evaluate, fit

__all__ = [
    "DEVICES",
    "ClientData",
    "Evaluator",
    "LocalTrainer",
    "TrainOutput",
    "check_device",
    "client_data",
    "federation_data",
]

DEVICES = ("cpu", "cuda")
"""Where a fit may train (``check_device``)."""


def check_device(device: str) -> str:
    """``device`` when torch can train there, else a ``ConfigError`` saying what to use instead."""
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda: torch sees no CUDA device on this machine; use device cpu")
    return device


@dataclass(frozen=True, slots=True, eq=False)
class ClientData:
    """One client's training samples, and the dataset they come from (models are sized from it);
    ``test_x``/``test_y``: its local test split where the partition has one (natural partitions: the
    same writer's or role's test samples), else None."""

    dataset: Dataset
    x: torch.Tensor
    y: torch.Tensor
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None

    @property
    def num_samples(self) -> int:
        return len(self.y)


def federation_data(run: RunConfig, client_ids: list[int] | None = None) -> dict[int, ClientData]:
    """Every client's share (or those of ``client_ids``), from one load and one partition."""
    dataset = load_dataset(run.dataset, run.data_dir)
    part = make_partition(
        dataset,
        run.partition,
        run.clients,
        seed=run.seed,
        alpha=run.alpha,
        pick=run.pick,
        min_samples=run.min_samples,
    )
    shares = {}
    for client_id in client_ids if client_ids is not None else range(run.clients):
        if not 0 <= client_id < run.clients:
            raise ConfigError(
                f"client-id {client_id} is outside 0..{run.clients - 1} (--clients {run.clients})"
            )
        mine = subsample(part.train[client_id], run.max_client_samples, seed=run.seed + client_id)
        x, y = to_tensors(dataset.train, mine)
        local = part.test[client_id] if part.test is not None else None
        if local is not None:  # its own test split is local data too: capped alike
            local = subsample(local, run.max_client_samples, seed=run.seed + client_id)
        test_x, test_y = to_tensors(dataset.test, local) if local is not None and len(local) else (None, None)
        shares[client_id] = ClientData(dataset, x, y, test_x, test_y)
    return shares


def client_data(run: RunConfig, client_id: int) -> ClientData:
    """One client's share (a client process loads only what it needs to hold)."""
    return federation_data(run, [client_id])[client_id]


@dataclass(frozen=True, slots=True)
class TrainOutput:
    """A finished local fit: the full-size delta, which units it trained, and the fit's figures."""

    result: FitResult
    delta: np.ndarray
    trained_units: np.ndarray
    """Coverage (DESIGN section 4): True for each prunable unit trained, then the rest slot (True)."""


class LocalTrainer:
    """A client's model and data; trains the global model, or a sub-model of it, and returns the delta."""

    def __init__(self, data: ClientData, model_name: str, device: str = "cpu") -> None:
        self.data = data
        self.model_name = model_name
        self.device = check_device(device)
        """Where fits train ("cpu" or "cuda"); the model, weights and deltas stay on the CPU between fits."""
        self.model: nn.Module = build_model(model_name, data.dataset)
        self.spec = ParamSpec.of(self.model)
        self._inputs: tuple[torch.Tensor, torch.Tensor] | None = None

    def warm_up(self) -> None:
        """One throwaway step on a copy of the model, so torch's one-time set-up is not timed as a fit."""
        model = copy.deepcopy(self.model)
        x, y = self.data.x[:2], self.data.y[:2]
        fit(
            model, x, y, TrainSettings(epochs=1, batch_size=2, lr=0.01, optimizer="sgd", momentum=0.0), seed=0
        )

    def train(
        self,
        weights: dict[str, np.ndarray],
        sub: SubModel | None,
        settings: TrainSettings,
        seed: int,
        coverage_size: int,
    ) -> TrainOutput:
        """Train the full model at ``weights``, or ``sub`` (built from them); the delta is full size."""
        x, y = self._device_inputs()
        if sub is not None:
            result = self._fit_on_device(sub.module, x, y, settings, seed)
            return TrainOutput(result, sub.inflate().delta, sub.trained_units)
        load_state(self.model, weights)
        result = self._fit_on_device(self.model, x, y, settings, seed)
        delta = self.spec.flatten(state_of(self.model)) - self.spec.flatten(weights)
        return TrainOutput(result, delta, np.ones(coverage_size, dtype=bool))

    def _device_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training samples on the training device, copied there once."""
        if self.device == "cpu":
            return self.data.x, self.data.y
        if self._inputs is None:
            self._inputs = (self.data.x.to(self.device), self.data.y.to(self.device))
        return self._inputs

    def _fit_on_device(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings, seed: int
    ) -> FitResult:
        if self.device == "cpu":
            return fit(model, x, y, settings, seed=seed)
        model.to(self.device)
        try:
            return fit(model, x, y, settings, seed=seed)
        finally:
            model.to("cpu")


class Evaluator:
    """The server's model for testing: loads a flat global model and scores it on the test split."""

    def __init__(self, model: nn.Module, spec: ParamSpec, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.spec, self.x, self.y = model, spec, x, y

    @classmethod
    def for_run(cls, run: RunConfig, model: nn.Module, dataset: Dataset) -> Evaluator:
        test = subsample(np.arange(len(dataset.test)), run.max_test_samples, seed=run.seed)
        return cls(model, ParamSpec.of(model), *to_tensors(dataset.test, test))

    def __call__(self, weights: np.ndarray) -> tuple[float, float]:
        """``(loss, accuracy)`` of the flat model ``weights``."""
        return self.on(weights, self.x, self.y)

    def on(self, weights: np.ndarray, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """``(loss, accuracy)`` of the flat model ``weights`` on the samples ``x``, ``y``."""
        load_state(self.model, self.spec.unflatten(weights))
        return evaluate(self.model, x, y)
