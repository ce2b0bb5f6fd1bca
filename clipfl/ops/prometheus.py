"""``GET /metrics``: the server's Prometheus metrics, exposed by ``prometheus_client``.

Each server gets its own ``CollectorRegistry`` (never the library's global one), so two servers in one
process, as in the tests, never clash. Counters and gauges are read from the ``ServerView`` at
scrape time by a custom collector, so nothing is counted twice and the server driver stays unaware
of Prometheus. The two histograms are ``prometheus_client`` histograms fed by bus events (``round``
and ``stage``), seeded at start from the rounds and stage events that already happened, so a
dashboard started late or after ``--resume`` agrees with ``/api/rounds``. ``make_app`` mounts the
library's aiohttp handler on the registry, which also answers OpenMetrics scrapes and compresses.

Exported (all names start with ``clipfl_``):

    rounds_completed_total      counter    rounds finished
    round_duration_seconds      histogram  wall time of each round
    bytes_in_total              counter    application bytes received by the server's transport
    bytes_out_total             counter    application bytes sent
    dropouts_total              counter    clients dropped from a round, summed over rounds
    dropped_messages_total      counter    messages the server discarded (malformed, out of turn)
    clients_connected           gauge      clients registered and connected now
    current_round               gauge      the round in progress (0 before the first)
    secagg_stage_seconds        histogram  duration of each secure-aggregation stage, label ``stage``
    events_dropped_total        counter    dashboard events dropped for slow watchers
    event_subscribers           gauge      live dashboard streams

The library adds a ``_created`` series to each histogram; it is left out, so that the families above
are exactly what is exported. Bucket bounds are written as the library writes them (``le="1.0"``, the
form Prometheus 3 normalises every ``le`` to).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clipfl.ops.events import Event, EventBus
from clipfl.ops.view import ServerView

__all__ = ["ROUND_BUCKETS", "STAGE_BUCKETS", "Metrics"]

log = logging.getLogger(__name__)

# Rounds last from a fraction of a second (digits, a few clients) to minutes (CIFAR-10 with stragglers).
ROUND_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Secure-aggregation stages: milliseconds for key adverts, seconds for masked uploads of big models.
STAGE_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Stage names come from the server, but a bug must not grow the scrape without bound.
MAX_STAGE_LABELS = 32


def _number(value: Any) -> float | None:
    """A finite number from a row or an event, else None (histograms ignore what is not finite)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _without_created(histogram: Histogram) -> Iterator[Metric]:
    for family in histogram.collect():
        family.samples = [s for s in family.samples if not s.name.endswith("_created")]
        yield family


class _ServerCollector(Collector):
    """Everything one scrape shows, read at scrape time, in the order of the table above."""

    def __init__(self, view: ServerView, bus: EventBus, rounds: Histogram, stages: Histogram) -> None:
        self._view = view
        self._bus = bus
        self._rounds = rounds
        self._stages = stages

    def collect(self) -> Iterator[Metric]:
        counters = self._view.counters()
        status = self._view.status()
        bus = self._bus.statistics()

        def read(key: str) -> float:
            value = _number(counters.get(key))
            return 0.0 if value is None else value

        yield CounterMetricFamily("clipfl_rounds_completed", "Rounds completed.", read("rounds_completed"))
        yield from _without_created(self._rounds)
        yield CounterMetricFamily("clipfl_bytes_in", "Application bytes received.", read("bytes_in"))
        yield CounterMetricFamily("clipfl_bytes_out", "Application bytes sent.", read("bytes_out"))
        yield CounterMetricFamily("clipfl_dropouts", "Clients dropped from a round.", read("dropouts_total"))
        yield CounterMetricFamily(
            "clipfl_dropped_messages",
            "Messages discarded by the server (malformed or out of turn).",
            read("dropped_messages"),
        )
        yield GaugeMetricFamily(
            "clipfl_clients_connected", "Clients connected now.", read("clients_connected")
        )
        yield GaugeMetricFamily(
            "clipfl_current_round", "Round in progress.", _number(status.get("round")) or 0.0
        )
        yield from _without_created(self._stages)
        yield CounterMetricFamily(
            "clipfl_events_dropped", "Dashboard events dropped because a watcher was too slow.", bus.dropped
        )
        yield GaugeMetricFamily("clipfl_event_subscribers", "Live dashboard event streams.", bus.subscribers)


class Metrics:
    """The exporter of one server: a registry of its own, histograms fed by the bus.

    ``registry`` is what ``/metrics`` serves; ``render()`` is one scrape in the text format.
    """

    def __init__(
        self,
        view: ServerView,
        bus: EventBus,
        *,
        round_buckets: Sequence[float] = ROUND_BUCKETS,
        stage_buckets: Sequence[float] = STAGE_BUCKETS,
    ) -> None:
        # registry=None: these histograms belong to this server's registry only, through the collector.
        self._round_seconds = Histogram(
            "clipfl_round_duration_seconds",
            "Wall-clock duration of each completed round.",
            buckets=round_buckets,
            registry=None,
        )
        self._stage_seconds = Histogram(
            "clipfl_secagg_stage_seconds",
            "Duration of each secure-aggregation stage.",
            labelnames=("stage",),
            buckets=stage_buckets,
            registry=None,
        )
        self._stages: set[str] = set()
        self.registry = CollectorRegistry()
        self.registry.register(_ServerCollector(view, bus, self._round_seconds, self._stage_seconds))
        for row in view.rounds():
            self._observe_round(row)
        for event in bus.recent("stage"):
            self._observe_stage(event)
        self._remove = bus.add_listener(self.on_event)

    def close(self) -> None:
        """Stop listening to the bus."""
        self._remove()

    def on_event(self, event: Event) -> None:
        kind = event.get("event")
        if kind == "round":
            self._observe_round(event)
        elif kind == "stage":
            self._observe_stage(event)

    def _observe_round(self, row: Mapping[str, Any]) -> None:
        seconds = _number(row.get("round_seconds"))
        if seconds is not None:
            self._round_seconds.observe(seconds)

    def _observe_stage(self, event: Mapping[str, Any]) -> None:
        stage, seconds = event.get("stage"), _number(event.get("seconds"))
        if not isinstance(stage, str) or seconds is None:
            return
        if stage not in self._stages:
            if len(self._stages) >= MAX_STAGE_LABELS:
                log.warning(
                    "more than %d secure-aggregation stage names; %r not exported", MAX_STAGE_LABELS, stage
                )
                return
            self._stages.add(stage)
        self._stage_seconds.labels(stage=stage).observe(seconds)

    def render(self) -> str:
        """One scrape, in the Prometheus text format (version 0.0.4)."""
        return generate_latest(self.registry).decode()
