"""Make CurveZMQ key pairs for a deployment: ``python -m clipfl.keys``.

    python -m clipfl.keys server DIR          DIR/server.key (public) and DIR/server.key_secret
    python -m clipfl.keys client DIR NAME     DIR/NAME.key (public) and DIR/NAME.key_secret

The files are ZeroMQ certificates (``zmq.auth.create_certificates``); secret files are readable by
their owner only. Give every client ``server.key``; copy each client's ``NAME.key`` (never its
``.key_secret``) into the directory the server reads as its allow-list. An existing key is never
replaced unless ``--force`` is given, since replacing a server key locks every client out.

The drivers load those files with :func:`load_curve_server` and :func:`load_curve_client`: the
transports raise their own ``TransportConfigError`` for a bad key file, and these turn it into
clipfl's ``ConfigError``, so that ``python -m clipfl.server`` and ``python -m clipfl.client`` report
it in one line and exit with status 2 like every other bad setting.
"""

from __future__ import annotations

import argparse
import os
import sys

from clipfl.errors import ClipflError, ConfigError
from transports.curve import CurveClient, CurveServer, create_key_pair
from transports.errors import TransportConfigError

__all__ = ["build_parser", "load_curve_client", "load_curve_server", "main"]

_MADE_BY = "make key pairs with python -m clipfl.keys"


def load_curve_server(
    secret_file: str | os.PathLike[str], allowed_dir: str | os.PathLike[str]
) -> CurveServer:
    """The server's CurveZMQ settings from its ``.key_secret`` file and the allow-list directory."""
    try:
        return CurveServer.from_files(secret_file, allowed_dir)
    except TransportConfigError as exc:
        raise ConfigError(f"{exc} ({_MADE_BY})") from exc


def load_curve_client(
    secret_file: str | os.PathLike[str], server_public_file: str | os.PathLike[str]
) -> CurveClient:
    """A client's CurveZMQ settings from its ``.key_secret`` file and the server's public key file."""
    try:
        return CurveClient.from_files(secret_file, server_public_file)
    except TransportConfigError as exc:
        raise ConfigError(f"{exc} ({_MADE_BY})") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipfl.keys",
        description="Generate CurveZMQ key pairs (ZeroMQ certificates) for a clipfl server and its clients.",
    )
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server", help="the server's key pair: DIR/server.key and DIR/server.key_secret")
    server.add_argument("directory", metavar="DIR")
    client = sub.add_parser("client", help="one client's key pair: DIR/NAME.key and DIR/NAME.key_secret")
    client.add_argument("directory", metavar="DIR")
    client.add_argument("name", metavar="NAME", help="a name for the client, e.g. its id or host name")
    for p in (server, client):
        p.add_argument("--force", action="store_true", help="replace an existing key pair of that name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = "server" if args.role == "server" else args.name
    try:
        public, secret = create_key_pair(args.directory, name, overwrite=args.force)
    except (ClipflError, TransportConfigError) as exc:
        print(f"clipfl.keys: error: {exc}", file=sys.stderr)
        return 2
    print(f"public key: {public}")
    print(f"secret key: {secret} (keep it private)")
    if args.role == "server":
        print(f"give {public} to every client; the server uses {secret}")
    else:
        print(f"copy {public} into the server's allow-list directory; this client uses {secret}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
