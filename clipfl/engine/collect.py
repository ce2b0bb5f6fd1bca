"""Collecting one round's updates on the server: sans-IO, one object per round.

A collector takes decoded messages (``receive``), failures (``fail``) and the passing of deadlines
(``expire``), and queues the messages to send (``data_to_send``). The asyncio driver owns the
timers and the sockets and asks ``done`` after each step. ``PlainCollector`` sums the clients'
deltas as they arrive (``--secagg off``); the secure collector (``clipfl.engine.secure_collect``) runs
secure aggregation behind the same verbs, so the server's round loop is the same for both.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from clipfl.engine.update import UpdateSum
from clipfl.messages import FitRes, Receipt
from clipfl.params import ParamSpec
from clipfl.wire import Message

__all__ = ["Collector", "PlainCollector"]

log = logging.getLogger(__name__)


class Collector(abc.ABC):
    """One round's collection of updates."""

    def __init__(self, round: int, clients: Sequence[int], clock: Callable[[], float]) -> None:
        self.round = round
        self.expected = frozenset(clients)
        self.failures: dict[int, str] = {}
        self.arrivals: dict[int, float] = {}
        """Seconds from the start of the round to each client's upload: what the server can time."""
        self.stage_seconds: dict[str, float] = {}
        """Seconds each finished stage of secure aggregation took, by stage (empty in plain mode)."""
        self._outbox: list[tuple[int, Message]] = []
        self._clock = clock
        self._started = clock()

    @abc.abstractmethod
    def receive(self, client_id: int, msg: Message) -> None: ...

    @abc.abstractmethod
    def waiting_for(self) -> frozenset[int]:
        """The clients whose next message the current step still needs."""

    @property
    @abc.abstractmethod
    def done(self) -> bool: ...

    @abc.abstractmethod
    def outcome(self) -> UpdateSum | None:
        """The round's sum once ``done`` (None when nothing survived)."""

    def next_deadline(self, round_deadline: float) -> float:
        """When the driver must call ``expire`` next (a stage may end before the round does)."""
        return round_deadline

    def fail(self, client_id: int, reason: str) -> None:
        """Drop ``client_id`` for the rest of the round, once, with ``reason``."""
        if client_id in self.expected and client_id not in self.failures:
            self.failures[client_id] = reason
            log.warning("round %d: client %d dropped: %s", self.round, client_id, reason)

    def expire(self, now: float) -> None:
        """The current deadline passed: everyone still awaited is dropped."""
        for client_id in sorted(self.waiting_for()):
            self.fail(client_id, "missed the round deadline")

    def data_to_send(self) -> list[tuple[int, Message]]:
        out, self._outbox = self._outbox, []
        return out

    def _arrived(self, client_id: int) -> None:
        self.arrivals[client_id] = self._clock() - self._started

    def statistics(self) -> dict[str, float]:
        return {}


class PlainCollector(Collector):
    """Sums the weighted deltas sent in the clear, as they arrive (no update is kept)."""

    def __init__(
        self,
        round: int,
        clients: Sequence[int],
        weights: Mapping[int, float],
        spec: ParamSpec,
        *,
        coverage_size: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(round, clients, clock)
        self._weights = dict(weights)
        self._spec = spec
        self._sum = np.zeros(spec.size, dtype=np.float64)
        self._coverage = np.zeros(coverage_size, dtype=np.float64)
        self._weight_sum = 0.0
        self._received: list[int] = []
        self._losses: list[float] = []

    def receive(self, client_id: int, msg: Message) -> None:
        if client_id not in self.expected:
            log.warning(
                "round %d: %s from client %d, which is not in this round: dropped",
                self.round,
                type(msg).__name__,
                client_id,
            )
            return
        if not isinstance(msg, FitRes):
            self.fail(client_id, f"sent {type(msg).__name__} where FitRes was expected")
            return
        if msg.round != self.round:
            log.warning(
                "round %d: stale FitRes for round %d from client %d: dropped",
                self.round,
                msg.round,
                client_id,
            )
            return
        if client_id in self._received or client_id in self.failures:
            log.warning("round %d: client %d sent a second FitRes: dropped", self.round, client_id)
            return
        try:
            self._spec.check(msg.delta)
        except ValueError as exc:
            self.fail(client_id, f"update does not fit the model: {exc}")
            return
        flat = self._spec.flatten(msg.delta)
        if not np.isfinite(flat).all():
            self.fail(client_id, "update holds NaN or infinite values")
            return
        if msg.trained_units.shape != self._coverage.shape or not msg.trained_units[-1]:
            self.fail(
                client_id,
                f"coverage has {msg.trained_units.size} entries, this round needs {self._coverage.size} "
                "ending with the rest slot",
            )
            return
        self._arrived(client_id)
        weight = self._weights[client_id]
        self._sum += weight * flat.astype(np.float64)
        self._coverage += weight * msg.trained_units
        self._weight_sum += weight
        self._received.append(client_id)
        if "train_loss" in msg.metrics:
            self._losses.append(msg.metrics["train_loss"])
        self._outbox.append((client_id, Receipt(round=self.round)))

    def waiting_for(self) -> frozenset[int]:
        return self.expected - set(self._received) - set(self.failures)

    @property
    def done(self) -> bool:
        return not self.waiting_for()

    def outcome(self) -> UpdateSum | None:
        if not self._received:
            return None
        metrics = {"train_loss": float(np.mean(self._losses))} if self._losses else {}
        coverage = self._coverage if self._coverage.size > 1 else None
        return UpdateSum(
            self._sum, self._weight_sum, tuple(sorted(self._received)), coverage_sum=coverage, metrics=metrics
        )
