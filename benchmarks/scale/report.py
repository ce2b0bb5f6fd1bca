"""The scale report: the figures of one run as JSON (``OUT/scale.json``) and Markdown (``OUT/scale.md``).

Both are written even when the run fails or times out, with ``status`` saying which;
``all_rounds_completed`` is true only when every round finished with every client taking part.
Round times and secure-aggregation stage times are the server's own (its ``round`` events); memory
and CPU are what the sampler read from ``/proc``; HTTP figures count only the probes that started
before the last round ended (the server closes its API right after its last round, so the last value
a scraper can see of the rounds counter is ``rounds - 1``).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from benchmarks.scale.federation import secagg_parameters
from benchmarks.scale.options import ScaleOptions, command_line
from benchmarks.scale.probes import HttpProbe, latency_summary
from benchmarks.scale.record import Record

__all__ = ["build_report", "render_markdown", "write_report"]

MIB = 1 << 20


def _mib(n: float) -> float:
    return round(n / MIB, 1)


def _round_rows(rec: Record) -> list[dict[str, Any]]:
    rows = []
    before = rec.marks.get("start")
    for event in rec.rounds:
        rnd = int(event["round"])
        mark = rec.marks.get(f"round-{rnd}")
        rows.append(
            {
                "round": rnd,
                "round_seconds": event.get("round_seconds"),
                "participants": len(event.get("participants", [])),
                "failures": len(event.get("failures", {})),
                "failure_reasons": sorted(set(event.get("failures", {}).values()))[:5],
                "test_accuracy": event.get("test_accuracy"),
                "stages": dict(event.get("stage_seconds", {})),
                "server_cpu_seconds": (mark.cpu_seconds - before.cpu_seconds if mark and before else None),
                "server_rss_mib": _mib(mark.rss_bytes) if mark else None,
                "bytes_in": event.get("bytes_in"),
                "bytes_out": event.get("bytes_out"),
            }
        )
        before = mark
    return rows


def _server_figures(rec: Record) -> dict[str, Any]:
    samples = rec.server_samples + list(rec.marks.values())
    if not samples:
        return {}
    samples.sort(key=lambda s: s.at)
    start, end = rec.marks.get("start"), rec.marks.get(f"round-{len(rec.rounds)}") if rec.rounds else None
    listening = rec.marks.get("listening")
    rates = [
        (b.cpu_seconds - a.cpu_seconds) / (b.at - a.at)
        for a, b in itertools.pairwise(samples)
        if b.at - a.at >= 0.2
    ]
    during = [s for s in samples if start and end and start.at <= s.at <= end.at]
    return {
        "rss_peak_mib": _mib(max(s.peak_rss_bytes for s in samples)),
        "rss_mean_mib": _mib(statistics.fmean(s.rss_bytes for s in samples)),
        "rss_at_listening_mib": _mib(listening.rss_bytes) if listening else None,
        "rss_at_end_mib": _mib(samples[-1].rss_bytes),
        "cpu_seconds_total": round(samples[-1].cpu_seconds, 2),
        "cpu_seconds_registration": (
            round(start.cpu_seconds - listening.cpu_seconds, 2) if start and listening else None
        ),
        "cpu_seconds_training": round(end.cpu_seconds - start.cpu_seconds, 2) if start and end else None,
        "cpu_percent_training": (
            round(100 * (end.cpu_seconds - start.cpu_seconds) / (end.at - start.at), 1)
            if start and end and end.at > start.at
            else None
        ),
        "cpu_percent_max": round(100 * max(rates), 1) if rates else None,
        "rss_mean_training_mib": _mib(statistics.fmean(s.rss_bytes for s in during)) if during else None,
        "threads_max": max(s.threads for s in samples),
        "open_files_max": max(s.open_files for s in samples),
        "samples": len(rec.server_samples),
    }


def _worker_figures(rec: Record, opts: ScaleOptions) -> dict[str, Any]:
    done: list[int] = []
    errors: dict[str, str] = {}
    for w in rec.workers:
        done += [int(n) for n in w.get("rounds_done", {}).values()]
        errors.update(w.get("errors", {}))
    return {
        "processes": opts.workers,
        "clients_reporting": len(done),
        "clients_with_all_rounds": sum(1 for n in done if n >= opts.rounds),
        "client_errors": len(errors),
        "first_errors": dict(list(errors.items())[:5]),
        "rss_peak_total_mib": _mib(max((w.rss_bytes for w in rec.worker_samples), default=0)),
        "cpu_seconds_total": round(max((w.cpu_seconds for w in rec.worker_samples), default=0.0), 2),
        "build_seconds_max": max((float(w.get("build_seconds", 0.0)) for w in rec.workers), default=None),
        "threads_per_worker_max": max((w.threads_max for w in rec.worker_samples), default=None),
        "missing_results": sum(1 for w in rec.workers if w.get("missing")),
    }


def _live(probes: Sequence[HttpProbe], end: float | None) -> list[HttpProbe]:
    """Probes that count: those that started before the last round ended, less the failures of any
    still in flight then (the server shuts its HTTP API down right after its last round)."""
    if end is None:
        return list(probes)
    return [p for p in probes if p.at <= end and (p.ok or p.at + p.seconds <= end)]


def _http_figures(rec: Record) -> dict[str, Any]:
    live = _live(rec.probes, rec.training_over)
    metrics = _live(rec.metric_probes, rec.training_over)
    start = rec.events.get("start")
    training = [p for p in live if start is not None and p.at >= start]
    return {
        "endpoint": "GET /api/status",
        **latency_summary(live),
        "during_training": latency_summary(training),
        "at_shutdown_ignored": len(rec.probes) - len(live),
        "first_errors": [p.error for p in live if not p.ok][:5],
        "max_clients_connected_seen": max((p.clients_connected or 0 for p in live), default=0),
        "metrics": {
            "endpoint": "GET /metrics",
            **latency_summary(metrics),
            "rounds_completed_total_max": max((p.round or 0 for p in metrics if p.ok), default=None),
            "first_errors": [p.error for p in metrics if not p.ok][:5],
        },
    }


def build_report(
    opts: ScaleOptions, rec: Record, status: str, message: str, load_start: tuple[float, ...]
) -> dict[str, Any]:
    """The report of a run that ended with ``status`` (ok, failed, timeout, interrupted) and ``message``."""
    import torch

    rounds = _round_rows(rec)
    times = [float(r["round_seconds"]) for r in rounds if r["round_seconds"] is not None]
    complete = (
        len(rounds) == opts.rounds
        and all(r["participants"] == opts.clients and r["failures"] == 0 for r in rounds)
        and rec.summary is not None
    )
    if status == "ok" and (rec.server_exit != 0 or rec.summary is None):
        status, message = "failed", f"the server exited with code {rec.server_exit} (see server.log)"
    start, listening = rec.events.get("start"), rec.events.get("listening")
    return {
        "benchmark": "scale",
        "status": status,
        "message": message,
        "command": command_line(opts),
        "config": {
            "clients": opts.clients,
            "rounds": opts.rounds,
            "workers": opts.workers,
            "secagg": opts.secagg,
            **secagg_parameters(opts),
            "model": opts.model,
            "dataset": "digits",
            "local_epochs": 1,
            "min_samples_per_client": rec.min_samples,
            "seed": opts.seed,
            "heartbeat_timeout": opts.heartbeat_timeout,
            "registration_timeout": opts.registration_timeout,
            "round_timeout": opts.round_timeout,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "pids": {"server": rec.server_pid, "workers": rec.worker_pids},
        "all_rounds_completed": complete,
        "rounds_completed": len(rounds),
        "registration_seconds": round(start - listening, 2) if start and listening else None,
        "total_seconds": round(rec.now(), 2),
        "round_seconds": {
            "mean": statistics.fmean(times) if times else None,
            "median": statistics.median(times) if times else None,
            "max": max(times) if times else None,
        },
        "rounds": rounds,
        "server": _server_figures(rec),
        "http": _http_figures(rec),
        "workers": _worker_figures(rec, opts),
        "summary": rec.summary,
        "server_samples": [asdict(s) for s in rec.server_samples],
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the headline table, then one row per round."""
    c, s, h, w = report["config"], report["server"], report["http"], report["workers"]
    rs = report["round_seconds"]
    lines = [
        f"# Scale benchmark: {c['clients']} clients, {c['secagg']}, {c['rounds']} rounds",
        "",
        f"Status: **{report['status']}**"
        + (f" ({report['message']})" if report["message"] else "")
        + f"; every round with every client: **{'yes' if report['all_rounds_completed'] else 'no'}**.",
        f"Command: `{report['command']}`",
        f"Machine: {report['machine']['cpus']} CPUs, load average {report['machine']['loadavg_start'][0]} "
        f"at the start, {report['machine']['loadavg_end'][0]} at the end (shared).",
        f"Clients: {c['workers']} worker processes, model {c['model']}, {c['local_epochs']} local epoch"
        + (
            f", {'SecAgg+' if c['secagg'] == 'secagg+' else 'SecAgg'} k = {c['neighbors']}, "
            f"t = {c['threshold']}"
            if "neighbors" in c
            else ""
        )
        + (
            f", {c['min_samples_per_client']} samples per client (partition floor lowered)"
            if c.get("min_samples_per_client")
            else ""
        )
        + ".",
        "",
        "| figure | value |",
        "|---|---|",
        f"| registration of all clients (s) | {_fmt(report['registration_seconds'])} |",
        f"| round time mean / median / max (s) | {_fmt(rs['mean'])} / {_fmt(rs['median'])} / "
        f"{_fmt(rs['max'])} |",
        f"| server RSS peak / mean (MiB) | {_fmt(s.get('rss_peak_mib'), 1)} / "
        f"{_fmt(s.get('rss_mean_mib'), 1)} |",
        f"| server CPU: registration / training (s) | {_fmt(s.get('cpu_seconds_registration'))} / "
        f"{_fmt(s.get('cpu_seconds_training'))} |",
        f"| server CPU during training / max 0.5 s window (% of one core) | "
        f"{_fmt(s.get('cpu_percent_training'), 1)} / {_fmt(s.get('cpu_percent_max'), 1)} |",
        f"| server threads / open files (max) | {_fmt(s.get('threads_max'))} / "
        f"{_fmt(s.get('open_files_max'))} |",
        f"| GET /api/status: requests / failures | {h['requests']} / {h['failures']} |",
        f"| GET /api/status latency median / p95 / max (ms) | {_fmt(h['median_ms'], 1)} / "
        f"{_fmt(h['p95_ms'], 1)} / {_fmt(h['max_ms'], 1)} |",
        f"| GET /api/status during training only (ms) | {_fmt(h['during_training']['median_ms'], 1)} / "
        f"{_fmt(h['during_training']['p95_ms'], 1)} / {_fmt(h['during_training']['max_ms'], 1)} |",
        f"| GET /metrics: requests / failures / latency median (ms) | {h['metrics']['requests']} / "
        f"{h['metrics']['failures']} / {_fmt(h['metrics']['median_ms'], 1)} |",
        f"| workers: RSS peak total (MiB) / CPU (s) | {_fmt(w['rss_peak_total_mib'], 1)} / "
        f"{_fmt(w['cpu_seconds_total'])} |",
        f"| worker threads (max in one process of {c['clients'] // c['workers']}+ clients) | "
        f"{_fmt(w['threads_per_worker_max'])} |",
        f"| clients that finished every round / errors | {w['clients_with_all_rounds']} / "
        f"{w['client_errors']} |",
        "",
        "| round | time (s) | clients | dropped | accuracy | server CPU (s) | server RSS (MiB) "
        "| stages (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rounds"]:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items()) or "-"
        lines.append(
            f"| {r['round']} | {_fmt(r['round_seconds'])} | {r['participants']} | {r['failures']} | "
            f"{_fmt(r['test_accuracy'], 4)} | {_fmt(r['server_cpu_seconds'])} | "
            f"{_fmt(r['server_rss_mib'], 1)} | {stages} |"
        )
    return "\n".join(lines) + "\n"


def write_report(opts: ScaleOptions, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON (``--json``, default ``OUT/scale.json``) and as ``OUT/scale.md``."""
    opts.report_json.parent.mkdir(parents=True, exist_ok=True)
    opts.report_json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    (opts.out / "scale.md").write_text(render_markdown(report))
