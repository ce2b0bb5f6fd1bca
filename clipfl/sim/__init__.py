"""Virtual time: a discrete-event simulation of a federation, decided by the live round engine.

    from clipfl.sim import simulate, straggler_fleet, load_cost_model

Names are imported on first use (PEP 562): ``clipfl.launch`` reads the straggler choice from
``clipfl.sim.devices`` without paying for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BandwidthClass",
    "CostModel",
    "DeviceProfile",
    "SimulationError",
    "choose_stragglers",
    "drawn_fleet",
    "federation_config",
    "load_cost_model",
    "protocol_shares",
    "simulate",
    "straggler_fleet",
]

_HOMES = {
    "BandwidthClass": "clipfl.sim.devices",
    "CostModel": "clipfl.sim.costs",
    "DeviceProfile": "clipfl.sim.devices",
    "SimulationError": "clipfl.sim.federation",
    "choose_stragglers": "clipfl.sim.devices",
    "drawn_fleet": "clipfl.sim.devices",
    "federation_config": "clipfl.sim.run",
    "load_cost_model": "clipfl.sim.costs",
    "protocol_shares": "clipfl.sim.run",
    "simulate": "clipfl.sim.run",
    "straggler_fleet": "clipfl.sim.devices",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'clipfl.sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
