"""The virtual clock and its event queue: a heap keyed by (time, sequence).

The sequence number breaks ties in the order events were scheduled, so two events at the same
virtual instant always run in the same order: a simulation is a pure function of its inputs. The
clock only moves when an event is taken, and never backwards; nothing here reads a real clock.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

from clipfl.errors import LocalProtocolError
from clipfl.wire import Message

__all__ = [
    "Arrival",
    "ClientReady",
    "DeadlineFired",
    "Event",
    "EventQueue",
    "FitFinished",
    "ServerReady",
    "VirtualClock",
]

SERVER = -1
"""The address of the server in ``Arrival.to``."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """A message arrived: at client ``to``, or at the server (``to == SERVER``) from ``sender``."""

    to: int
    sender: int
    msg: Message
    nbytes: int


@dataclass(frozen=True, slots=True)
class ClientReady:
    """A client's CPU finished what it was computing (secure aggregation's crypto): it sends now."""

    client_id: int


@dataclass(frozen=True, slots=True)
class FitFinished:
    """A client's local fit ends in virtual time (its real training may still be running on the backend)."""

    client_id: int
    fit: Any  # clipfl.sim.client.FitRun: the job, its pending update, its virtual seconds


@dataclass(frozen=True, slots=True)
class DeadlineFired:
    """A deadline of round ``round`` is due (stale when the round is over or the deadline moved)."""

    round: int


@dataclass(frozen=True, slots=True)
class ServerReady:
    """The server finished the round's closing computation (unmasking) and may close round ``round``."""

    round: int


Event = Arrival | ClientReady | FitFinished | DeadlineFired | ServerReady


class VirtualClock:
    """The simulation's time in seconds; ``now`` is what the round engine is given as its clock."""

    def __init__(self) -> None:
        self._now = 0.0

    def now(self) -> float:
        return self._now

    def advance(self, to: float) -> None:
        if to < self._now:
            raise LocalProtocolError(f"virtual clock moved backwards from {self._now} to {to}")
        self._now = to


class EventQueue:
    """Pending events by (time, sequence)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Event]] = []
        self._seq = 0

    def push(self, time: float, event: Event) -> None:
        if not math.isfinite(time):
            raise LocalProtocolError(f"event {type(event).__name__} scheduled at {time}")
        heapq.heappush(self._heap, (time, self._seq, event))
        self._seq += 1

    def pop(self) -> tuple[float, Event]:
        time, _, event = heapq.heappop(self._heap)
        return time, event

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def scheduled(self) -> int:
        """Events ever scheduled (a simulation's size, for its statistics)."""
        return self._seq
