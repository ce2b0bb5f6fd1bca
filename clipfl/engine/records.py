"""A run's history: one ``RoundRecord`` per round, its row in ``metrics.jsonl``, and the summary.

The row is the record's fields, its ``metrics`` spread at the top level and the transport counters;
``record_of_row`` reads a row back (``--resume``), ``summarize`` makes ``summary.json``. The live
server and a simulation keep their history the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from clipfl.config import RunConfig

__all__ = ["RoundRecord", "record_of_row", "summarize"]


@dataclass(frozen=True, slots=True)
class RoundRecord:
    round: int
    round_seconds: float
    elapsed_seconds: float
    test_accuracy: float
    test_loss: float
    participants: list[int]
    failures: dict[int, str]
    selected: list[int]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds each stage of secure aggregation took (empty in plain mode)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Figures of the round beyond the fields (train loss, survivors, mean keep ratio)."""

    def row(self, counters: Mapping[str, Any] = {}) -> dict[str, Any]:
        """The ``metrics.jsonl`` row: the fields, the metrics beside them, then ``counters``."""
        row = asdict(self)
        row.update(row.pop("metrics"))
        row.update(counters)
        return row


def record_of_row(row: Mapping[str, Any]) -> RoundRecord:
    """A record from its row, for the summary of a resumed run (the metrics stay in the row)."""
    return RoundRecord(
        round=int(row["round"]),
        round_seconds=float(row.get("round_seconds", 0.0)),
        elapsed_seconds=float(row.get("elapsed_seconds", 0.0)),
        test_accuracy=float(row.get("test_accuracy", 0.0)),
        test_loss=float(row.get("test_loss") or 0.0),
        participants=[int(i) for i in row.get("participants", [])],
        failures={int(k): str(v) for k, v in dict(row.get("failures", {})).items()},
        selected=[int(i) for i in row.get("selected", [])],
        stage_seconds={str(k): float(v) for k, v in dict(row.get("stage_seconds", {})).items()},
    )


def summarize(records: Sequence[RoundRecord], config: RunConfig, total_seconds: float) -> dict[str, Any]:
    """``summary.json``: accuracy, round times and the time to the target accuracy."""
    accs = [r.test_accuracy for r in records]
    target = config.target_accuracy
    reached = [r.elapsed_seconds for r in records if target is not None and r.test_accuracy >= target]
    return {
        "rounds": len(records),
        "total_seconds": total_seconds,
        "final_accuracy": accs[-1] if accs else None,
        "best_accuracy": max(accs) if accs else None,
        "mean_round_seconds": float(np.mean([r.round_seconds for r in records])) if accs else None,
        "final_loss": records[-1].test_loss if accs else None,
        "target_accuracy": target,
        "time_to_target_seconds": reached[0] if reached else None,
        "dataset": config.dataset,
        "model": config.model_name,
        "clients": config.clients,
        "secagg": config.secagg,
        "mitigation": config.mitigation,
    }
