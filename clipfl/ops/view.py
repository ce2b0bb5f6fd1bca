"""What the operations layer may see of a running server: a read-only view.

The HTTP API and the dashboard know the server only through this protocol, so they can be served
and tested against a fake, and they can never change the federation: every method returns a fresh
snapshot of plain JSON-like values. The methods are called on the event loop by request handlers,
so they must be cheap and must not wait (no file or network I/O): the round loop shares the thread.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["COUNTER_NAMES", "ServerView"]

COUNTER_NAMES = (
    "rounds_completed",
    "bytes_in",
    "bytes_out",
    "dropouts_total",
    "clients_connected",
    "dropped_messages",
)
"""The keys of ``ServerView.counters()``; a missing key is exported as 0."""


class ServerView(Protocol):
    def status(self) -> dict[str, Any]:
        """The federation now.

        Keys: ``round`` (int, 0 before the first), ``stage`` (str), ``clients_connected``,
        ``clients_registered``, ``clients_dropped`` (this round), ``rounds_total`` (ints),
        ``config`` (a JSON-able dict), ``started_at`` (UNIX time or None).
        """
        ...

    def rounds(self) -> list[dict[str, Any]]:
        """The per-round metrics rows so far (the rows of ``metrics.jsonl``), oldest first."""
        ...

    def counters(self) -> dict[str, float]:
        """Monotonic totals and gauges for Prometheus; keys in ``COUNTER_NAMES``."""
        ...
