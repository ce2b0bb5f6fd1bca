"""One round as the server decides it, without I/O: who takes part, what each is told, the sum.

The driver (``clipfl.server``) or a simulator owns the clock's source, the timers and the sockets; a
``ServerRound`` is told what happened (``receive``, ``fail``, ``expire``) and answers with messages
(``opening``, ``data_to_send``) and, once ``done``, with the round's outcome (``close``)::

    rnd = ServerRound(3, connected_clients, model=..., strategy=..., clock=loop.time)
    send(rnd.opening(reachable))            # RoundStart, secure aggregation's setup, FitIns
    while not rnd.done:                     # the driver sleeps until a message or rnd.next_deadline()
        rnd.receive(client_id, msg) | rnd.fail(client_id, why) | rnd.expire(now)
        send(rnd.data_to_send())
    outcome = rnd.close()                   # the next global model, the failures, the statistics
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from clipfl.config import RunConfig
from clipfl.engine.collect import Collector, PlainCollector
from clipfl.engine.instructions import instructions_of
from clipfl.engine.records import RoundRecord
from clipfl.engine.secure_collect import SecureCollector
from clipfl.engine.strategy import FitPlan, Strategy
from clipfl.engine.update import ClientInfo, UpdateSum
from clipfl.messages import FitIns, RoundStart, TimingRelay
from clipfl.params import ParamSpec
from clipfl.secagg import REAL, Primitives, Roster, UpdateLayout
from clipfl.settings import CodecParams, RunSettings
from clipfl.wire import Message

__all__ = ["RoundOutcome", "ServerRound"]


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """What a closed round leaves: the next model, who contributed, who failed and why, timings."""

    weights: np.ndarray
    update: UpdateSum | None
    failures: dict[int, str]
    selected: tuple[int, ...]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def participants(self) -> tuple[int, ...]:
        return self.update.contributors if self.update is not None else ()

    def record(
        self, round: int, *, round_seconds: float, elapsed_seconds: float, loss: float, accuracy: float
    ) -> RoundRecord:
        """The round's record once the next model is tested (the live server and the simulator)."""
        return RoundRecord(
            round=round,
            round_seconds=round_seconds,
            elapsed_seconds=elapsed_seconds,
            test_accuracy=accuracy,
            test_loss=loss,
            participants=list(self.participants),
            failures=self.failures,
            selected=list(self.selected),
            stage_seconds=self.stage_seconds,
            metrics=self.metrics,
        )


