"""``GET /metrics``: the Prometheus text exposition format (version 0.0.4), written by hand.

The format is a few lines per metric (``# HELP``, ``# TYPE``, samples), so clipfl does not depend on
``prometheus_client`` for it. Counters and gauges are read from the ``ServerView`` at scrape time;
the two histograms are fed by bus events (``round`` and ``stage``), seeded at start from the rounds
and stage events that already happened, so a dashboard started late or after ``--resume`` agrees
with ``/api/rounds``.

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
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clipfl.ops.events import Event, EventBus
from clipfl.ops.view import ServerView

__all__ = [
    "CONTENT_TYPE",
    "ROUND_BUCKETS",
    "STAGE_BUCKETS",
    "Histogram",
    "HistogramSnapshot",
    "Metrics",
    "format_value",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Rounds last from a fraction of a second (digits, a few clients) to minutes (CIFAR-10 with stragglers).
ROUND_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Secure-aggregation stages: milliseconds for key adverts, seconds for masked uploads of big models.
STAGE_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Stage names come from the server, but a bug must not grow the scrape without bound.
MAX_STAGE_LABELS = 32


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: integers plainly, ``+Inf``/``-Inf``/``NaN`` spelled out."""
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(pairs: Mapping[str, str]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs.items()) + "}"


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    """Observations <= each bound, then the total (the ``+Inf`` bucket)."""
    sum: float
    count: int


class Histogram:
    """Fixed buckets, cumulative counts on snapshot; observations that are not finite are ignored."""

    def __init__(self, bounds: Sequence[float]) -> None:
        b = tuple(float(x) for x in bounds)
        if not b or any(not math.isfinite(x) for x in b) or list(b) != sorted(set(b)):
            raise ValueError(f"bucket bounds must be finite and strictly increasing, got {bounds!r}")
        self._bounds = b
        self._counts = [0] * (len(b) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        if not math.isfinite(value):
            return
        self._counts[bisect.bisect_left(self._bounds, value)] += (
            1  # le: a value equal to a bound counts in it
        )
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        cumulative: list[int] = []
        total = 0
        for c in self._counts:
            total += c
            cumulative.append(total)
        return HistogramSnapshot(self._bounds, tuple(cumulative), self._sum, total)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class Metrics:
    """The exporter: listens on the bus for histogram observations, renders a scrape on demand."""

    def __init__(
        self,
        view: ServerView,
        bus: EventBus,
        *,
        round_buckets: Sequence[float] = ROUND_BUCKETS,
        stage_buckets: Sequence[float] = STAGE_BUCKETS,
    ) -> None:
        self._view = view
        self._bus = bus
        self._round_seconds = Histogram(round_buckets)
        self._stage_buckets = tuple(stage_buckets)
        self._stages: dict[str, Histogram] = {}
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
        hist = self._stages.get(stage)
        if hist is None:
            if len(self._stages) >= MAX_STAGE_LABELS:
                log.warning(
                    "more than %d secure-aggregation stage names; %r not exported", MAX_STAGE_LABELS, stage
                )
                return
            hist = self._stages[stage] = Histogram(self._stage_buckets)
        hist.observe(seconds)

    def render(self) -> str:
        """One scrape, in the text exposition format."""
        counters = self._view.counters()
        status = self._view.status()
        bus = self._bus.statistics()

        def read(key: str) -> float:
            value = _number(counters.get(key))
            return 0.0 if value is None else value

        lines: list[str] = []
        _scalar(
            lines, "clipfl_rounds_completed_total", "counter", "Rounds completed.", read("rounds_completed")
        )
        _histogram(
            lines,
            "clipfl_round_duration_seconds",
            "Wall-clock duration of each completed round.",
            [({}, self._round_seconds.snapshot())],
        )
        _scalar(lines, "clipfl_bytes_in_total", "counter", "Application bytes received.", read("bytes_in"))
        _scalar(lines, "clipfl_bytes_out_total", "counter", "Application bytes sent.", read("bytes_out"))
        _scalar(
            lines, "clipfl_dropouts_total", "counter", "Clients dropped from a round.", read("dropouts_total")
        )
        _scalar(
            lines,
            "clipfl_dropped_messages_total",
            "counter",
            "Messages discarded by the server (malformed or out of turn).",
            read("dropped_messages"),
        )
        _scalar(
            lines, "clipfl_clients_connected", "gauge", "Clients connected now.", read("clients_connected")
        )
        current = _number(status.get("round"))
        _scalar(lines, "clipfl_current_round", "gauge", "Round in progress.", current or 0.0)
        _histogram(
            lines,
            "clipfl_secagg_stage_seconds",
            "Duration of each secure-aggregation stage.",
            [({"stage": name}, hist.snapshot()) for name, hist in sorted(self._stages.items())],
        )
        _scalar(
            lines,
            "clipfl_events_dropped_total",
            "counter",
            "Dashboard events dropped because a watcher was too slow.",
            bus.dropped,
        )
        _scalar(lines, "clipfl_event_subscribers", "gauge", "Live dashboard event streams.", bus.subscribers)
        return "\n".join(lines) + "\n"


def _scalar(lines: list[str], name: str, kind: str, text: str, value: float) -> None:
    lines += [f"# HELP {name} {_escape_help(text)}", f"# TYPE {name} {kind}", f"{name} {format_value(value)}"]


def _histogram(
    lines: list[str], name: str, text: str, series: Iterable[tuple[Mapping[str, str], HistogramSnapshot]]
) -> None:
    lines += [f"# HELP {name} {_escape_help(text)}", f"# TYPE {name} histogram"]
    for labels, snap in series:
        bounds = [format_value(b) for b in snap.bounds] + ["+Inf"]
        for le, count in zip(bounds, snap.cumulative, strict=True):
            lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {count}")
        lines.append(f"{name}_sum{_labels(labels)} {format_value(snap.sum)}")
        lines.append(f"{name}_count{_labels(labels)} {snap.count}")
