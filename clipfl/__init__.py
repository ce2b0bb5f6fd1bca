"""clipfl: secure federated learning that stays fast when some clients are slow.

The public surface, for programs and benchmarks that drive federations (everything else is
internal and may change)::

    from clipfl import RunConfig, ClientConfig, Server, Client, federation_data
    from clipfl import simulate, straggler_fleet, load_cost_model      # the same run in virtual time

Names are imported on first use (PEP 562), so that ``import clipfl.wire`` in a small process does not
pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipfl.lazy import lazy_exports

__all__ = [
    "BandwidthClass",
    "Client",
    "ClientConfig",
    "ClientData",
    "ClipflError",
    "ConfigError",
    "DeviceProfile",
    "RemoteProtocolError",
    "RunConfig",
    "RunSettings",
    "SecAggConfig",
    "Server",
    "client_data",
    "drawn_fleet",
    "federation_config",
    "federation_data",
    "load_cost_model",
    "run_server",
    "simulate",
    "straggler_fleet",
    "transport_factory",
]

_HOMES = {
    "BandwidthClass": "clipfl.sim.devices",
    "Client": "clipfl.client",
    "ClientConfig": "clipfl.config",
    "ClientData": "clipfl.trainer",
    "ClipflError": "clipfl.errors",
    "ConfigError": "clipfl.errors",
    "DeviceProfile": "clipfl.sim.devices",
    "RemoteProtocolError": "clipfl.errors",
    "RunConfig": "clipfl.config",
    "RunSettings": "clipfl.settings",
    "SecAggConfig": "clipfl.secagg",
    "Server": "clipfl.server",
    "client_data": "clipfl.trainer",
    "drawn_fleet": "clipfl.sim.devices",
    "federation_config": "clipfl.sim.run",
    "federation_data": "clipfl.trainer",
    "load_cost_model": "clipfl.sim.costs",
    "run_server": "clipfl.server",
    "simulate": "clipfl.sim.run",
    "straggler_fleet": "clipfl.sim.devices",
    "transport_factory": "clipfl.client",
}

if TYPE_CHECKING:
    from clipfl.client import Client, transport_factory
    from clipfl.config import ClientConfig, RunConfig
    from clipfl.errors import ClipflError, ConfigError, RemoteProtocolError
    from clipfl.secagg import SecAggConfig
    from clipfl.server import Server, run_server
    from clipfl.settings import RunSettings
    from clipfl.sim.costs import load_cost_model
    from clipfl.sim.devices import BandwidthClass, DeviceProfile, drawn_fleet, straggler_fleet
    from clipfl.sim.run import federation_config, simulate
    from clipfl.trainer import ClientData, client_data, federation_data


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
