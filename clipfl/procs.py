"""Child processes that a driver starts and must never leave behind (the launcher, the benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["ChildProcesses"]


class ChildProcesses:
    """Every process started through ``start``; ``stop`` ends them all, SIGTERM first, then SIGKILL."""

    def __init__(self, *, preexec_fn: Callable[[], None] | None = None) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self._preexec_fn = preexec_fn

    async def start(
        self, argv: Sequence[str], log_path: Path, *, stdout_pipe: bool = False
    ) -> asyncio.subprocess.Process:
        """Start ``argv`` with stderr (and stdout, unless piped) appended to ``log_path``."""
        with open(log_path, "ab") as log:  # noqa: ASYNC230 - a local file; the child keeps its own descriptor
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=self._preexec_fn,
            )
        self.procs.append(proc)
        return proc

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every live child, wait up to ``grace`` seconds for each, then SIGKILL the rest."""
        alive = [p for p in self.procs if p.returncode is None]
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in alive:
            try:
                await asyncio.wait_for(p.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
