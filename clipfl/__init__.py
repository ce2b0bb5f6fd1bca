"""clipfl: secure federated learning that stays fast when some clients are slow.

The public surface, for programs and benchmarks that drive federations (everything else is
internal and may change)::

    from clipfl import RunConfig, ClientConfig, Server, Client, federation_data

Names are imported on first use (PEP 562), so that ``import clipfl.wire`` in a small process does not
pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Client",
    "ClientConfig",
    "ClientData",
    "ClipflError",
    "ConfigError",
    "RemoteProtocolError",
    "RunConfig",
    "RunSettings",
    "SecAggConfig",
    "Server",
    "client_data",
    "federation_data",
    "run_server",
    "transport_factory",
]

_HOMES = {
    "Client": "clipfl.client",
    "ClientConfig": "clipfl.config",
    "ClientData": "clipfl.trainer",
    "ClipflError": "clipfl.errors",
    "ConfigError": "clipfl.errors",
    "RemoteProtocolError": "clipfl.errors",
    "RunConfig": "clipfl.config",
    "RunSettings": "clipfl.settings",
    "SecAggConfig": "clipfl.secagg",
    "Server": "clipfl.server",
    "client_data": "clipfl.trainer",
    "federation_data": "clipfl.trainer",
    "run_server": "clipfl.server",
    "transport_factory": "clipfl.client",
}

if TYPE_CHECKING:
    from clipfl.client import Client, transport_factory
    from clipfl.config import ClientConfig, RunConfig
    from clipfl.errors import ClipflError, ConfigError, RemoteProtocolError
    from clipfl.secagg import SecAggConfig
    from clipfl.server import Server, run_server
    from clipfl.settings import RunSettings
    from clipfl.trainer import ClientData, client_data, federation_data


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'clipfl' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
