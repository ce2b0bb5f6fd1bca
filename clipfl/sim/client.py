"""One simulated client: the live ``ClientEngine`` on a device, and what its computing costs.

The engine decides everything (timing, planning, selection, the sub-model, encoding, its side of
secure aggregation); this wrapper runs the fit the engine asks for with the real ``LocalTrainer`` and
says how long, in virtual time, each step keeps the device busy. Two lanes, as in the live client:
the *trainer* (a fit, one after the other) and the *protocol* (secure aggregation's cryptography,
which the live client runs on its event loop while a fit trains in a worker thread).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipfl.engine.client_round import ClientEngine, FitJob
from clipfl.secagg import KeysBroadcast, MaskedInputRequest, PrivateDelivery, RoundSetup
from clipfl.settings import TrainSettings
from clipfl.sim.backends import FitBackend, PendingFit, _Done
from clipfl.sim.costs import CostModel
from clipfl.sim.devices import DeviceProfile
from clipfl.trainer import TrainOutput
from clipfl.training import FitResult
from clipfl.wire import Message

__all__ = ["FitRun", "SimClient"]


@dataclass(frozen=True, slots=True)
class FitRun:
    """A fit started on the backend: when it ends in virtual time, and its update, once trained."""

    job: FitJob
    pending: PendingFit
    ends_at: float
    seconds: float
    """From its start to its end: the device's earlier fits, then this one's ``device_seconds``."""
    device_seconds: float
    """The fit's own time on its device (its MACs over the device's speed)."""


@dataclass(slots=True)
class _SecureRound:
    """What this client's secure round needs for its cost: the vector, the threshold, who masks."""

    round: int
    length: int
    threshold: int
    mask_peers: int | None = None
    input_ready: bool = False


class SimClient:
    def __init__(
        self,
        engine: ClientEngine,
        device: DeviceProfile,
        costs: CostModel,
        *,
        forward_macs: int,
        train: TrainSettings,
        backend: FitBackend,
        really_train: bool = True,
    ) -> None:
        self.engine = engine
        self.backend = backend
        self.train = train
        self.really_train = really_train
        """False: protocol-only (no training; every update is zero, its cost still charged)."""
        self.device = device
        self.costs = costs
        self.forward_macs = forward_macs
        self.trainer_free_at = 0.0
        self.protocol_free_at = 0.0
        self.slowdown = costs.train_speed(engine.trainer.model_name) / device.macs_per_second
        """This device's speed relative to this machine's (what the live emulation's slowdown is)."""
        self._secure: _SecureRound | None = None

    @property
    def client_id(self) -> int:
        return self.engine.client_id

    # ------------------------------------------------------------------------------- training

    def fit_seconds(self, flop_ratio: float, train: TrainSettings | None = None) -> float:
        """Virtual seconds of a fit of this client's data at ``flop_ratio`` of the full model's MACs."""
        train = train or self.train
        macs = self.costs.fit_macs(
            self.engine.trainer.model_name,
            self.forward_macs,
            flop_ratio,
            samples=self.engine.trainer.data.num_samples,
            epochs=train.epochs,
            batch_size=train.batch_size,
        )
        return macs / self.device.macs_per_second

    def start_fit(self, job: FitJob, now: float) -> FitRun:
        """Start training ``job`` on the backend; it ends, in virtual time, after the device's earlier
        fits and its MACs' time, whenever the real training finishes."""
        seconds = self.fit_seconds(job.flop_ratio, job.train)
        pending = self.backend.submit(self.engine.trainer, job) if self.really_train else self._untrained(job)
        ends_at = max(now, self.trainer_free_at) + seconds
        self.trainer_free_at = ends_at
        return FitRun(job, pending, ends_at, ends_at - now, seconds)

    def fit_output(self, run: FitRun) -> TrainOutput:
        """The trained update of ``run``, its device's CPU seconds in place of this machine's (results
        never hold a real clock)."""
        out = run.pending.result()
        result = dataclasses.replace(out.result, cpu_seconds=run.device_seconds)
        return dataclasses.replace(out, result=result)

    def _untrained(self, job: FitJob) -> PendingFit:
        """A protocol-only fit: the sub-model the engine built, not trained; a zero update."""
        samples = self.engine.trainer.data.num_samples
        result = FitResult(loss=0.0, samples=samples, cpu_seconds=0.0)
        if job.sub is not None:
            inflated = job.sub.inflate()
            return _Done(TrainOutput(result, inflated.delta, inflated.coverage > 0))
        delta = np.zeros(self.engine.trainer.spec.size, dtype=np.float32)
        return _Done(TrainOutput(result, delta, np.ones(job.coverage_size, dtype=bool)))

    def fit_record(self) -> dict[str, Any]:
        """The fields the live client adds to its round record (no emulation, hence no overrun)."""
        return {"emulation_overrun": False, "slowdown": self.slowdown}

    # ---------------------------------------------------------------------- secure aggregation

    def protocol_seconds(self, msg: Message) -> float:
        """Virtual seconds of cryptography that receiving ``msg`` makes this client do."""
        c = self.costs
        if isinstance(msg, RoundSetup):
            self._secure = _SecureRound(msg.round, msg.vector_length, msg.threshold)
            return c.advertise_s()
        secure = self._secure
        if secure is None or getattr(msg, "round", None) != secure.round:
            return 0.0
        if isinstance(msg, KeysBroadcast):
            return c.share_keys_s(len(set(msg.c_publics) - {self.client_id}), secure.threshold)
        if isinstance(msg, MaskedInputRequest):
            secure.mask_peers = len(msg.ciphertexts)
            seconds = c.open_shares_s(secure.mask_peers)
            if secure.input_ready:
                seconds += c.mask_s(secure.length, secure.mask_peers)
            return seconds
        if isinstance(msg, PrivateDelivery):
            return c.open_shares_s(1)
        return 0.0

    def input_seconds(self, round: int) -> float:
        """Virtual seconds of encoding (and, once asked, masking) a finished fit's update."""
        secure = self._secure
        if secure is None or secure.round != round:
            return 0.0
        secure.input_ready = True
        seconds = self.costs.encode_s(secure.length)
        if secure.mask_peers is not None:
            seconds += self.costs.mask_s(secure.length, secure.mask_peers)
        return seconds
