"""Memory and CPU of a process, read from outside through ``/proc`` (Linux).

The server is measured from outside: its resident memory (``VmRSS``, and the kernel's own peak
``VmHWM``) and CPU time (``utime + stime``) come from ``/proc/PID``, so that measuring costs the
server nothing and a stalled server is measured all the same.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcSample",
    "WorkersSample",
    "parse_proc_stat_cpu",
    "parse_proc_status",
    "read_proc",
    "read_workers",
]

_TICKS = os.sysconf("SC_CLK_TCK")


def parse_proc_status(text: str) -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` (bytes) and ``Threads`` from the text of ``/proc/PID/status``."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            number, _, unit = value.strip().partition(" ")
            if unit != "kB":
                raise ValueError(f"unexpected unit {unit!r} for {key} in /proc status")
            found[key] = int(number) * 1024
        elif key == "Threads":
            found[key] = int(value.strip())
    return found


def parse_proc_stat_cpu(text: str, ticks_per_second: int = _TICKS) -> float:
    """User + system CPU seconds from the text of ``/proc/PID/stat``.

    The command name (field 2) is in parentheses and may hold spaces or parentheses itself, so the
    fields are counted after the *last* ``)``: utime and stime are fields 14 and 15 of proc(5).
    """
    rest = text[text.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / ticks_per_second


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One look at a process: seconds since the benchmark started, memory, CPU, threads, open files."""

    at: float
    rss_bytes: int
    peak_rss_bytes: int
    cpu_seconds: float
    threads: int
    open_files: int


def read_proc(pid: int, at: float) -> ProcSample:
    """Sample ``pid`` through ``/proc``; raises ``OSError`` when the process is gone."""
    status = parse_proc_status(Path(f"/proc/{pid}/status").read_text())
    cpu = parse_proc_stat_cpu(Path(f"/proc/{pid}/stat").read_text())
    try:
        files = len(os.listdir(f"/proc/{pid}/fd"))
    except PermissionError:
        files = -1
    return ProcSample(
        at=at,
        rss_bytes=status.get("VmRSS", 0),
        peak_rss_bytes=status.get("VmHWM", 0),
        cpu_seconds=cpu,
        threads=status.get("Threads", 0),
        open_files=files,
    )


@dataclass(frozen=True, slots=True)
class WorkersSample:
    """The worker processes together at one moment: resident memory, CPU time, the most threads one has."""

    at: float
    rss_bytes: int
    cpu_seconds: float
    threads_max: int


def read_workers(pids: Sequence[int], at: float) -> WorkersSample | None:
    """The live ones of ``pids`` summed (threads: the most in one), or None when none is alive."""
    seen = []
    for pid in pids:
        try:
            seen.append(read_proc(pid, at))
        except (OSError, ValueError):
            continue
    if not seen:
        return None
    return WorkersSample(
        at,
        sum(w.rss_bytes for w in seen),
        sum(w.cpu_seconds for w in seen),
        max(w.threads for w in seen),
    )
