"""Virtual time: a discrete-event simulation of a federation, decided by the live round engine.

    from clipfl.sim import simulate, straggler_fleet, load_cost_model

Names are imported on first use (PEP 562): ``clipfl.launch`` reads the straggler choice from
``clipfl.sim.devices`` without paying for torch.
"""

from __future__ import annotations

from clipfl.lazy import lazy_exports

__all__ = [
    "BACKENDS",
    "SECAGG_COSTS",
    "BandwidthClass",
    "CostModel",
    "DeviceProfile",
    "FitBackend",
    "SimulationError",
    "SimulationStopped",
    "choose_stragglers",
    "config_record",
    "devices_record",
    "drawn_fleet",
    "federation_config",
    "fit_backend",
    "load_cost_model",
    "protocol_shares",
    "simulate",
    "straggler_fleet",
]

_HOMES = {
    "BACKENDS": "clipfl.sim.backends",
    "BandwidthClass": "clipfl.sim.devices",
    "CostModel": "clipfl.sim.costs",
    "DeviceProfile": "clipfl.sim.devices",
    "FitBackend": "clipfl.sim.backends",
    "SECAGG_COSTS": "clipfl.sim.federation",
    "SimulationError": "clipfl.sim.federation",
    "SimulationStopped": "clipfl.sim.federation",
    "choose_stragglers": "clipfl.sim.devices",
    "config_record": "clipfl.sim.run",
    "devices_record": "clipfl.sim.run",
    "drawn_fleet": "clipfl.sim.devices",
    "federation_config": "clipfl.sim.run",
    "fit_backend": "clipfl.sim.backends",
    "load_cost_model": "clipfl.sim.costs",
    "protocol_shares": "clipfl.sim.run",
    "simulate": "clipfl.sim.run",
    "straggler_fleet": "clipfl.sim.devices",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
