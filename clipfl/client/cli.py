"""``python -m clipfl.client``: one client process, its flags, its transport and its bandwidth caps."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

import torch

from clipfl import logs
from clipfl.client.session import Client
from clipfl.config import ClientConfig, RunConfig, add_flags, config_from_flags, load_toml, run_config
from clipfl.engine.secure_upload import Identity
from clipfl.errors import ClipflError, ConfigError
from clipfl.keys import load_identity, load_roster
from clipfl.rundir import RunDir
from clipfl.trainer import client_data
from clipfl.wire import Limits
from transports.base import ClientTransport
from transports.errors import ConnectionLost, TransportConfigError

__all__ = ["build_parser", "main", "transport_factory"]


def transport_factory(config: ClientConfig, curve: Any = None) -> Callable[[], ClientTransport]:
    """ZeroMQ transports for this client, with its bandwidth caps applied as ``--shape`` says.

    ``tc`` shapes this process's own network interface once (root, inside a clipfl namespace);
    ``app`` paces the transport with token buckets of the same semantics.
    """
    from clipfl.shaping import LinkSpec
    from transports.zmq import ZmqClientTransport

    link = LinkSpec.parse(config.upload_rate, config.download_rate)
    app = config.shape == "app"
    if not app and (link.upload_bps or link.download_bps):
        from urllib.parse import urlsplit

        from clipfl.shaping import interface_towards, require_root_netns, shape_own_interface

        require_root_netns()
        host = urlsplit(config.server).hostname or ""
        shape_own_interface(interface_towards(host), link.upload_bps, link.download_bps)

    def factory() -> ClientTransport:
        return ZmqClientTransport(
            heartbeat_timeout=config.heartbeat_timeout,
            upload_bps=link.upload_bps if app else None,
            download_bps=link.download_bps if app else None,
            curve=curve,
            limits=Limits().for_transport(),
        )

    return factory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipfl.client",
        description="Run one clipfl client: it loads its share of the data, connects to the server "
        "and trains until the server ends the run.",
    )
    parser.add_argument("--config", help="TOML file with the same keys as the flags (flags win)")
    parser.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="CurveZMQ: this client's secret key file (from python -m clipfl.keys client DIR NAME)",
    )
    parser.add_argument("--curve-server-key", metavar="FILE", help="CurveZMQ: the server's public key file")
    logs.add_flags(parser)
    add_flags(parser, ClientConfig, title="client")
    add_flags(parser, RunConfig, title="federation (must match the server's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args)
    try:
        base = load_toml(args.config) if args.config else {}
        run = run_config(args, base)
        config = config_from_flags(ClientConfig, args, base)
        torch.set_num_threads(config.threads)
        run_dir = RunDir(config.run_dir) if config.run_dir else None
        curve = None
        if args.curve_secret or args.curve_server_key:
            if not (args.curve_secret and args.curve_server_key):
                raise ConfigError("CurveZMQ needs both --curve-secret and --curve-server-key")
            from clipfl.keys import load_curve_client

            curve = load_curve_client(args.curve_secret, args.curve_server_key)
        factory = transport_factory(config, curve)

        identity = None
        if run.roster is not None and run.operator_key is not None and config.identity is not None:
            identity = Identity(load_roster(run.roster, run.operator_key), load_identity(config.identity))
        data = client_data(run, config.client_id)
        client = Client(run, config, data, factory, run_dir=run_dir, identity=identity)
        asyncio.run(client.run())
    except (ClipflError, TransportConfigError) as exc:
        print(f"clipfl.client: error: {exc}", file=sys.stderr)
        return 2
    except ConnectionLost as exc:
        print(f"clipfl.client: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0
