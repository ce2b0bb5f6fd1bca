"""Errors of clipfl, split by whose fault they are (the h11 way).

    ClipflError
    ├── ConfigError               an impossible or missing setting: fix the command line or the file
    ├── DataError                 a dataset that is missing, malformed or cannot be partitioned as asked
    └── ProtocolError             a message broke the protocol
        ├── LocalProtocolError    we misused the protocol: a bug in clipfl
        └── RemoteProtocolError   a peer sent something wrong: drop the message, fail the peer for the round

Every message is one line that says what is wrong and, where it helps, what to do.
"""

from __future__ import annotations

__all__ = [
    "ClipflError",
    "ConfigError",
    "DataError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ClipflError(Exception):
    """Base of every error that clipfl raises on purpose."""


class ConfigError(ClipflError, ValueError):
    """A configuration value is missing, malformed or impossible."""


class DataError(ClipflError):
    """A dataset is missing, malformed, or cannot be partitioned as asked."""


class ProtocolError(ClipflError):
    """A message broke the wire format or the protocol."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow: a bug on this side."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something invalid; the peer is at fault, this process keeps serving."""
