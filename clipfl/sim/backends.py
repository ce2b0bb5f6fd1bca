"""Where a simulation's fits train: in this process (``local``, the default) or as Ray tasks (``ray``).

The event loop of ``clipfl.sim.federation`` never waits for a fit when it starts one: a fit's virtual
duration comes from its MACs, known before it trains, so the loop schedules its end and asks for the
trained update only when that end is due. Every fit started in between may train at the same time. The
``local`` backend trains each fit as it is submitted, in this process, on one torch thread (as each
live client does). The ``ray`` backend submits each fit as a Ray task, so the clients of one round
train on every core of this machine, or of a Ray cluster (``address``). A fit is a pure function of
its job (weights, sub-model, settings, seed) and the client's data, so both backends give the same
updates bit for bit, and the same ``results.json``.

Ray is an optional extra (``pip install 'clipfl[ray]'``); the local backend needs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from clipfl.engine.client_round import FitJob
from clipfl.errors import ConfigError
from clipfl.trainer import LocalTrainer, TrainOutput

__all__ = ["BACKENDS", "FitBackend", "LocalBackend", "PendingFit", "RayBackend", "fit_backend"]

BACKENDS = ("local", "ray")


class PendingFit(Protocol):
    def result(self) -> TrainOutput:
        """The trained update (waits for it when it is still training)."""
        ...


class FitBackend(Protocol):
    name: str

    def submit(self, trainer: LocalTrainer, job: FitJob) -> PendingFit:
        """Start training ``job`` with ``trainer``'s data and model."""
        ...

    def close(self) -> None:
        """Release what the backend holds (for Ray: the data it put in the object store)."""
        ...


class _Done:
    __slots__ = ("_out",)

    def __init__(self, out: TrainOutput) -> None:
        self._out = out

    def result(self) -> TrainOutput:
        return self._out


class LocalBackend:
    """Every fit trains here, when it is submitted, on this process's torch threads."""

    name = "local"

    def submit(self, trainer: LocalTrainer, job: FitJob) -> PendingFit:
        return _Done(trainer.train(job.weights, job.sub, job.train, job.seed, job.coverage_size))

    def close(self) -> None:
        pass


def _train_task(data: Any, model_name: str, device: str, job: FitJob) -> TrainOutput:  # runs in a Ray worker
    torch.set_num_threads(1)  # one core per fit, as the local backend and each live client
    trainer = LocalTrainer(data, model_name, device)
    return trainer.train(job.weights, job.sub, job.train, job.seed, job.coverage_size)


class _RayFit:
    __slots__ = ("_get", "_ref")

    def __init__(self, ref: Any, get: Callable[[Any], TrainOutput]) -> None:
        self._ref, self._get = ref, get

    def result(self) -> TrainOutput:
        return self._get(self._ref)


class RayBackend:
    """Each fit is a Ray task on one CPU (or one GPU with ``device = "cuda"``).

    ``address``: a running Ray cluster (``ray start --head``), or None for a local Ray with
    ``num_cpus`` workers (None: every core). A Ray already initialized by the caller is used as is.
    Each client's data is put in Ray's object store once, at its first fit.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "backend ray needs Ray: pip install 'clipfl[ray]' (or use the local backend)"
            ) from None
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(
                address=address,
                num_cpus=num_cpus if address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        self._task = ray.remote(num_cpus=1)(_train_task)
        self._data: dict[int, Any] = {}

    def submit(self, trainer: LocalTrainer, job: FitJob) -> PendingFit:
        data = self._data.get(id(trainer.data))
        if data is None:
            data = self._data[id(trainer.data)] = self._ray.put(trainer.data)
        options = {"num_gpus": 1} if trainer.device == "cuda" else {}
        ref = self._task.options(**options).remote(data, trainer.model_name, trainer.device, job)
        return _RayFit(ref, self._ray.get)

    def close(self) -> None:
        self._data.clear()
        if self._owns_ray:
            self._ray.shutdown()


def fit_backend(name: str, *, address: str | None = None, num_cpus: int | None = None) -> FitBackend:
    """The backend called ``name`` (``BACKENDS``); a ConfigError for any other name."""
    if name == "local":
        if address is not None:
            raise ConfigError("a Ray address needs backend ray")
        return LocalBackend()
    if name == "ray":
        return RayBackend(address=address, num_cpus=num_cpus)
    raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
