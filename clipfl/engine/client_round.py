"""A client's decisions, without I/O: what to train each round, what to send, what to record.

The asyncio client (``clipfl.client``) or a simulator feeds a ``ClientEngine`` the server's decoded
messages with the current time, runs the fit it asks for (``take_fit``; the training is the
``LocalTrainer``'s), reports the fit back (``fit_finished``) and sends ``data_to_send``. The engine
times the round (download from ``RoundStart`` to ``FitIns``, fit as reported, upload from the moment
the update leaves until the server's ``Receipt``), keeps CLIP's latency history and peers' reports,
plans and selects the sub-model, and runs this client's side of secure aggregation with its own
``SecAggConfig``: a server announcing other secure-aggregation settings is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipfl.clip import RoundTiming, SubModel
from clipfl.config import RunConfig
from clipfl.engine.instructions import instructions_of
from clipfl.engine.pruning import ClientPruner
from clipfl.engine.secure_upload import Identity, SecureUpload
from clipfl.errors import ConfigError, RemoteProtocolError
from clipfl.messages import (
    SECAGG_MESSAGES,
    FitIns,
    FitRes,
    NotRegistered,
    Receipt,
    Register,
    Reject,
    RoundStart,
    Shutdown,
    TimingRelay,
    Welcome,
)
from clipfl.secagg import REAL, MaskedInput, Primitives, RoundSetup, SecAggConfig
from clipfl.settings import CodecParams, RunSettings, TrainSettings
from clipfl.trainer import LocalTrainer, TrainOutput
from clipfl.wire import Message

__all__ = ["ClientEngine", "FitJob", "MustRegister", "RunFinished"]

log = logging.getLogger("clipfl.client")


class RunFinished(Exception):
    """The server said the run is over."""


class MustRegister(Exception):
    """The server no longer knows this client (it restarted): register again on a fresh connection."""


@dataclass(frozen=True, slots=True)
class FitJob:
    """A fit the driver must run: ``trainer.train(weights, sub, train, seed, coverage_size)``."""

    round: int
    weights: dict[str, np.ndarray]
    sub: SubModel | None
    train: TrainSettings
    seed: int
    coverage_size: int
    flop_ratio: float
    """MACs of what is trained over the full model's (1.0 without pruning)."""


@dataclass(slots=True)
class _RoundClock:
    """The round in progress, as this client sees it; becomes a ``RoundTiming`` at the receipt."""

    round: int
    announced_at: float | None
    download_s: float = 0.0
    fit_s: float = 0.0
    upload_started_at: float | None = None
    bytes_down: int = 0
    bytes_up: int = 0
    """Both counted until the receipt, when the clock closes: what the round sends later (unmasking
    shares, the timing report) is in no row."""
    flop_ratio: float = 1.0
    record: dict[str, Any] = field(default_factory=dict)


