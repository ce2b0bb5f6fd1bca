"""The operator-signed roster (issue 13: identities the server cannot forge; one id per CurveZMQ key)
and its provisioning by ``python -m clipfl.keys roster``."""

from __future__ import annotations

import stat
from pathlib import Path

import nacl.signing
import numpy as np
import pytest
from secagg_harness import OPERATOR, identities, run

from clipfl import keys
from clipfl.errors import ConfigError
from clipfl.secagg import Roster, RosterEntry, SecAggClient, SecAggConfig, SecAggServer
from transports.curve import create_key_pair, load_public_key


def entries(n: int) -> list[RosterEntry]:
    return [
        RosterEntry(client_id=c, identity_key=bytes(k.verify_key), curve_key=b"%040d" % c)
        for c, k in identities(range(n)).items()
    ]


def test_roster_round_trips_through_bytes_and_verifies() -> None:
    roster = Roster.sign(entries(4), OPERATOR)
    again = Roster.from_bytes(roster.to_bytes(), bytes(OPERATOR.verify_key))
    assert again == roster and again.client_ids == {0, 1, 2, 3}
    assert again.identity_keys()[2] == roster.entry(2).identity_key  # type: ignore[union-attr]


def test_a_roster_altered_after_signing_or_signed_by_another_key_is_refused() -> None:
    roster = Roster.sign(entries(4), OPERATOR)
    server_key = nacl.signing.SigningKey(b"s" * 32)
    with pytest.raises(ConfigError, match="another operator"):
        roster.verify(bytes(server_key.verify_key))
    forged = Roster(
        federation=roster.federation,
        entries=(*roster.entries[:3], RosterEntry(client_id=3, identity_key=bytes(server_key.verify_key))),
        operator_key=roster.operator_key,
        signature=roster.signature,
    )
    with pytest.raises(ConfigError, match="altered"):
        forged.verify(bytes(OPERATOR.verify_key))
    resigned = Roster.sign(forged.entries, server_key)  # the server signing its own roster
    with pytest.raises(ConfigError, match="another operator"):
        Roster.from_bytes(resigned.to_bytes(), bytes(OPERATOR.verify_key))


def test_attack7_one_id_per_curve_key() -> None:
    """The roster binds each CurveZMQ key to exactly one id: the server maps an admitted key to that id
    and refuses any other (``client_for_curve_key``); a roster binding one key to two ids is refused."""
    roster = Roster.sign(entries(3), OPERATOR)
    assert roster.client_for_curve_key(b"%040d" % 1) == 1
    assert roster.client_for_curve_key(b"%040d" % 9) is None
    two = [RosterEntry(client_id=c, identity_key=bytes([c]) * 32, curve_key=b"k" * 40) for c in (0, 1)]
    with pytest.raises(ConfigError, match="one CurveZMQ key to two client ids"):
        Roster.sign(two, OPERATOR)
    same = [RosterEntry(client_id=c, identity_key=b"i" * 32) for c in (0, 1)]
    with pytest.raises(ConfigError, match="identity key to two"):
        Roster.sign(same, OPERATOR)


def test_provision_writes_a_federation_that_runs_with_identities(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    for c in range(5):
        create_key_pair(certs, str(c))
    curve = {c: load_public_key(certs / f"{c}.key") for c in range(5)}
    made = keys.provision(tmp_path / "ids", range(5), curve)
    assert stat.S_IMODE(made.operator_secret.stat().st_mode) == 0o600
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in made.identities.values())
    roster = keys.load_roster(made.roster, made.operator_public)
    assert roster.client_for_curve_key(curve[3]) == 3
    config = SecAggConfig(mode="secagg")
    server = SecAggServer(round=1, clients=range(5), vector_length=8, config=config, roster=roster)
    clients = {
        c: SecAggClient(
            client_id=c,
            round=1,
            config=config,
            roster=roster,
            signing_key=keys.load_identity(made.identity(c)),
        )
        for c in range(5)
    }
    from secagg_harness import Federation

    inputs = {c: np.full(8, c, dtype=np.uint32) for c in range(5)}
    fed = run(Federation(server, clients, inputs))
    np.testing.assert_array_equal(fed.server.result(), np.full(8, 10, dtype=np.uint32))
    with pytest.raises(ConfigError, match="already exists"):
        keys.provision(tmp_path / "ids", range(5))


def test_cli_roster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keys.main(["roster", str(tmp_path), "--clients", "0-2,5"]) == 0
    out = capsys.readouterr().out
    assert "4 clients" in out and "off the server" in out
    roster = keys.load_roster(tmp_path / "roster.msgpack", tmp_path / "operator.pub")
    assert roster.client_ids == {0, 1, 2, 5}
    assert keys.main(["roster", str(tmp_path), "--clients", "0-2"]) == 2  # no silent replacement
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="0-19"):
        keys.parse_ids("zero")
