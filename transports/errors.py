"""Errors of the transports, split by what the caller can do about them.

    Exception
    ├── TransportError              the network failed at run time: could not bind, connect or send
    │   └── ConnectionLost          the other side went silent past the heartbeat timeout, or the
    │                               transport was closed; a client reconnects
    └── ValueError
        └── TransportConfigError    an impossible setting (a key file, a rate, a heartbeat interval):
                                    fix it, retrying will not help

``TransportConfigError`` is deliberately *not* a ``TransportError``: code that retries on
``TransportError`` (a client's reconnect loop) must not retry a bad key file forever. The
transports know nothing of the application that uses them; an application that wants its own
error type translates these where it constructs the transport. Every message is one line that says
what is wrong and, where it helps, what to do.
"""

from __future__ import annotations

__all__ = ["ConnectionLost", "TransportConfigError", "TransportError"]


class TransportError(Exception):
    """The transport failed (could not bind, connect or send)."""


class ConnectionLost(TransportError):
    """The other side went silent past the heartbeat timeout, or the transport was closed."""


class TransportConfigError(ValueError):
    """A transport setting is impossible: a missing or malformed key file, a rate, an interval."""
