"""The harness's ``--engine sim``: a scenario's run in virtual time, through clipfl's public surface.

A scenario means the same federation to both engines: the same launcher keys become the same
``RunConfig`` (``clipfl.federation_config``, the preset first as in ``clipfl.launch``), the same
straggler choice (``choose_stragglers``, the launcher's), and the emulation's devices become device
profiles one for one (``clipfl.straggler_fleet``): this machine's measured training speed divided by
each client's slowdown, and the tc rate caps as link rates. A scenario's ``[sim]`` table adds what only
the simulator models: the server's shared link, latency, and fleets drawn from distributions (then the
ideal is every device at the median speed on the base links). What the simulated run writes is what
the live one writes (``metrics.jsonl``, ``client-<id>.jsonl``, ``summary.json``, ``config.json``), so
``benchmarks.report`` makes its figures unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import IDEAL
from benchmarks.scenario import Scenario
from clipfl import (
    BandwidthClass,
    DeviceProfile,
    RunConfig,
    drawn_fleet,
    federation_config,
    load_cost_model,
    simulate,
    straggler_fleet,
)
from clipfl.rundir import as_written
from clipfl.shaping import parse_rate
from clipfl.sim import CostModel, FitBackend, choose_stragglers, config_record, devices_record

__all__ = ["SIM_SHAPING", "kept_run_differs", "run_config_of", "scenario_fleet", "simulate_run"]

SIM_SHAPING = "virtual: links simulated from encoded message sizes (FIFO per link, no contention)"
"""What ``results.json`` says for ``shaping`` under ``--engine sim``: no link was shaped."""

_LAUNCHER_ONLY = frozenset({"heartbeat_timeout"})  # a live transport's setting: no meaning in virtual time


def run_config_of(scenario: Scenario, strategy: str, seed: int) -> RunConfig:
    """The federation the launcher would run for this strategy and seed."""
    values: dict[str, Any] = {k: v for k, v in scenario.federation if k not in _LAUNCHER_ONLY}
    values.update(
        seed=seed,
        target_accuracy=scenario.target_accuracy,
        mitigation="none" if strategy == IDEAL else strategy,
        secagg="off" if strategy == "fluid" else scenario.secagg,
    )
    return federation_config(values)


def _bps(rate: str | None) -> float | None:
    return None if rate is None else float(parse_rate(rate))


def scenario_fleet(
    scenario: Scenario, strategy: str, config: RunConfig, costs: CostModel
) -> dict[int, DeviceProfile]:
    """The emulated fleet as device profiles; the ideal has no stragglers, as in the live harness."""
    d, s, sim = scenario.devices, scenario.stragglers, scenario.sim
    base = costs.train_speed(config.model_name)
    if sim.fleet == "drawn":
        classes = [
            BandwidthClass(
                upload_bps=_bps(b.upload_rate),
                download_bps=_bps(b.download_rate),
                latency_s=b.latency,
                weight=b.weight,
            )
            for b in sim.bandwidth
        ] or [BandwidthClass(upload_bps=_bps(d.upload_rate), download_bps=_bps(d.download_rate))]
        if strategy == IDEAL:
            classes = [BandwidthClass(upload_bps=_bps(d.upload_rate), download_bps=_bps(d.download_rate))]
        return drawn_fleet(
            config.clients,
            seed=config.seed,
            median_speed=base / d.slowdown,
            speed_sigma=0.0 if strategy == IDEAL else sim.speed_sigma,
            bandwidth=[dataclasses.replace(c, latency_s=c.latency_s or sim.latency) for c in classes],
        )
    stragglers = strategy != IDEAL and s.count > 0
    ids: frozenset[int] | tuple[int, ...] = ()
    if stragglers:
        ids = s.ids if s.ids is not None else choose_stragglers(config.clients, s.count, config.seed)
    return straggler_fleet(
        config.clients,
        base_speed=base,
        slowdown=d.slowdown,
        straggler_ids=ids,
        straggler_slowdown=s.slowdown if stragglers else 1.0,
        network_ids=s.network_ids if stragglers else None,
        upload_bps=_bps(d.upload_rate),
        download_bps=_bps(d.download_rate),
        straggler_upload_bps=_bps(s.upload_rate) if stragglers else None,
        straggler_download_bps=_bps(s.download_rate) if stragglers else None,
        latency_s=sim.latency,
    )


def simulate_run(
    scenario: Scenario,
    strategy: str,
    seed: int,
    run_dir: Path,
    costs: CostModel | None = None,
    *,
    backend: str | FitBackend = "local",
    device: str = "cpu",
    secagg_cost: str = "real",
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Simulate one run of the benchmark into ``run_dir``; return its summary. ``backend`` and
    ``device`` (where the fits train) and ``secagg_cost`` (whether the cryptography runs or is only
    charged): see ``clipfl.simulate``; they change the wall time, not the results. ``stop``: asked
    before each round, ends the run unfinished (``SimulationStopped``)."""
    costs = costs or load_cost_model()
    config = run_config_of(scenario, strategy, seed)
    return simulate(
        config,
        scenario_fleet(scenario, strategy, config, costs),
        run_dir=run_dir,
        cost_model=costs,
        backend=backend,
        device=device,
        secagg_cost=secagg_cost,
        stop=stop,
    )


def _first_difference(made: Any, asked: Any, path: str = "") -> str | None:
    if isinstance(made, dict) and isinstance(asked, dict):
        for key in sorted(set(made) | set(asked)):
            found = _first_difference(made.get(key), asked.get(key), f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    return None if made == asked else f"{path} was {made!r}, this benchmark's is {asked!r}"


def kept_run_differs(
    scenario: Scenario, strategy: str, seed: int, run_dir: Path, costs: CostModel
) -> str | None:
    """Why a finished simulated run in ``run_dir`` is not the one this scenario would make now (its
    configuration, its devices or the cost model differ), or ``None``: what a resumed benchmark checks
    before it keeps a run. The data directory and the secure-aggregation cost mode (``real`` and
    ``model`` give the same results) may differ."""
    try:
        made_config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        made_sim = json.loads((run_dir / "simulation.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"not a simulated run ({exc.__class__.__name__}: {exc})"
    config = run_config_of(scenario, strategy, seed)
    asked_config = as_written(config_record(config))
    made_config.pop("data_dir", None)
    asked_config.pop("data_dir", None)
    devices = scenario_fleet(scenario, strategy, config, costs)
    asked_sim = as_written({"devices": devices_record(devices), "cost_model": costs.to_json()})
    made = {"config": made_config, **{k: made_sim.get(k) for k in asked_sim}}
    return _first_difference(made, {"config": asked_config, **asked_sim})
