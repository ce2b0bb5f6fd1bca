"""``python -m benchmarks.scale``: parse the options, run, print the Markdown report, set the exit code.

Exit status: 0 when every round finished with every client, 1 otherwise, 2 for impossible options,
130 when interrupted (Ctrl-C or SIGTERM; every process is stopped and a partial report written).
The hidden first argument ``_worker`` runs one worker process instead (``workers.py``).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from benchmarks.scale.options import build_parser, options_from_args
from benchmarks.scale.orchestrate import run_scale
from benchmarks.scale.report import render_markdown
from benchmarks.scale.workers import WORKER, worker_main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [WORKER]:
        return worker_main(argv[1:])
    from clipfl import ClipflError

    args = build_parser().parse_args(argv)
    try:
        opts = options_from_args(args)
    except ClipflError as exc:
        print(f"benchmarks.scale: error: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_with_sigterm(run_scale(opts)))
    except KeyboardInterrupt:
        print(f"benchmarks.scale: interrupted; every process stopped; partial report in {opts.out}")
        return 130
    print(render_markdown(report))
    print(f"JSON: {opts.report_json}")
    return 0 if report["status"] == "ok" and report["all_rounds_completed"] else 1


async def _with_sigterm(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """SIGTERM cancels the run like Ctrl-C does, so that ``run_scale`` stops every child first."""
    task: asyncio.Task[dict[str, Any]] = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    cancel: Callable[[], object] = task.cancel
    loop.add_signal_handler(signal.SIGTERM, cancel)
    try:
        return await task
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
