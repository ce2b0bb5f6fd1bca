"""An in-process event bus from the server's round loop to its live watchers.

The server publishes small dicts (``{"event": "round", ...}`` with the metrics row, ``{"event":
"stage", "round": r, "stage": name, "seconds": s}`` for secure-aggregation stage durations,
``{"event": "status", ...}`` on changes). Two kinds of consumers:

- *listeners*: plain callables run inside ``publish`` (the Prometheus histograms); they must be cheap,
  and one that raises is logged and skipped, never propagated into the round loop;
- *subscriptions*: one bounded queue per watcher (a dashboard's event stream). ``publish`` never waits:
  when a watcher is too slow and its queue is full, the oldest event is dropped and counted, so a
  stalled browser costs the server a fixed amount of memory and no time. The watcher sees the count
  grow and can re-read the full state instead.

Everything runs on the event loop's thread (asyncio objects are not thread-safe); from another thread,
publish with ``loop.call_soon_threadsafe(bus.publish, event)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

__all__ = ["BusStatistics", "Event", "EventBus", "Listener", "Subscription"]

log = logging.getLogger(__name__)

Event = dict[str, Any]
Listener = Callable[[Event], None]

# A dashboard needs one event per round plus a few stage events; 256 is minutes of slack even for
# rounds of a fraction of a second, and bounds a stalled watcher to a few hundred small dicts.
DEFAULT_QUEUE_SIZE = 256
# Recent events kept for late joiners (stage timings are not in the metrics rows): ~500 rounds of 4 stages.
DEFAULT_KEEP = 2048


@dataclass(frozen=True, slots=True)
class BusStatistics:
    subscribers: int
    published: int
    dropped: int
    """Events dropped from slow subscribers' queues, over the bus's lifetime."""
    listener_errors: int


class Subscription:
    """One watcher's bounded queue; iterate it (``async for``) or ``await get()``.

    Used as a context manager it unsubscribes on exit. Iteration ends when the bus closes.
    """

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("a subscription needs room for at least one event")
        self._bus = bus
        self._items: deque[Event] = deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0
        """Events this watcher missed because its queue was full (drop-oldest)."""

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def _put(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
            self._bus._dropped += 1
        self._items.append(event)  # a full deque with maxlen drops its oldest item here
        self._ready.set()

    def _close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> Event:
        """Wait for the next event; once closed, drain what is queued, then raise ``EOFError``."""
        while not self._items:
            if self._closed:
                raise EOFError("subscription closed")
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        """Unsubscribe; a pending ``get`` wakes up with ``EOFError``."""
        self._bus._unsubscribe(self)
        self._close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except EOFError:
            raise StopAsyncIteration from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EventBus:
    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE, keep: int = DEFAULT_KEEP) -> None:
        if queue_size < 1 or keep < 0:
            raise ValueError("queue_size must be >= 1 and keep >= 0")
        self._queue_size = queue_size
        self._subscriptions: list[Subscription] = []
        self._listeners: list[Listener] = []
        self._recent: deque[Event] = deque(maxlen=keep)
        self._published = 0
        self._dropped = 0
        self._listener_errors = 0
        self._closed = False

    def publish(self, event: Mapping[str, Any]) -> None:
        """Hand ``event`` to every listener and subscriber; never waits, never raises for them."""
        kind = event.get("event")
        if not isinstance(kind, str):
            raise TypeError(f"an event needs a string 'event' key, got {kind!r}")
        snapshot = dict(event)  # later changes to the publisher's dict must not reach the watchers
        self._published += 1
        self._recent.append(snapshot)
        for listener in list(self._listeners):
            try:
                listener(snapshot)
            except Exception:
                self._listener_errors += 1
                log.exception("event listener %r failed on a %s event; skipped", listener, kind)
        for sub in self._subscriptions:
            sub._put(snapshot)

    def subscribe(self, *, queue_size: int | None = None) -> Subscription:
        sub = Subscription(self, queue_size or self._queue_size)
        if self._closed:
            sub._close()
        else:
            self._subscriptions.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every event from now on; returns the function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def recent(self, kind: str | None = None) -> list[Event]:
        """The last events kept (of one ``kind`` if given), oldest first."""
        return [e for e in self._recent if kind is None or e["event"] == kind]

    def close(self) -> None:
        """End every subscription (their streams finish); later subscriptions start closed."""
        self._closed = True
        subs, self._subscriptions = self._subscriptions, []
        for sub in subs:
            sub._close()

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            subscribers=len(self._subscriptions),
            published=self._published,
            dropped=self._dropped,
            listener_errors=self._listener_errors,
        )
