"""``report.md``: the command, then one table per mode, then what each attack was and what it found."""

from __future__ import annotations

from typing import Any

__all__ = ["LOG_BAR", "render_markdown", "verdicts"]

LOG_BAR = 0.1
"""At most this many bytes of server log per byte of garbage: the log must not amplify an attack."""

_COLUMNS = (
    ("attack", "attack"),
    ("messages_sent", "sent"),
    ("rounds", "rounds"),
    ("accuracy_delta", "acc. delta"),
    ("peak_rss_mib", "peak RSS MiB"),
    ("server_exits", "server exit"),
    ("took_effect", "evictions/impersonations"),
    ("short_rounds", "short rounds"),
    ("ghost_waits", "ghost waits"),
    ("log_per_garbage_byte", "log B per garbage B"),
    ("wall_seconds", "wall s"),
)


def _cell(row: dict[str, Any], key: str) -> str:
    if key == "rounds":
        once = "" if row["every_round_once"] else " (not each once)"
        return f"{row['rounds_completed']}/{row['rounds_expected']}{once}"
    value = row.get(key)
    if value is None:
        return "-"
    if key == "peak_rss_mib" and row.get("memory_bounded") is False:
        return f"{value} (over {row['memory_bound_mib']})"
    if key == "accuracy_delta":
        return f"{value:+.4f}"
    if key == "short_rounds":
        if not (row["killed_clients"] and value):
            return str(len(value))
        back = f"; back in round {row['rejoined']}" if row.get("rejoined") else "; never back"
        return f"{len(value)} (killed{back})"
    if key == "server_exits":
        return ",".join(str(c) for c in value) or "none"
    return str(value)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """What fails the campaign's bar, one line each (empty: it holds)."""
    bad = []
    for row in rows:
        name = row["attack"]
        if row["status"] != "ok":
            bad.append(f"{name}: run {row['status']}")
        if row["unexpected_server_exits"]:
            bad.append(f"{name}: the server exited with {row['server_exits']}")
        if row["rounds_completed"] != row["rounds_expected"] or not row["every_round_once"]:
            bad.append(
                f"{name}: {row['rounds_completed']}/{row['rounds_expected']} rounds, each once: "
                f"{row['every_round_once']}"
            )
        if row["took_effect"]:
            bad.append(f"{name}: {row['took_effect']} evictions/impersonations took effect")
        if row["ghost_waits"]:
            bad.append(f"{name}: {row['ghost_waits']} rounds ran to the deadline")
        if row.get("memory_bounded") is False:
            bad.append(f"{name}: peak RSS {row['peak_rss_mib']} MiB over the bound {row['memory_bound_mib']}")
        ratio = row.get("log_per_garbage_byte")
        if ratio is not None and ratio > LOG_BAR:
            bad.append(f"{name}: {ratio} bytes of server log per byte sent (bar: {LOG_BAR})")
        if row["client_failures"]:
            bad.append(f"{name}: {row['client_failures']} client processes failed")
    return bad


def render_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Fault campaign (issue 14)",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Started {results['started']}, wall time {results['wall_seconds']} s; {results['federation']}.",
        "",
    ]
    for mode in results["modes"]:
        lines += [f"## `--secagg {mode['secagg']}`", ""]
        lines.append("| " + " | ".join(title for _, title in _COLUMNS) + " |")
        lines.append("|" + "---|" * len(_COLUMNS))
        for row in mode["rows"]:
            lines.append("| " + " | ".join(_cell(row, key) for key, _ in _COLUMNS) + " |")
        lines.append("")
        bad = verdicts(mode["rows"])
        lines += [f"- {line}" for line in bad] or [
            "All rows hold the bar: no server exit, every round "
            "once, nothing took effect, no ghost wait, memory bounded."
        ]
        lines.append("")
        for raw in mode["raw"]:
            notes = "; ".join(raw["notes"])
            replies = raw["attacker"]["replies"]
            if notes or replies:
                lines.append(f"- **{raw['case']}**: replies {replies or '{}'}{'; ' + notes if notes else ''}")
        lines.append("")
    lines += ["## Attacks", ""] + [f"- **{name}**: {text}" for name, text in results["attacks"].items()]
    lines += [
        "",
        "Columns: *sent* is messages the attacker sent; *acc. delta* the final accuracy minus the clean "
        "run's; *peak RSS* the server's VmHWM (the bound is the clean peak plus one refused message held "
        "whole: the total limit plus one frame, or the largest message one connection sent if larger, "
        "since libzmq buffers a whole multipart message before the server reads its first frame and "
        "only CurveZMQ keeps strangers from sending one; plus 32 MiB for the allocator); "
        "*evictions/impersonations* counts replies that only "
        "a registered client should get (Welcome, round messages, Shutdown) plus, for stranger attacks, "
        "rounds with fewer participants than clients; *ghost waits* rounds that ran to the deadline; "
        "*log B per garbage B* the server log's growth over the clean run per byte the attacker sent.",
        "",
    ]
    return "\n".join(lines)
