"""Everything observed during one scale run, in one mutable record that the report reads afterwards.

The orchestration writes it (pids, the server's events, the workers' results), the sampler and the
probes append to it; ``mark`` ties each server event to the server's memory and CPU at that moment,
so that per-round CPU is exact at round boundaries rather than interpolated between samples.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.scale.probes import HttpProbe
from benchmarks.scale.sampling import ProcSample, WorkersSample, read_proc, read_workers

__all__ = ["Record"]


@dataclass(slots=True)
class Record:
    """Everything observed during one run (mutable while it runs, turned into the report after)."""

    t0: float
    server_pid: int | None = None
    worker_pids: list[int] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)  # first time of each event kind
    marks: dict[str, ProcSample] = field(default_factory=dict)  # server at each event
    rounds: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    server_samples: list[ProcSample] = field(default_factory=list)
    worker_samples: list[WorkersSample] = field(default_factory=list)
    probes: list[HttpProbe] = field(default_factory=list)
    metric_probes: list[HttpProbe] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    server_exit: int | None = None
    http_url: str | None = None
    training_over: float | None = None
    min_samples: int | None = None

    def now(self) -> float:
        """Seconds since the run started (the time axis of every sample, probe and event)."""
        return time.monotonic() - self.t0

    def mark(self, name: str) -> None:
        """Note the first time of event ``name`` and the server's memory and CPU at that moment."""
        self.events.setdefault(name, self.now())
        if self.server_pid is not None:
            with contextlib.suppress(OSError):
                self.marks[name] = read_proc(self.server_pid, self.now())

    def sample(self) -> None:
        """One periodic look at the server and at the workers (summed); gone processes are skipped."""
        if self.server_pid is not None:
            with contextlib.suppress(OSError, ValueError):
                self.server_samples.append(read_proc(self.server_pid, self.now()))
        workers = read_workers(self.worker_pids, self.now())
        if workers is not None:
            self.worker_samples.append(workers)