class ClientEngine:
    """One client's side of the federation, driven by messages and the current time."""

    def __init__(
        self,
        client_id: int,
        run: RunConfig,
        trainer: LocalTrainer,
        identity: Identity | None = None,
        primitives: Primitives = REAL,
    ) -> None:
        """``primitives``: secure aggregation's cryptography (``MODELLED`` only in a simulation sized by
        cost, ``--secagg-cost model``)."""
        self.client_id = client_id
        self.trainer = trainer
        self._run = run
        self._secagg: SecAggConfig | None = run.secagg_config()
        if self._secagg is not None and identity is None and not run.secagg_trust_server:
            raise ConfigError(
                "secure aggregation against a malicious server needs this client's identity: give "
                "--roster, --operator-key and --identity (python -m clipfl.keys roster), or "
                "--secagg-trust-server to trust the server not to substitute keys"
            )
        self._identity = identity
        self._primitives = primitives
        self._setup: RoundSetup | None = None
        self._fit_instructions: tuple[int, bytes] | None = None
        self._fit_plan: np.ndarray | None = None  # the units this round's fit trains (pruning clients)
        self.settings: RunSettings | None = None
        self.needs_warm_up = True
        """The model changed (or never ran): the driver warms torch up before the next fit."""
        self.rounds_done: list[int] = []
        self._pruner: ClientPruner | None = None
        self._clock: _RoundClock | None = None
        self._secure: SecureUpload | None = None
        self._outbox: list[Message] = []
        self._fit: FitJob | None = None
        self._fit_codec: CodecParams | None = None
        self._rows: list[dict[str, Any]] = []
        self._token: bytes | None = None

    @property
    def welcomed(self) -> bool:
        return self.settings is not None

    @property
    def num_samples(self) -> int:
        return self.trainer.data.num_samples

    def hello(self) -> Register:
        """The registration to send on every new connection (it also resets the session)."""
        self.settings = None
        return Register(
            client_id=self.client_id,
            num_samples=self.num_samples,
            dataset=self._run.dataset,
            capabilities=["fedavg"],
            token=self._token,
        )

    # ------------------------------------------------------------------------------ receiving

    def receive(self, msg: Message, now: float, nbytes: int = 0) -> None:
        """One message from the server, decoded, at time ``now``."""
        if isinstance(msg, Welcome):
            self._welcome(msg)
        elif isinstance(msg, Reject):
            if msg.retryable:
                raise MustRegister(f"the server refused this client for now: {msg.reason}")
            raise ConfigError(f"the server refused this client: {msg.reason}")
        elif isinstance(msg, NotRegistered):
            if self.welcomed:  # the server restarted under us: a fresh session registers again
                raise MustRegister(f"the server forgot this client ({msg.reason}); registering again")
        elif isinstance(msg, Shutdown):
            log.info("client %d: server says %s", self.client_id, msg.reason)
            raise RunFinished(msg.reason)
        elif not self.welcomed:
            log.warning("client %d: %s before the welcome: dropped", self.client_id, type(msg).__name__)
        elif isinstance(msg, RoundStart):
            self._round_start(msg, now)
        elif isinstance(msg, TimingRelay):
            if self._pruner is not None:
                self._pruner.receive_report(msg.sender, msg.payload)
        elif isinstance(msg, FitIns):
            self._fit_ins(msg, now)
        elif isinstance(msg, Receipt):
            self._receipt(msg, now)
        elif isinstance(msg, SECAGG_MESSAGES):
            self._secagg_message(msg)
        else:
            log.warning("client %d: unexpected %s: dropped", self.client_id, type(msg).__name__)
        if self._clock is not None:
            self._clock.bytes_down += nbytes

    def _welcome(self, msg: Welcome) -> None:
        settings = msg.settings
        if settings.secagg != self._secagg:
            raise ConfigError(
                f"the server runs secure aggregation {settings.secagg}, this client is configured for "
                f"{self._secagg}: start the client with the server's --secagg settings"
            )
        self.settings = settings
        self._token = msg.token
        if settings.model != self.trainer.model_name:
            self.trainer = LocalTrainer(self.trainer.data, settings.model, self.trainer.device)
            self.needs_warm_up = True
            self._pruner = None
        if not settings.prunes:
            self._pruner = None
        elif self._pruner is None or self._pruner.mitigation != settings.mitigation:
            self._pruner = ClientPruner(
                settings.mitigation,
                self.trainer.model,
                self.trainer.data.dataset.input_shape,
                seed=self._run.seed * 7919 + self.client_id,
                straggler_fraction=settings.straggler_fraction,
                min_keep_ratio=settings.min_keep_ratio,
            )
        log.info("client %d registered", self.client_id)

    def _round_start(self, msg: RoundStart, now: float) -> None:
        self._clock = _RoundClock(msg.round, announced_at=now)
        if self._pruner is not None and self._secagg is None:
            report = self._pruner.report(msg.round)
            if report is not None:  # in the clear, relayed by the server (plain mode only)
                self._outbox.append(TimingRelay(round=msg.round, sender=self.client_id, payload=report))

    def _fit_ins(self, msg: FitIns, now: float) -> None:
        try:
            self.trainer.spec.check(msg.weights)
        except ValueError as exc:
            log.error("client %d: global model does not fit: %s", self.client_id, exc)
            return
        if (msg.codec is None) != (self._secagg is None):
            log.error(
                "client %d: round %d's codec does not match secure aggregation", self.client_id, msg.round
            )
            return
        clock = self._clock
        if clock is None or clock.round != msg.round:
            clock = self._clock = _RoundClock(msg.round, announced_at=None)
        if clock.announced_at is not None:
            clock.download_s = now - clock.announced_at
        global_flat = self.trainer.spec.flatten(msg.weights)
        sub: SubModel | None = None
        flop_ratio = 1.0
        if self._pruner is not None:
            self._pruner.observe_global(global_flat)
            choice = self._pruner.choose(msg.deadline, msg.keep_ratio)
            clock.record.update(choice.record())
            if choice.selection is not None:
                flop_ratio = choice.plan.flop_ratio
                sub = self._pruner.build(choice.selection, global_flat)
        clock.flop_ratio = flop_ratio
        coverage = self._pruner.coverage_size if self._pruner is not None else 1
        self._fit_plan = None
        if self._pruner is not None:
            self._fit_plan = sub.trained_units if sub is not None else np.ones(coverage, dtype=bool)
        seed = msg.seed * 1009 + self.client_id
        self._fit = FitJob(msg.round, msg.weights, sub, msg.train, seed, coverage, flop_ratio)
        self._fit_codec = msg.codec
        if self._secagg is not None:
            self._fit_instructions = (msg.round, instructions_of(msg))
            self._start_secure()

    def take_fit(self) -> FitJob | None:
        """The fit the last ``FitIns`` asked for, once."""
        job, self._fit = self._fit, None
        return job

    def fit_finished(self, job: FitJob, out: TrainOutput, fit_seconds: float, record: dict[str, Any]) -> None:
        """The driver ran ``job`` in ``fit_seconds`` (emulated or virtual); queue the upload."""
        clock = self._clock
        if clock is None or clock.round != job.round:
            log.warning("client %d: fit of round %d finished after its round", self.client_id, job.round)
            return
        clock.fit_s = fit_seconds
        clock.record.update(train_loss=out.result.loss, cpu_seconds=out.result.cpu_seconds, **record)
        if self._secure is not None and self._secure.round == job.round:
            assert self.settings is not None and self._fit_codec is not None
            try:
                self._secure.set_update(
                    self._fit_codec,
                    out.delta.astype(np.float64),
                    out.trained_units,
                    self.settings.weight_of(self.num_samples),
                    unit_layout=self._pruner.layout if self._pruner is not None else None,
                )
            except (RemoteProtocolError, ValueError) as exc:
                log.error("client %d: round %d not uploaded: %s", self.client_id, job.round, exc)
            else:
                clock.record["units_withheld"] = self._secure.withheld_units
            return
        self._outbox.append(
            FitRes(
                round=job.round,
                delta=self.trainer.spec.unflatten(out.delta),
                num_samples=self.num_samples,
                metrics={"train_loss": out.result.loss},
                trained_units=out.trained_units,
            )
        )

    def _secagg_message(self, msg: Any) -> None:
        if isinstance(msg, RoundSetup):
            if self._secagg is None:
                log.warning(
                    "client %d: secure aggregation setup, but the run has none: dropped", self.client_id
                )
                return
            # the round's instructions come with its FitIns, next on the wire: wait for them
            self._setup = msg
            self._start_secure()
            return
        secure = self._secure
        if secure is None or secure.round != msg.round:
            log.warning(
                "client %d: %s for round %d that is not running: dropped",
                self.client_id,
                type(msg).__name__,
                msg.round,
            )
            return
        secure.receive(msg)
        if self._pruner is not None:
            for private in secure.received_private():
                self._pruner.receive_report(private.sender, private.payload)

    def _start_secure(self) -> None:
        """Join the round's secure aggregation once both its setup and its ``FitIns`` are here."""
        setup, fit = self._setup, self._fit_instructions
        if setup is None or fit is None or setup.round != fit[0] or self._secagg is None:
            return
        self._setup = None
        self._secure = SecureUpload(
            self.client_id,
            setup.round,
            self._secagg,
            self._identity,
            fit[1],
            self._primitives,
            plan=self._fit_plan,
        )
        self._secure.receive(setup)

    def _receipt(self, msg: Receipt, now: float) -> None:
        clock = self._clock
        if clock is None or clock.round != msg.round or clock.upload_started_at is None:
            log.warning(
                "client %d: receipt for round %d that is not running: dropped", self.client_id, msg.round
            )
            return
        timing = RoundTiming(
            round=clock.round,
            download_s=clock.download_s,
            fit_s=clock.fit_s,
            upload_s=now - clock.upload_started_at,
            flop_ratio=clock.flop_ratio,
        )
        if self._pruner is not None:
            self._pruner.record(timing)
            self._send_report(clock.round)
        self.rounds_done.append(clock.round)
        self._rows.append(
            {
                "round": timing.round,
                "download_seconds": timing.download_s,
                "fit_seconds": timing.fit_s,
                "upload_seconds": timing.upload_s,
                "bytes_up": clock.bytes_up,
                "bytes_down": clock.bytes_down,
                "keep_ratio": 1.0,
                "straggler": False,
                **clock.record,
            }
        )
        self._clock = None

    def _send_report(self, round_number: int) -> None:
        """Under secure aggregation, tell the peers this round's timing as soon as it is complete (the
        upload's receipt), sealed on the client-to-client channel: the round stays open for unmasking
        after the last upload, so every peer's report arrives before the next round's plan. (In the
        clear the report goes at the next ``RoundStart``: there the last upload closes the round.)"""
        secure = self._secure
        assert self._pruner is not None
        if secure is None or secure.round != round_number:
            return
        report = self._pruner.report(round_number + 1)
        if report is not None:
            secure.client.send_private_to_all(report)

    # -------------------------------------------------------------------------------- sending

    def data_to_send(self, now: float) -> list[Message]:
        """What to send now, in order; the update leaving starts the upload clock."""
        out, self._outbox = self._outbox, []
        if self._secure is not None:
            out.extend(self._secure.data_to_send())
        clock = self._clock
        if clock is not None and any(
            isinstance(m, FitRes | MaskedInput) and m.round == clock.round for m in out
        ):
            clock.upload_started_at = now
        return out

    def sent(self, round: int, nbytes: int) -> None:
        """The driver sent ``nbytes`` for ``round`` (counted in the round's record)."""
        if self._clock is not None and self._clock.round == round:
            self._clock.bytes_up += nbytes

    def take_rows(self) -> list[dict[str, Any]]:
        """The per-round records finished since the last call (``client-<id>.jsonl`` rows)."""
        rows, self._rows = self._rows, []
        return rows
