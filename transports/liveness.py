"""Per-peer liveness deadlines on the event loop's timers (no polling loop).

Every sign of life pushes a peer's deadline forward; one ``TimerHandle`` per peer fires at the
recorded deadline and, if the peer spoke in the meantime, re-arms itself for the remaining time
instead of being cancelled and re-created on every message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from transports.errors import TransportConfigError

__all__ = ["Liveness"]

K = TypeVar("K", bound=Hashable)


class Liveness(Generic[K]):
    def __init__(self, timeout: float, on_expire: Callable[[K], None]) -> None:
        if timeout <= 0:
            raise TransportConfigError(f"liveness timeout must be positive, got {timeout!r} s")
        self._timeout = timeout
        self._on_expire = on_expire
        self._last_seen: dict[K, float] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._last_seen

    def __len__(self) -> int:
        return len(self._last_seen)

    def touch(self, key: K) -> bool:
        """Record a sign of life; return True when ``key`` was not known before."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        new = key not in self._last_seen
        self._last_seen[key] = now
        if new:
            self._timers[key] = loop.call_at(now + self._timeout, self._check, key)
        return new

    def forget(self, key: K) -> None:
        self._last_seen.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def clear(self) -> None:
        for key in list(self._last_seen):
            self.forget(key)

    def _check(self, key: K) -> None:
        last = self._last_seen.get(key)
        if last is None:
            return
        loop = asyncio.get_running_loop()
        due = last + self._timeout
        if loop.time() >= due:
            self.forget(key)
            self._on_expire(key)
        else:
            self._timers[key] = loop.call_at(due, self._check, key)
