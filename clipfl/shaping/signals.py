"""Signal-safe build and teardown: interrupts wait for a step to finish, SIGTERM unwinds the stack.

Two guards, both only from the main thread (elsewhere Python does not deliver signals anyway):

* :func:`signals_deferred` holds SIGINT and SIGTERM back while a bench is built or torn down and
  delivers them afterwards, so an interrupt between two ``ip`` commands never leaves half a bench
  with no one to remove it.
* :func:`sigterm_raises_system_exit` turns SIGTERM into ``SystemExit`` while a bench is open, so the
  ``finally`` that tears it down runs; a program that handles SIGTERM itself keeps its handler.

Both nest and may be used by several benches of one process at once (several tasks on one loop):
the handlers are installed once and restored once, which is what :class:`_SignalState` counts.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["signals_deferred", "sigterm_raises_system_exit"]


@dataclass(slots=True)
class _SignalState:
    """Who changed this process's SIGINT and SIGTERM handlers, so that nested or concurrent benches
    (several tasks on one loop) install them once and restore them once."""

    term_users: int = 0  # open benches that turned SIGTERM into SystemExit
    term_fired: bool = False  # SystemExit raised once; later SIGTERMs must not abort the teardown
    defer_depth: int = 0  # builds and teardowns in progress with signals deferred
    saved: dict[int, Any] = field(default_factory=dict)  # the handlers replaced while deferring
    pending: list[int] = field(default_factory=list)  # signals that arrived while deferred


_signals = _SignalState()
_DEFERRED = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handler(sig: int) -> Any:
    return _signals.saved[sig] if _signals.defer_depth else signal.getsignal(sig)


def _set_handler(sig: int, handler: Any) -> None:
    if _signals.defer_depth:
        _signals.saved[sig] = handler
    else:
        signal.signal(sig, handler)


def _raise_system_exit(signum: int, frame: object) -> None:
    if not _signals.term_fired:
        _signals.term_fired = True
        raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_raises_system_exit(enabled: bool) -> Iterator[None]:
    """While a bench is open, make SIGTERM unwind the stack (SystemExit) so that teardown runs.

    Only from the main thread and while SIGTERM has its default action: a program that handles
    SIGTERM itself (an asyncio harness with ``loop.add_signal_handler``) keeps its handler.
    """
    if not enabled or not _in_main_thread():
        yield
        return
    if _signals.term_users == 0:
        if _handler(signal.SIGTERM) is not signal.SIG_DFL:
            yield
            return
        _set_handler(signal.SIGTERM, _raise_system_exit)
        _signals.term_fired = False
    _signals.term_users += 1
    try:
        yield
    finally:
        _signals.term_users -= 1
        if _signals.term_users == 0:
            _set_handler(signal.SIGTERM, signal.SIG_DFL)


def _record_signal(signum: int, frame: object) -> None:
    _signals.pending.append(signum)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a bench is built or torn down, and deliver them after.

    An interrupt in the middle of ``ip`` commands would otherwise leave a bench half built with no
    one to tear it down, or a teardown half done. The signals are recorded by Python-level handlers
    (which also works when other threads receive them) and re-raised, in order, once the last
    deferral ends. Only possible from the main thread; elsewhere signals are not delivered anyway.
    """
    if not _in_main_thread():
        yield
        return
    if _signals.defer_depth == 0:
        for sig in _DEFERRED:
            handler = signal.getsignal(sig)
            if handler is not None:  # None: installed outside Python, leave it
                _signals.saved[sig] = signal.signal(sig, _record_signal)
    _signals.defer_depth += 1
    try:
        yield
    finally:
        _signals.defer_depth -= 1
        if _signals.defer_depth == 0:
            for saved_sig, saved_handler in _signals.saved.items():
                signal.signal(saved_sig, saved_handler)
            _signals.saved.clear()
            pending, _signals.pending[:] = list(_signals.pending), []
            for signum in pending:
                signal.raise_signal(signum)
