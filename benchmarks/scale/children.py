"""The processes a scale run starts, and the guarantee that none of them outlives it.

``stop`` sends SIGTERM, then SIGKILL after a grace period; each child also asks the kernel for
SIGTERM if the harness dies first (``PR_SET_PDEATHSIG``), so that not even a SIGKILLed harness
leaves a server or 50 clients behind.

The benchmark keeps its own small process group rather than importing ``clipfl.procs`` (which the
launcher uses): benchmarks use clipfl's public API and CLI only, and starting processes is the
benchmark's job, not the library's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Children"]

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM it when the harness dies, however it dies."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Children:
    """Every process started through ``start``; ``stop`` ends them all, SIGTERM first, then SIGKILL."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

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
                preexec_fn=_die_with_parent,
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
