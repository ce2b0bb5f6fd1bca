"""Make keys for a deployment: CurveZMQ key pairs and the signed identity roster (``python -m clipfl.keys``).

    python -m clipfl.keys server DIR          DIR/server.key (public) and DIR/server.key_secret
    python -m clipfl.keys client DIR NAME     DIR/NAME.key (public) and DIR/NAME.key_secret
    python -m clipfl.keys roster DIR --clients 0-19 [--curve-dir CERTS]
                                              DIR/operator.pub, DIR/operator.secret, DIR/roster.msgpack,
                                              DIR/identity-ID.secret for each client id

The CurveZMQ files are ZeroMQ certificates (``zmq.auth.create_certificates``); secret files are readable
by their owner only. Give every client ``server.key``; copy each client's ``NAME.key`` (never its
``.key_secret``) into the directory the server reads as its allow-list. An existing key is never
replaced unless ``--force`` is given, since replacing a server key locks every client out.

The drivers load the CurveZMQ files with :func:`load_curve_server` and :func:`load_curve_client`: the
transports raise their own ``TransportConfigError`` for a bad key file, and these turn it into
clipfl's ``ConfigError``, so that ``python -m clipfl.server`` and ``python -m clipfl.client`` report
it in one line and exit with status 2 like every other bad setting.

The roster is what secure aggregation needs against a malicious server (``clipfl.secagg.roster``): an
operator key, which the server must never hold, signs the list binding each client id to an Ed25519
identity key and, with ``--curve-dir``, to the CurveZMQ key in ``CERTS/ID.key``. Give each client
``operator.pub``, ``roster.msgpack`` and its own ``identity-ID.secret``; give the server ``operator.pub``
and ``roster.msgpack``. Keep ``operator.secret`` off the server (the launcher, which runs the whole
federation on one machine, keeps it in the run's key directory).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from clipfl.errors import ClipflError, ConfigError
from clipfl.secagg.roster import Roster, RosterEntry
from transports.curve import CurveClient, CurveServer, create_key_pair, load_public_key
from transports.errors import TransportConfigError

__all__ = [
    "Provisioned",
    "build_parser",
    "load_curve_client",
    "load_curve_server",
    "load_identity",
    "load_operator_key",
    "load_roster",
    "main",
    "parse_ids",
    "provision",
]

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


OPERATOR_PUBLIC = "operator.pub"
OPERATOR_SECRET = "operator.secret"
ROSTER = "roster.msgpack"


@dataclass(frozen=True, slots=True, kw_only=True)
class Provisioned:
    """The files ``provision`` wrote."""

    directory: Path
    operator_public: Path
    operator_secret: Path
    roster: Path
    identities: Mapping[int, Path]

    def identity(self, client_id: int) -> Path:
        return self.identities[client_id]


def _write_secret(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data + "\n")
    os.chmod(path, 0o600)


def _read_hex(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        data = bytes.fromhex(Path(path).read_text().strip())
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not a {what} (32 bytes in hex, made by python -m clipfl.keys)") from exc
    if len(data) != 32:
        raise ConfigError(f"{path} is not a {what}: {len(data)} bytes, expected 32")
    return data


def load_identity(path: str | os.PathLike[str]) -> nacl.signing.SigningKey:
    """A client's Ed25519 identity signing key from its ``identity-ID.secret`` file."""
    return nacl.signing.SigningKey(_read_hex(path, "identity secret key"))


def load_operator_key(path: str | os.PathLike[str]) -> bytes:
    """The operator's Ed25519 verify key from ``operator.pub``."""
    return _read_hex(path, "operator public key")


def load_roster(roster: str | os.PathLike[str], operator_public: str | os.PathLike[str]) -> Roster:
    """The roster at ``roster``, verified against the operator key in ``operator_public``."""
    return Roster.load(roster, load_operator_key(operator_public))


