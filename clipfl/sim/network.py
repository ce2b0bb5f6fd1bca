"""How long a message takes: its real encoded size over the links it crosses, plus latency.

The model is **FIFO links, pipelined**. Every message crosses two links: the client's own (upload or
download, at the device's rate) and the server's (at ``server_bps``, shared by every client). Each
link sends one message at a time, in the order they were handed to it, and is busy for
``size / rate`` seconds per message; a message starts on each link when that link is free, and
arrives ``latency`` after it has cleared the later of the two (the bottleneck sets the pace, as when
the bytes stream through both). Why this model: it is deterministic, it never has to reschedule a
message already in flight (processor sharing would, at every start and end of a transfer), with an
uncapped server link it is exactly the live harness's ``--shape app`` (a token bucket per client
link), and with a capped one, concurrent transfers queue on the server's link as they do on a real
uplink, so a round's model broadcast costs ``clients x size / server_bps``.

A message's size is ``frames_nbytes(encode(msg))``: the very bytes the live transport would send.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clipfl.errors import ConfigError
from clipfl.sim.devices import DeviceProfile
from clipfl.wire import Message, encode
from transports.base import frames_nbytes

__all__ = ["Network", "message_nbytes"]


def message_nbytes(msg: Message) -> int:
    """The encoded size of ``msg`` on the wire, in bytes."""
    return frames_nbytes(encode(msg))


def _seconds(nbytes: int, bps: float | None) -> float:
    return 0.0 if bps is None else 8.0 * nbytes / bps


@dataclass(slots=True)
class _Link:
    bps: float | None
    free_at: float = 0.0

    def occupy(self, now: float, nbytes: int) -> float:
        """Queue ``nbytes`` at ``now``; return when the last byte has left this link."""
        start = max(now, self.free_at)
        self.free_at = start + _seconds(nbytes, self.bps)
        return self.free_at


@dataclass(slots=True)
class Network:
    """Every client's links and the server's, with the bytes that crossed them."""

    devices: dict[int, DeviceProfile]
    server_bps: float | None = None
    bytes_to_server: int = 0
    bytes_from_server: int = 0
    _up: dict[int, _Link] = field(default_factory=dict)
    _down: dict[int, _Link] = field(default_factory=dict)
    _server_in: _Link = field(init=False)
    _server_out: _Link = field(init=False)

    def __post_init__(self) -> None:
        if self.server_bps is not None and not self.server_bps > 0:
            raise ConfigError(f"server_bps must be > 0 bits/s or None (not capped), got {self.server_bps}")
        self._server_in = _Link(self.server_bps)
        self._server_out = _Link(self.server_bps)
        for i, d in self.devices.items():
            self._up[i] = _Link(d.upload_bps)
            self._down[i] = _Link(d.download_bps)

    def upload(self, now: float, client_id: int, nbytes: int) -> float:
        """When a message of ``nbytes`` that client ``client_id`` sends at ``now`` reaches the server."""
        self.bytes_to_server += nbytes
        done = max(self._up[client_id].occupy(now, nbytes), self._server_in.occupy(now, nbytes))
        return done + self.devices[client_id].latency_s

    def download(self, now: float, client_id: int, nbytes: int) -> float:
        """When a message of ``nbytes`` that the server sends at ``now`` reaches ``client_id``."""
        self.bytes_from_server += nbytes
        done = max(self._server_out.occupy(now, nbytes), self._down[client_id].occupy(now, nbytes))
        return done + self.devices[client_id].latency_s
