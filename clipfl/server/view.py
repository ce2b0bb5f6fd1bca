"""The operations layer's read-only view of a running ``Server`` (``clipfl.ops.view.ServerView``).

The HTTP API, the dashboard and the Prometheus endpoint read the server only through this adapter:
fresh snapshots of plain values, cheap enough to build on the event loop for every request.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from clipfl.server.driver import Server

__all__ = ["OpsView"]


class OpsView:
    def __init__(self, server: Server) -> None:
        self._server = server

    def status(self) -> dict[str, Any]:
        s = self._server
        rnd = s.current_round
        stage = "registering" if not s.all_registered else "evaluating"
        if rnd is not None:
            secure = getattr(rnd.collector, "stage", None)
            stage = secure.value.replace("-", "_") if secure is not None else "collecting"
        elif s.finished:
            stage = "finished"
        return {
            "round": rnd.round if rnd is not None else len(s.records),
            "stage": stage,
            "clients_connected": len(s.connected()),
            "clients_registered": len(s.sessions),
            "clients_dropped": len(rnd.failures) if rnd is not None else 0,
            "rounds_total": s.config.rounds,
            "config": {**asdict(s.config), "model": s.config.model_name},
            "started_at": s.started_at,
        }

    def rounds(self) -> list[dict[str, Any]]:
        return self._server.rows()

    def counters(self) -> dict[str, float]:
        s = self._server
        return {
            "rounds_completed": len(s.records),
            "dropouts_total": sum(len(r.failures) for r in s.records),
            "clients_connected": len(s.connected()),
            **s.transport_counters(),
        }
