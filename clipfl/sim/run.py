"""``simulate``: one federation in virtual time, writing the run directory a live run writes.

    from clipfl import RunConfig
    from clipfl.sim import simulate, straggler_fleet, load_cost_model

    costs = load_cost_model()
    config = RunConfig(clients=6, rounds=5, mitigation="clip", secagg="secagg")
    fleet = straggler_fleet(6, base_speed=costs.train_speed(config.model_name), slowdown=6,
                            straggler_ids=[2], straggler_slowdown=3)
    summary = simulate(config, fleet, run_dir="runs/sim-1", cost_model=costs)

The run directory holds ``config.json``, ``metrics.jsonl``, ``client-<id>.jsonl`` and ``summary.json``
as the live server and clients write them (so ``benchmarks.report`` reads either), and
``simulation.json``: the devices, the server link and the cost model the times came from, and where
the clients have local test splits (natural partitions), ``local_accuracy.json``: the final model on
each client's own test data. Every time in them is virtual; none depends on this machine's load.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from clipfl.config import RunConfig, run_config
from clipfl.data import load_dataset
from clipfl.errors import ConfigError
from clipfl.rundir import RunDir
from clipfl.sim.backends import FitBackend, fit_backend
from clipfl.sim.costs import CostModel, load_cost_model
from clipfl.sim.devices import DeviceProfile
from clipfl.sim.federation import Federation, secagg_primitives
from clipfl.trainer import ClientData, check_device, federation_data

__all__ = ["federation_config", "protocol_shares", "simulate"]


def simulate(
    config: RunConfig,
    devices: Mapping[int, DeviceProfile],
    *,
    run_dir: str | Path | None = None,
    cost_model: CostModel | str | Path | None = None,
    server_bps: float | None = None,
    shares: Mapping[int, ClientData] | None = None,
    train: bool = True,
    backend: str | FitBackend = "local",
    device: str = "cpu",
    secagg_cost: str = "real",
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run ``config`` on ``devices`` (one profile per client id) in virtual time; return the summary.

    ``cost_model``: a ``CostModel``, the path of one (``python -m clipfl.sim.calibrate``), or None for
    the one shipped with clipfl. ``server_bps``: the server's link, shared by every client (None: not
    capped). ``shares``: the clients' data, when the caller already loaded it (``federation_data``).
    ``train=False`` is a protocol-only run: no training (every update is zero, its time still charged
    from its MACs), each client holding only a sample count (``protocol_shares``), for federations of
    thousands of clients; secure aggregation still runs for real.
    ``backend``: where fits train, ``"local"`` (this process) or ``"ray"`` (Ray tasks, every core),
    or a ``FitBackend`` the caller holds (and closes); both give the same results. ``device``: where
    torch trains, ``"cpu"`` or ``"cuda"``. ``secagg_cost``: ``"real"`` runs secure aggregation's
    cryptography, ``"model"`` only charges it (``SECAGG_COSTS``): the same results, for 10,000 clients.
    Torch trains on one thread, as each live client does, so the numbers are the live clients' too;
    the server's test uses torch's default threads, as the live server does. ``stop``: asked before
    each round (from another thread, say); when true, ``SimulationStopped`` and an unfinished run.
    """
    costs = cost_model if isinstance(cost_model, CostModel) else load_cost_model(cost_model)
    rd = None
    if run_dir is not None:
        rd = RunDir(run_dir)
        if rd.metrics_path.exists():
            raise ConfigError(f"run directory {str(run_dir)!r} already holds a run; give a new one")
    check_device(device)
    secagg_primitives(secagg_cost)
    fits = fit_backend(backend) if isinstance(backend, str) else backend
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        federation = Federation(
            config,
            devices,
            shares if shares is not None else (federation_data(config) if train else protocol_shares(config)),
            costs=costs,
            server_bps=server_bps,
            run_dir=rd,
            eval_threads=threads,
            train=train,
            backend=fits,
            device=device,
            secagg_cost=secagg_cost,
        )
        if rd is not None:
            rd.write_json("config.json", config_record(config))
        summary = federation.run(stop)
    finally:
        torch.set_num_threads(threads)
        if fits is not backend:
            fits.close()
    summary = {**summary, "engine": "sim", "cost_model": costs.source, "trained": train}
    if rd is not None:
        rd.write_json("summary.json", summary)
        rd.write_json(
            "simulation.json",
            {
                "devices": devices_record(devices),
                "server_bps": server_bps,
                "secagg_cost": secagg_cost,
                "cost_model": costs.to_json(),
                "events": federation.queue.scheduled,
            },
        )
        local = federation.local_accuracy()
        if local:
            rd.write_json("local_accuracy.json", local)
    return summary


def config_record(config: RunConfig) -> dict[str, Any]:
    """What a simulated run's ``config.json`` holds: the configuration and the model it resolves to."""
    return {**dataclasses.asdict(config), "model": config.model_name}


def devices_record(devices: Mapping[int, DeviceProfile]) -> dict[str, Any]:
    """The ``devices`` of a simulated run's ``simulation.json``: each client's profile by its id."""
    return {str(i): dataclasses.asdict(d) for i, d in sorted(devices.items())}


def protocol_shares(config: RunConfig, samples: int | None = None) -> dict[int, ClientData]:
    """Clients that hold a sample count and no data (protocol-only runs): ``samples`` each, by default
    an equal share of the training split (at least 1), so weights and fit costs stay realistic."""
    dataset = load_dataset(config.dataset, config.data_dir)
    each = samples if samples is not None else max(1, len(dataset.train.y) // config.clients)
    if config.max_client_samples is not None:
        each = min(each, config.max_client_samples)
    x = torch.empty((0, *dataset.input_shape))
    y = torch.zeros(each, dtype=torch.int64)
    return {i: ClientData(dataset, x, y) for i in range(config.clients)}


def federation_config(values: Mapping[str, Any]) -> RunConfig:
    """A ``RunConfig`` from launcher-style keys: the preset's settings, then the keys (``clipfl.launch``'s
    order of precedence), so that a scenario means the same federation to both engines."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]!r} is not a federation setting; allowed: {', '.join(sorted(known))}")
    return run_config(argparse.Namespace(), dict(values))