class ServerRound:
    """One round: the strategy's plan, a collector (plain or secure), the aggregation."""

    def __init__(
        self,
        round: int,
        clients: Sequence[ClientInfo],
        *,
        config: RunConfig,
        settings: RunSettings,
        strategy: Strategy,
        spec: ParamSpec,
        coverage_size: int,
        global_weights: np.ndarray,
        clock: Callable[[], float],
        roster: Roster | None = None,
        primitives: Primitives = REAL,
    ) -> None:
        self.round = round
        self._strategy = strategy
        self._spec = spec
        self._global = global_weights
        self.plan: FitPlan = strategy.configure_fit(round, clients)
        claimed = {c.client_id: c.num_samples for c in clients}
        self.weights = {i: settings.weight_of(claimed[i]) for i in self.plan.clients}
        self.deadline = clock() + self.plan.deadline_seconds
        """When the server stops waiting for updates (the clock's time)."""
        self._codec: CodecParams | None = None
        self._collector: Collector | None = None
        self._refused: dict[int, str] = {}
        self._weights_named: dict[str, np.ndarray] | None = None
        secagg = settings.secagg
        if secagg is None:
            self._collector = PlainCollector(
                round, self.plan.clients, self.weights, spec, coverage_size=coverage_size, clock=clock
            )
        elif len(self.plan.clients) < 2:
            why = "secure aggregation needs at least 2 clients in a round"
            self._refused = dict.fromkeys(self.plan.clients, why)
        else:
            self._codec = CodecParams(
                clients=len(self.plan.clients),
                max_weight=max(self.weights.values()),
                clip_range=secagg.clip_range,
            )
            # every client of a secure round is told the same (no per-client keep ratio under secagg)
            instructions = instructions_of(self._fit_ins(None))
            self._collector = SecureCollector(
                round,
                self.plan.clients,
                config=secagg,
                codec=self._codec,
                layout=UpdateLayout(spec.size, coverage_size),
                clock=clock,
                unmask_timeout=config.unmask_timeout,
                roster=roster,
                instructions=instructions,
                primitives=primitives,
            )

    # ------------------------------------------------------------------------------- the verbs

    def opening(self, reachable: Callable[[int], bool]) -> list[tuple[int, Message]]:
        """The round's first messages: the announcement, secure aggregation's setup, the model.

        ``RoundStart`` goes first so that a client can time the model's download; a client that is
        not ``reachable`` fails at once.
        """
        if self._collector is None:
            return []
        out: list[tuple[int, Message]] = []
        for client_id in self.plan.clients:
            if reachable(client_id):
                out.append((client_id, RoundStart(round=self.round)))
            else:
                self._collector.fail(client_id, "disconnected before the round started")
        out.extend(self._collector.data_to_send())
        for client_id in self.plan.clients:
            if client_id not in self._collector.failures:
                out.append((client_id, self._fit_ins(client_id)))
        return out

    def _fit_ins(self, client_id: int | None) -> FitIns:
        """What ``client_id`` trains under (the shared part for None)."""
        if self._weights_named is None:
            self._weights_named = self._spec.unflatten(self._global)
        return FitIns(
            round=self.round,
            weights=self._weights_named,
            train=self.plan.train,
            seed=self.plan.seed,
            deadline=self.plan.deadline_seconds,
            keep_ratio=self.plan.keep_ratios.get(client_id) if client_id is not None else None,
            codec=self._codec,
        )

    @property
    def expected(self) -> frozenset[int]:
        return frozenset(self.plan.clients)

    @property
    def collector(self) -> Collector | None:
        """The round's collector (read-only use: its stage and failures for the operations view)."""
        return self._collector

    def receive(self, client_id: int, msg: Message) -> None:
        if self._collector is not None:
            self._collector.receive(client_id, msg)

    def relay_timing(self, sender: int, msg: TimingRelay) -> list[tuple[int, Message]] | None:
        """A plain-mode CLIP timing report, readdressed to the round's other clients.

        None when the report may not be relayed (secure aggregation carries reports sealed on the
        client-to-client channel instead; a report of another round is stale): the caller drops it.
        """
        if self._codec is not None or self._collector is None or msg.round != self.round:
            return None
        out = TimingRelay(round=msg.round, sender=sender, payload=msg.payload)
        return [(client_id, out) for client_id in sorted(self.expected - {sender})]

    def fail(self, client_id: int, reason: str) -> None:
        if self._collector is not None:
            self._collector.fail(client_id, reason)

    def expire(self, now: float) -> None:
        if self._collector is not None:
            self._collector.expire(now)

    def data_to_send(self) -> list[tuple[int, Message]]:
        return self._collector.data_to_send() if self._collector is not None else []

    @property
    def done(self) -> bool:
        return self._collector is None or self._collector.done

    def next_deadline(self) -> float:
        """When ``expire`` is due next: a stage of secure aggregation may end before the round."""
        return self._collector.next_deadline(self.deadline) if self._collector is not None else self.deadline

    @property
    def failures(self) -> Mapping[int, str]:
        return self._collector.failures if self._collector is not None else self._refused

    # ------------------------------------------------------------------------------ the outcome

    def close(self) -> RoundOutcome:
        """Aggregate what arrived into the next global model (the strategy decides how)."""
        collector = self._collector
        update = collector.outcome() if collector is not None else None
        failures = dict(sorted(self.failures.items()))
        metrics: dict[str, float] = {}
        stage_seconds: dict[str, float] = {}
        if collector is not None:
            late = [i for i in self.plan.clients if i in failures]
            self._strategy.record_arrivals(self.round, collector.arrivals, late)
            metrics.update(collector.statistics())
            stage_seconds = dict(collector.stage_seconds)
        if update is not None:
            metrics.update(update.metrics)
            if update.coverage_sum is not None and update.weight_sum > 0:
                # what the summed coverage reveals: the weighted mean fraction of units trained
                metrics["mean_keep_ratio"] = float(update.coverage_sum[:-1].mean() / update.weight_sum)
        weights = self._strategy.aggregate_fit(self.round, self._global, update, failures)
        return RoundOutcome(weights, update, failures, self.plan.clients, stage_seconds, metrics)
