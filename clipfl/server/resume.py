"""``--resume RUN_DIR``: where a run continues after its last checkpointed round.

The checkpoint holds the model, the strategy's state and the metrics row of its round, written before
the row reaches ``metrics.jsonl``; a server killed between the two finds the row here and appends it,
so every round is in ``metrics.jsonl`` exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipfl.config import RunConfig
from clipfl.engine.records import RoundRecord, record_of_row
from clipfl.errors import ConfigError
from clipfl.params import ParamSpec
from clipfl.rundir import Checkpoint, RunDir

__all__ = ["Resumed", "resume"]

log = logging.getLogger("clipfl.server")


@dataclass(frozen=True, slots=True)
class Resumed:
    weights: np.ndarray
    strategy_state: dict[str, Any]
    first_round: int
    rows: list[dict[str, Any]]
    records: list[RoundRecord]
    elapsed_seconds: float
    """The run's time before the crash: elapsed times and time to target continue from it."""


def resume(ckpt: Checkpoint, spec: ParamSpec, config: RunConfig, run_dir: RunDir | None) -> Resumed:
    """Check ``ckpt`` against the model and the rounds asked for; complete ``metrics.jsonl``."""
    try:
        spec.check(ckpt.state)
    except ValueError as exc:
        raise ConfigError(f"--resume: the checkpoint does not fit model {config.model_name}: {exc}") from None
    if ckpt.round >= config.rounds:
        raise ConfigError(f"--resume: the run already completed its {ckpt.round} rounds; raise --rounds")
    rows = list(ckpt.rows)
    if ckpt.metrics_row and (not rows or rows[-1]["round"] < ckpt.round):
        rows.append(ckpt.metrics_row)  # killed between the checkpoint and the metrics line
        if run_dir is not None:
            run_dir.append_metrics(ckpt.metrics_row)
    log.info("resuming after round %d of %d", ckpt.round, config.rounds)
    return Resumed(
        weights=spec.flatten(ckpt.state),
        strategy_state=dict(ckpt.strategy),
        first_round=ckpt.round + 1,
        rows=rows,
        records=[record_of_row(row) for row in rows],
        elapsed_seconds=float(rows[-1].get("elapsed_seconds", 0.0)) if rows else 0.0,
    )
