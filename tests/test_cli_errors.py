"""A bad setting met by the transports reaches the user as one line and exit status 2.

The transports raise their own ``TransportConfigError`` (they know nothing of clipfl); clipfl turns
it into ``ConfigError`` where it builds them (``clipfl.keys.load_curve_server`` and
``load_curve_client``), and rates are parsed by ``clipfl.shaping``, which raises ``ConfigError``
itself. Each command line is run as the user runs it, in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipfl import keys
from clipfl.errors import ConfigError
from transports.errors import TransportConfigError, TransportError

REPO = Path(__file__).resolve().parents[1]


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


def _one_line_error(done: subprocess.CompletedProcess[str], prog: str, *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{prog}: error: ")
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def bad_key(tmp_path: Path) -> Path:
    path = tmp_path / "bad.key_secret"
    path.write_text("not a certificate\n")
    return path


def test_transport_config_errors_are_their_own_and_not_retried_as_transport_failures() -> None:
    assert issubclass(TransportConfigError, ValueError)
    assert not issubclass(TransportConfigError, TransportError)  # a reconnect loop must not retry it
    assert not issubclass(TransportConfigError, ConfigError)


def test_a_bad_key_file_becomes_a_one_line_config_error(tmp_path: Path, bad_key: Path) -> None:
    assert keys.main(["server", str(tmp_path / "pki")]) == 0
    secret, public = tmp_path / "pki" / "server.key_secret", tmp_path / "pki" / "server.key"
    for load in (
        lambda: keys.load_curve_server(bad_key, tmp_path / "pki"),
        lambda: keys.load_curve_server(secret, tmp_path / "missing"),
        lambda: keys.load_curve_client(public, public),  # a public certificate is not a key pair
        lambda: keys.load_curve_client(secret, tmp_path / "missing.key"),
    ):
        with pytest.raises(ConfigError) as info:
            load()
        assert isinstance(info.value.__cause__, TransportConfigError)
        assert "\n" not in str(info.value) and "python -m clipfl.keys" in str(info.value)
    assert (
        keys.load_curve_client(secret, public).server_key
        == keys.load_curve_server(secret, tmp_path / "pki").keys.public
    )


def test_a_bad_rate_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    needle = "bad rate '2furlongs'"
    _one_line_error(
        _cli("clipfl.client", "--upload-rate", "2furlongs", cwd=tmp_path), "clipfl.client", needle
    )
    launch = _cli("clipfl.launch", "--download-rate", "2furlongs", "--run-dir", "run", cwd=tmp_path)
    _one_line_error(launch, "clipfl.launch", needle)
    assert not (tmp_path / "run").exists()


def test_a_bad_server_key_file_is_one_line_and_exit_status_2(tmp_path: Path, bad_key: Path) -> None:
    done = _cli("clipfl.server", "--curve-secret", str(bad_key), "--curve-allow", str(tmp_path), cwd=tmp_path)
    _one_line_error(done, "clipfl.server", str(bad_key), "python -m clipfl.keys")


def test_a_bad_client_key_file_is_one_line_and_exit_status_2(tmp_path: Path, bad_key: Path) -> None:
    args = ("--curve-secret", str(bad_key), "--curve-server-key", str(bad_key))
    _one_line_error(_cli("clipfl.client", *args, cwd=tmp_path), "clipfl.client", str(bad_key))
