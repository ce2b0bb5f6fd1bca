"""The server's collector under secure aggregation: ``PlainCollector``'s verbs over a ``SecAggServer``.

The round loop does not change between plain and secure mode. The server never sees an update: it
gets the masked vectors and, after unmasking, only their sum, which it splits into the weighted delta
sum and the exact coverage (DESIGN section 4: ``[weight * delta | coverage]``, coverage holding one
entry per prunable unit plus one for the rest, the client's weight where it trained that unit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from clipfl.engine.collect import Collector
from clipfl.engine.update import UpdateSum
from clipfl.messages import Receipt
from clipfl.secagg import (
    REAL,
    AdvertiseKeys,
    ConsistencySignature,
    FixedPoint,
    MaskedInput,
    Primitives,
    RelayPrivate,
    Roster,
    SecAggConfig,
    SecAggServer,
    ShareKeys,
    Stage,
    UnmaskShares,
    UpdateLayout,
)
from clipfl.settings import CodecParams
from clipfl.wire import Message

__all__ = ["SecureCollector", "codec_of"]

log = logging.getLogger(__name__)

_FROM_CLIENTS = (AdvertiseKeys, ShareKeys, MaskedInput, ConsistencySignature, UnmaskShares, RelayPrivate)


def codec_of(params: CodecParams) -> FixedPoint:
    """The fixed-point codec both ends build from the same public numbers, bit for bit."""
    return FixedPoint.for_federation(params.clients, float(params.max_weight), params.clip_range)


class SecureCollector(Collector):
    """Collects one round's updates through secure aggregation."""

    def __init__(
        self,
        round: int,
        clients: Sequence[int],
        *,
        config: SecAggConfig,
        codec: CodecParams,
        layout: UpdateLayout,
        clock: Callable[[], float],
        unmask_timeout: float,
        roster: Roster | None = None,
        instructions: bytes = b"",
        primitives: Primitives = REAL,
    ) -> None:
        super().__init__(round, clients, clock)
        self._layout = layout
        self._codec = codec_of(codec)
        self._unmask_timeout = unmask_timeout
        self._sa = SecAggServer(
            round=round,
            clients=clients,
            vector_length=layout.size,
            config=config,
            roster=roster,
            instructions=instructions,
            primitives=primitives,
        )
        self._stage_started = clock()
        self._stage = self._sa.stage
        self._sa.start()
        self._pump()

    @property
    def stage(self) -> Stage:
        return self._sa.stage

    def _pump(self) -> None:
        """Move the secure aggregation server's output to the outbox; note stage changes."""
        stage = self._sa.stage
        if stage is not self._stage:
            now = self._clock()
            self.stage_seconds[self._stage.value.replace("-", "_")] = now - self._stage_started
            self._stage, self._stage_started = stage, now
        self._outbox.extend(self._sa.data_to_send())
        for client_id, reason in self._sa.failures.items():
            if client_id not in self.failures:
                self.failures[client_id] = reason

    def receive(self, client_id: int, msg: Message) -> None:
        if not isinstance(msg, _FROM_CLIENTS):
            self.fail(
                client_id, f"sent {type(msg).__name__}, which no client may send during secure aggregation"
            )
            return
        self._sa.receive(client_id, msg)
        if (
            isinstance(msg, MaskedInput)
            and client_id not in self._sa.failures
            and client_id not in self.arrivals
            and msg.round == self.round
        ):
            self._arrived(client_id)
            self._outbox.append((client_id, Receipt(round=self.round)))
        self._pump()

    def fail(self, client_id: int, reason: str) -> None:
        if client_id in self.expected and client_id not in self.failures:
            self._sa.fail(client_id, reason)
            self._pump()

    def expire(self, now: float) -> None:
        self._sa.expire_stage()
        self._pump()

    def waiting_for(self) -> frozenset[int]:
        return self._sa.waiting_for()

    @property
    def done(self) -> bool:
        return self._sa.done or self._sa.aborted is not None

    def next_deadline(self, round_deadline: float) -> float:
        """Keys and masked inputs share the round's deadline; the consistency check and unmasking
        get their own short one."""
        if self._sa.stage in (Stage.CONSISTENCY, Stage.UNMASKING):
            return self._stage_started + self._unmask_timeout
        return round_deadline

    def outcome(self) -> UpdateSum | None:
        if self._sa.aborted is not None:
            log.warning("round %d: secure aggregation aborted: %s", self.round, self._sa.aborted)
            return None
        if not self._sa.done or not self._sa.survivors:
            return None
        delta_sum, coverage_sum = self._layout.decode(self._codec, self._sa.result())
        weight_sum = float(coverage_sum[-1])
        coverage = coverage_sum.astype(np.float64) if self._layout.coverage_size > 1 else None
        return UpdateSum(delta_sum, weight_sum, tuple(sorted(self._sa.survivors)), coverage_sum=coverage)

    def statistics(self) -> dict[str, float]:
        return {"secagg_survivors": len(self._sa.survivors)}
