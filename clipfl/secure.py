"""Secure aggregation inside a federated round: the glue between ``clipfl.secagg`` and the drivers.

``SecureCollector`` is the server's collector for ``--secagg secagg|secagg+``: the same verbs as
``PlainCollector``, backed by a ``SecAggServer``, so the round loop does not change. The server never
sees an update: it gets the masked vectors and, after unmasking, only their sum.

``SecureUpload`` is one client's side of one round: a ``SecAggClient`` plus the fixed-point codec.
Both sides derive the codec from the same public numbers (clients in the round, the largest weight,
the clip range) that the server sends in ``FitIns.config``, so their scales agree bit for bit.

What is summed (DESIGN section 4): ``[weight * delta | coverage]`` where coverage has one entry per
prunable unit plus one for the rest, ``weight`` where the client trained that unit and 0 where it
pruned it. Without pruning the coverage is one entry, the client's weight, and its sum is the total
weight of the survivors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from clipfl.collect import Collector
from clipfl.messages import ConfigValue, Receipt
from clipfl.secagg import (
    Abort,
    AdvertiseKeys,
    FixedPoint,
    KeysBroadcast,
    MaskedInput,
    MaskedInputRequest,
    PrivateDelivery,
    PrivatePayload,
    RelayPrivate,
    RoundSetup,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    ShareKeys,
    Stage,
    UnmaskRequest,
    UnmaskShares,
    UpdateLayout,
)
from clipfl.strategy import UpdateSum
from clipfl.wire import Message, message

__all__ = ["SECAGG_MESSAGES", "SecureCollector", "SecureUpload", "codec_settings", "secagg_config"]

log = logging.getLogger(__name__)

SECAGG_MESSAGES: Mapping[str, type] = {
    "secagg.setup": RoundSetup,
    "secagg.advertise_keys": AdvertiseKeys,
    "secagg.keys": KeysBroadcast,
    "secagg.share_keys": ShareKeys,
    "secagg.masked_input_request": MaskedInputRequest,
    "secagg.masked_input": MaskedInput,
    "secagg.unmask_request": UnmaskRequest,
    "secagg.unmask_shares": UnmaskShares,
    "secagg.relay": RelayPrivate,
    "secagg.private": PrivateDelivery,
    "secagg.abort": Abort,
}
for _name, _cls in SECAGG_MESSAGES.items():
    message(_name)(_cls)

_FROM_CLIENTS = (AdvertiseKeys, ShareKeys, MaskedInput, UnmaskShares, RelayPrivate)


def secagg_config(settings: Mapping[str, ConfigValue]) -> SecAggConfig:
    """The ``SecAggConfig`` described by the run settings (``Welcome.settings`` or the server's)."""
    threshold = settings.get("secagg_threshold")
    neighbors = settings.get("secagg_neighbors")
    return SecAggConfig(
        mode="secagg" if settings["secagg"] == "secagg" else "secagg+",
        threshold=int(threshold) if threshold is not None else None,
        neighbors=int(neighbors) if neighbors is not None and settings["secagg"] == "secagg+" else None,
        clip_range=float(settings.get("clip_range") or 1.0),
    )


def codec_settings(n_clients: int, max_weight: int, clip_range: float) -> dict[str, ConfigValue]:
    """The public numbers both sides build the fixed-point codec from (sent in ``FitIns.config``)."""
    return {"secagg_n": n_clients, "secagg_max_weight": max_weight, "clip_range": clip_range}


def _codec(config: Mapping[str, ConfigValue]) -> FixedPoint:
    return FixedPoint.for_federation(
        int(config["secagg_n"] or 0),
        float(config["secagg_max_weight"] or 0),
        float(config["clip_range"] or 0),
    )


class SecureCollector(Collector):
    """Collects one round's updates through secure aggregation."""

    def __init__(
        self,
        round: int,
        clients: Sequence[int],
        *,
        config: SecAggConfig,
        fit_config: Mapping[str, ConfigValue],
        layout: UpdateLayout,
        clock: Callable[[], float],
        unmask_timeout: float,
    ) -> None:
        super().__init__(round, clients, clock)
        self._layout = layout
        self._codec = _codec(fit_config)
        self._unmask_timeout = unmask_timeout
        self._sa = SecAggServer(round=round, clients=clients, vector_length=layout.size, config=config)
        self._stage_started = clock()
        self._stage = self._sa.stage
        self.stage_seconds: dict[str, float] = {}
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
            self.stage_seconds[self._stage.value] = now - self._stage_started
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
        """Keys and masked inputs share the round's deadline; unmasking gets its own short one."""
        if self._sa.stage is Stage.UNMASKING:
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
        stats: dict[str, float] = {
            f"secagg_{k.replace('-', '_')}_seconds": v for k, v in self.stage_seconds.items()
        }
        stats["secagg_survivors"] = len(self._sa.survivors)
        return stats


class SecureUpload:
    """One client's secure aggregation for one round."""

    def __init__(self, client_id: int, round: int, config: SecAggConfig) -> None:
        self.client = SecAggClient(client_id=client_id, round=round, config=config)
        self.round = round

    def receive(self, msg: Any) -> None:
        self.client.receive(msg)

    def set_update(
        self,
        fit_config: Mapping[str, ConfigValue],
        delta: np.ndarray,
        trained_units: np.ndarray,
        weight: int,
        rng: np.random.Generator | None = None,
    ) -> None:
        """Encode ``[weight * delta | coverage]`` and hand it to the protocol (sent when asked)."""
        layout = UpdateLayout(delta.shape[0], trained_units.shape[0])
        self.client.set_input(layout.encode(_codec(fit_config), delta, trained_units, weight, rng))

    def data_to_send(self) -> list[Any]:
        return self.client.data_to_send()

    def received_private(self) -> list[PrivatePayload]:
        return self.client.received_private()
