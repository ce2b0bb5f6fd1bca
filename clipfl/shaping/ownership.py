"""Who owns a network bench: owner records under ``/run/clipfl-netbench`` and the lock around them.

A bench writes its owner (pid and the process's start time, so that a later process reusing the pid
is not mistaken for it) *before* it creates anything, and deletes the record once everything is
gone. :func:`clipfl.shaping.cleanup_stale` removes only the benches whose owner is no longer alive,
so it never touches a live bench of this or another process. Building and cleaning take one
``flock`` across processes, so two benches never pick the same subnet or run id at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["STATE_DIR", "owner_alive", "owner_path", "process_start", "state_lock", "write_owner"]

STATE_DIR = Path("/run/clipfl-netbench")  # tmpfs: emptied at boot, like the namespaces themselves


def process_start(pid: int) -> str | None:
    """The start time of a live process (to tell it from a later one with the same pid), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


def owner_path(run_id: str) -> Path:
    return STATE_DIR / f"{run_id}.owner"


def write_owner(run_id: str) -> None:
    """Record this process as the owner of run ``run_id``."""
    pid = os.getpid()
    owner_path(run_id).write_text(f"{pid} {process_start(pid)}\n")


def owner_alive(run_id: str) -> bool:
    """Whether the process recorded as the owner of ``run_id`` is still the one running."""
    try:
        pid_text, start = owner_path(run_id).read_text().split()
    except (OSError, ValueError):
        return False
    return process_start(int(pid_text)) == start


@contextlib.contextmanager
def state_lock() -> Iterator[None]:
    """Serialises building and cleaning benches across processes (subnet choice, owner records)."""
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    with (STATE_DIR / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