def provision(
    directory: str | os.PathLike[str],
    client_ids: Iterable[int],
    curve_keys: Mapping[int, bytes] | None = None,
    *,
    federation: str = "clipfl",
    overwrite: bool = False,
) -> Provisioned:
    """Write an operator key, one identity key per client and the signed roster into ``directory``.

    ``curve_keys`` binds client ids to their CurveZMQ public keys (Z85, as ``load_public_key`` reads
    them), so the server can map each admitted key to exactly one id. The launcher calls this once per
    run, so ``make demo`` and the harness need no manual step.
    """
    folder = Path(directory)
    ids = sorted(set(client_ids))
    if not ids:
        raise ConfigError("a roster needs at least one client id")
    roster_path = folder / ROSTER
    if roster_path.exists() and not overwrite:
        raise ConfigError(f"{roster_path} already exists; refusing to replace a roster (use --force)")
    folder.mkdir(parents=True, exist_ok=True)
    operator = nacl.signing.SigningKey.generate()
    identities = {cid: nacl.signing.SigningKey.generate() for cid in ids}
    entries = [
        RosterEntry(
            client_id=cid,
            identity_key=bytes(identities[cid].verify_key),
            curve_key=(curve_keys or {}).get(cid),
        )
        for cid in ids
    ]
    roster = Roster.sign(entries, operator, federation=federation)
    secret_paths = {}
    for cid in ids:
        secret_paths[cid] = folder / f"identity-{cid}.secret"
        _write_secret(secret_paths[cid], bytes(identities[cid]).hex())
    _write_secret(folder / OPERATOR_SECRET, bytes(operator).hex())
    (folder / OPERATOR_PUBLIC).write_text(bytes(operator.verify_key).hex() + "\n")
    roster.save(roster_path)
    return Provisioned(
        directory=folder,
        operator_public=folder / OPERATOR_PUBLIC,
        operator_secret=folder / OPERATOR_SECRET,
        roster=roster_path,
        identities=secret_paths,
    )


def parse_ids(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``."""
    ids: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            ids.extend(range(int(low), int(high or low) + 1))
    except ValueError as exc:
        raise ConfigError(f"client ids {text!r}: write them like 0-19 or 0,2,5") from exc
    return ids


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipfl.keys",
        description="Generate CurveZMQ key pairs and the signed identity roster of a clipfl federation.",
    )
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server", help="the server's key pair: DIR/server.key and DIR/server.key_secret")
    server.add_argument("directory", metavar="DIR")
    client = sub.add_parser("client", help="one client's key pair: DIR/NAME.key and DIR/NAME.key_secret")
    client.add_argument("directory", metavar="DIR")
    client.add_argument("name", metavar="NAME", help="a name for the client, e.g. its id or host name")
    roster = sub.add_parser("roster", help="operator key, client identity keys and the signed roster")
    roster.add_argument("directory", metavar="DIR")
    roster.add_argument("--clients", required=True, help="client ids, e.g. 0-19 or 0,2,5")
    roster.add_argument(
        "--curve-dir",
        default=None,
        help="bind each id to the CurveZMQ key in CURVE_DIR/ID.key (one id per key)",
    )
    roster.add_argument(
        "--federation", default="clipfl", help="a name for the federation, signed in the roster"
    )
    for p in (server, client, roster):
        p.add_argument("--force", action="store_true", help="replace existing keys of that name")
    return parser


def _roster(args: argparse.Namespace) -> int:
    ids = parse_ids(args.clients)
    curve_keys = None
    if args.curve_dir is not None:
        curve_keys = {cid: load_public_key(Path(args.curve_dir) / f"{cid}.key") for cid in ids}
    made = provision(args.directory, ids, curve_keys, federation=args.federation, overwrite=args.force)
    print(f"roster: {made.roster} ({len(ids)} clients, signed by {made.operator_public})")
    print(f"operator secret key: {made.operator_secret} (keep it off the server)")
    print(f"give each client {made.operator_public}, {made.roster} and its own identity-ID.secret")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.role == "roster":
            return _roster(args)
        name = "server" if args.role == "server" else args.name
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
