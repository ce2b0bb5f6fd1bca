"""Scale benchmark (issue 7, item 6): hundreds of lightweight clients against one server on one machine.

    python -m benchmarks.scale --clients 200 --rounds 3 [--workers 4] [--secagg secagg+] \\
        [--json FILE] [--out DIR]

One real server process (``python -m clipfl.server --events --http 127.0.0.1:0``) and a few *worker*
processes, each running its share of the clients as ``clipfl.Client`` objects in one event loop
(each with its own ZeroMQ DEALER socket, one torch thread). The model is the tiny ``digits_mlp``
(4,810 parameters; ``--model digits_mlp_wide`` has VGG-9's 1.47 M) with one local epoch, so what is
measured is the federation's own cost: the server's event loop, secure aggregation (SecAgg+ with
Bell et al.'s ``k``), the transport.

Why it is built this way:

* **Clients as tasks, not processes** (``workers``): a client process imports torch (about 300 MB
  resident), so 200 of them do not fit this machine; 4 processes of 50 clients do, and every client
  still has its own socket, heartbeats, secure-aggregation keys and training.
* **The server is measured from outside** (``sampling``, ``record``): its resident memory
  (``VmRSS``, and the kernel's own peak ``VmHWM``) and CPU time (``utime + stime``) are read from
  ``/proc/PID`` every ``--sample-interval`` seconds and at every event it prints, so per-round CPU is
  exact at round boundaries. Round times and secure-aggregation stage times are the server's own
  (its ``round`` events).
* **Responsiveness is probed, not assumed** (``probes``): ``GET /api/status`` every
  ``--http-interval`` seconds, one request at a time, from registration to the last round: latency
  median, p95, max and failures. ``GET /metrics`` every second checks the Prometheus counter under
  load (the server closes its API right after its last round, so the last value a scraper can see
  is ``rounds - 1``).
* **200 clients need a lower partition floor** (``federation``): the clients split the data with
  ``RunConfig``'s default of 10 samples per client, and digits has 1,438 training samples (143
  clients at most); the workers lower that floor (``RunConfig.min_samples``) to the even share (7
  for 200), and the report says so (``samples_per_client``).
* **A worker that dies fails the run at once** (``orchestrate``; its last log line is the reason),
  rather than leaving the server to wait out its registration timeout for clients that will never
  come.
* **Everything it starts is stopped** (``children``): on success, failure, ``--timeout``, Ctrl-C or
  SIGTERM the children get SIGTERM, then SIGKILL after a grace period; each child also asks the
  kernel for SIGTERM if the harness dies first (``PR_SET_PDEATHSIG``). Loopback only.
* **Only the public surface of clipfl**: ``from clipfl import ...`` in-process, the server through
  its CLI.

The JSON (``--json``, default ``OUT/scale.json``) and ``OUT/scale.md`` are written even when the run
fails or times out (``report``), with ``status`` saying which; ``all_rounds_completed`` is true only
when every round finished with every client taking part.

Modules, one job each: ``options`` (the options and their command line), ``federation`` (the
federation they describe, as ``RunConfig``), ``sampling`` (``/proc``), ``probes`` (HTTP),
``record`` (what a run observed), ``children`` (processes), ``workers`` (the worker sub-command),
``orchestrate`` (one run), ``report`` (JSON and Markdown), ``cli`` (``main``).
"""

from __future__ import annotations

from benchmarks.scale.cli import main
from benchmarks.scale.federation import samples_per_client
from benchmarks.scale.options import ScaleOptions, build_parser, command_line
from benchmarks.scale.orchestrate import run_scale, split_ids
from benchmarks.scale.probes import (
    HttpProbe,
    latency_summary,
    metrics_probe,
    percentile,
    rounds_completed,
    status_probe,
)
from benchmarks.scale.report import render_markdown
from benchmarks.scale.sampling import ProcSample, parse_proc_stat_cpu, parse_proc_status, read_proc

__all__ = [
    "HttpProbe",
    "ProcSample",
    "ScaleOptions",
    "build_parser",
    "command_line",
    "latency_summary",
    "main",
    "metrics_probe",
    "parse_proc_stat_cpu",
    "parse_proc_status",
    "percentile",
    "read_proc",
    "render_markdown",
    "rounds_completed",
    "run_scale",
    "samples_per_client",
    "split_ids",
    "status_probe",
]
