"""The federation a scale run describes, in clipfl's public terms (``RunConfig``, ``client_data``).

The server gets it as command-line flags and the workers as ``RunConfig`` keyword arguments, from
the one mapping ``run_config_kwargs``, so that both sides agree by construction.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmarks.scale.options import ScaleOptions

__all__ = ["run_config_kwargs", "samples_per_client", "secagg_parameters"]


def run_config_kwargs(opts: ScaleOptions) -> dict[str, Any]:
    """The federation, as ``RunConfig`` keyword arguments shared by the server flags and the workers."""
    return {
        "dataset": "digits",
        "model": opts.model,
        "partition": "iid",
        "clients": opts.clients,
        "rounds": opts.rounds,
        "seed": opts.seed,
        "local_epochs": 1,
        "secagg": opts.secagg,
        # the scale test measures the protocol at many clients; identities (a roster per client) are
        # measured in benchmarks.secagg, so this run trusts the server not to substitute keys
        "secagg_trust_server": opts.secagg != "off",
        "registration_timeout": opts.registration_timeout,
        "round_timeout": opts.round_timeout,
        "unmask_timeout": min(opts.round_timeout, 120.0),
    }


def samples_per_client(opts: ScaleOptions) -> int | None:
    """The ``min_samples`` the clients' iid partition must use, or None when the default holds.

    The clients partition with ``RunConfig``'s default floor of 10 samples per client, and the
    embedded digits data has 1,438 training samples: 143 clients at most. Beyond that each worker
    lowers the floor to what an even split gives (7 for 200 clients); the report says so.

    The size of the training split is read through the public API: the one client of a one-client
    iid federation holds all of it.
    """
    from clipfl import ConfigError, RunConfig, client_data

    run = RunConfig(**run_config_kwargs(opts))
    whole = client_data(dataclasses.replace(run, clients=1, secagg="off"), 0).num_samples
    per = whole // run.clients
    if per >= run.min_samples:
        return None
    if per < 1:
        raise ConfigError(f"{run.dataset} has too few training samples for {run.clients} clients")
    return per


def secagg_parameters(opts: ScaleOptions) -> dict[str, Any]:
    """SecAgg's resolved neighbours ``k`` and threshold ``t`` for this many clients (none when off)."""
    if opts.secagg == "off":
        return {}
    from clipfl import RunConfig

    config = RunConfig(**run_config_kwargs(opts)).secagg_config()
    assert config is not None
    resolved = config.resolved(opts.clients)
    return {"neighbors": resolved.neighbors, "threshold": resolved.threshold}
