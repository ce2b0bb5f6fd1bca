"""The federated-learning client: connect, register, train each round, upload, repeat.

The message loop never blocks: local training runs in a worker thread as a task of the session's
``TaskGroup``, so heartbeats and (under secure aggregation) protocol stages go on while it trains.
Every round is timed on the event loop's clock: *download* from ``RoundStart`` to the full
``FitIns``, *fit* (with an emulated slowdown: the fit is stretched to ``slowdown`` x its CPU time
on an asyncio timer), *upload* from sending the update until the server's ``Receipt``.
When the server goes silent the client reconnects with exponential backoff and registers again.

Run ``python -m clipfl.client --help`` for the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from clipfl import logs
from clipfl.aio import task_group
from clipfl.clip import RoundTiming as ClipTiming
from clipfl.clip import SubModel
from clipfl.config import ClientConfig, RunConfig, add_flags, config_from_flags, load_toml, run_config
from clipfl.data import load_dataset, make_partition, subsample, to_tensors
from clipfl.errors import ClipflError, ConfigError, RemoteProtocolError
from clipfl.messages import (
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
from clipfl.models import build_model
from clipfl.params import ParamSpec, load_state, state_of
from clipfl.pruning import PRUNING_MITIGATIONS, ClientPruner
from clipfl.rundir import RunDir
from clipfl.secagg import KeysBroadcast, MaskedInput, RoundSetup
from clipfl.secure import SECAGG_MESSAGES, SecureUpload, secagg_config
from clipfl.training import FitResult, TrainSettings, fit
from clipfl.wire import Message, decode, encode
from transports.base import ClientTransport, frames_nbytes
from transports.errors import ConnectionLost, TransportError

__all__ = ["Client", "RoundTiming", "main"]

SECAGG_TYPES = tuple(SECAGG_MESSAGES.values())

log = logging.getLogger("clipfl.client")


@dataclass(slots=True)
class RoundTiming:
    """One round as this client saw it, on the event loop's clock."""

    round: int
    announced_at: float | None = None
    download_seconds: float = 0.0
    fit_seconds: float = 0.0
    upload_started_at: float = 0.0
    upload_seconds: float | None = None
    bytes_down: int = 0
    bytes_up: int = 0
    flop_ratio: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


class _Finished(Exception):
    """The server said the run is over."""


class Client:
    def __init__(
        self,
        run: RunConfig,
        config: ClientConfig,
        transport_factory: Callable[[], ClientTransport],
        *,
        run_dir: RunDir | None = None,
    ) -> None:
        if config.client_id >= run.clients:
            raise ConfigError(
                f"client-id {config.client_id} is outside 0..{run.clients - 1} (--clients {run.clients})"
            )
        self.run_config = run
        self.config = config
        self.run_dir = run_dir
        self._factory = transport_factory
        self.dataset = load_dataset(run.dataset, run.data_dir)
        part = make_partition(
            self.dataset,
            run.partition,
            run.clients,
            seed=run.seed,
            alpha=run.alpha,
            pick=run.pick,
            min_samples=run.min_samples,
        )
        mine = subsample(
            part.train[config.client_id], run.max_client_samples, seed=run.seed + config.client_id
        )
        self.x, self.y = to_tensors(self.dataset.train, mine)
        self.model: torch.nn.Module | None = None
        self.spec: ParamSpec | None = None
        self.model_name = run.model_name
        self._build(self.model_name)
        self.rounds_done: list[int] = []
        self._timing: RoundTiming | None = None
        self._welcomed = False
        self._warmed_up: asyncio.Task[None] | None = None
        self._settings: dict[str, Any] = {}
        self._secure: SecureUpload | None = None
        self._pruner: ClientPruner | None = None
        self._send_lock = asyncio.Lock()

    @property
    def num_samples(self) -> int:
        return len(self.y)

    # ---------------------------------------------------------------------------- connection

    async def run(self) -> int:
        """Take part until the server says the run is over; return the number of rounds done."""
        await asyncio.to_thread(self._warm_up)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.config.connect_timeout
        attempt = 0
        while True:
            transport = self._factory()
            try:
                async with transport:
                    await transport.connect(self.config.server)
                    await self._session(transport)
            except _Finished:
                return len(self.rounds_done)
            except (ConnectionLost, TransportError) as exc:
                if self.rounds_done or attempt == 0:
                    log.warning("client %d: connection lost (%s); reconnecting", self.config.client_id, exc)
            if self._welcomed:
                give_up_at = loop.time() + self.config.connect_timeout
                self._welcomed = False
            if loop.time() >= give_up_at:
                raise ConnectionLost(
                    f"no server at {self.config.server} for {self.config.connect_timeout:g} s; is it running?"
                )
            attempt += 1
            delay = min(5.0, 0.1 * 2 ** min(attempt, 6)) * (0.5 + random.random() / 2)
            await asyncio.sleep(delay)

    async def _session(self, transport: ClientTransport) -> None:
        await transport.send(
            encode(
                Register(
                    client_id=self.config.client_id,
                    num_samples=self.num_samples,
                    dataset=self.run_config.dataset,
                    capabilities=["fedavg"],
                )
            )
        )
        async with task_group() as tg:
            while True:
                try:
                    async with asyncio.timeout(None if self._welcomed else self.config.heartbeat_timeout):
                        frames = await transport.recv()
                except TimeoutError:
                    raise ConnectionLost("no answer to the registration") from None
                nbytes = frames_nbytes(frames)
                try:
                    msg = decode(frames)
                except RemoteProtocolError as exc:
                    log.warning(
                        "client %d: dropped a message from the server: %s", self.config.client_id, exc
                    )
                    continue
                self._on_message(msg, transport, tg)
                if self._timing is not None:
                    self._timing.bytes_down += nbytes

    def _on_message(self, msg: Message, transport: ClientTransport, tg: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(msg, Welcome):
            self._welcomed = True
            self._settings = dict(msg.settings)
            if self.model is None or msg.settings["model"] != self.model_name:
                self._build(str(msg.settings["model"]))
                self._warmed_up = tg.create_task(asyncio.to_thread(self._warm_up), name="warm-up")
            self._set_up_pruning(self._settings)
            log.info("client %d registered", self.config.client_id)
        elif isinstance(msg, Reject):
            raise ConfigError(f"the server refused this client: {msg.reason}")
        elif isinstance(msg, NotRegistered):
            if self._welcomed:  # the server restarted under us: a fresh session registers again
                raise ConnectionLost(f"the server forgot this client ({msg.reason}); registering again")
        elif isinstance(msg, RoundStart):
            self._timing = RoundTiming(msg.round, loop.time())
            if self._pruner is not None and self._settings.get("secagg", "off") == "off":
                report = self._pruner.report(msg.round)
                if report is not None:
                    relay = TimingRelay(round=msg.round, sender=self.config.client_id, payload=report)
                    tg.create_task(self._send(transport, encode(relay), "timing report"))
        elif isinstance(msg, TimingRelay):
            if self._pruner is not None:
                self._pruner.receive_report(msg.sender, msg.payload)
        elif isinstance(msg, FitIns):
            timing = self._timing
            if timing is None or timing.round != msg.round:
                timing = self._timing = RoundTiming(msg.round, None)
            if timing.announced_at is not None:
                timing.download_seconds = loop.time() - timing.announced_at
            tg.create_task(self._fit_and_upload(msg, timing, transport), name=f"fit-{msg.round}")
        elif isinstance(msg, Receipt):
            self._on_receipt(msg)
        elif isinstance(msg, SECAGG_TYPES):
            self._on_secagg(msg, transport, tg)
        elif isinstance(msg, Shutdown):
            log.info("client %d: server says %s", self.config.client_id, msg.reason)
            raise _Finished
        else:
            log.warning("client %d: unexpected %s: dropped", self.config.client_id, type(msg).__name__)

    # --------------------------------------------------------------------- secure aggregation

    def _on_secagg(self, msg: Any, transport: ClientTransport, tg: asyncio.TaskGroup) -> None:
        if isinstance(msg, RoundSetup):
            if self._settings.get("secagg", "off") == "off":
                log.warning(
                    "client %d: secure aggregation setup, but the run has none: dropped",
                    self.config.client_id,
                )
                return
            self._secure = SecureUpload(self.config.client_id, msg.round, secagg_config(self._settings))
        secure = self._secure
        if secure is None or secure.round != msg.round:
            log.warning(
                "client %d: %s for round %d that is not running: dropped",
                self.config.client_id,
                type(msg).__name__,
                msg.round,
            )
            return
        secure.receive(msg)
        if self._pruner is not None:
            for private in secure.received_private():
                self._pruner.receive_report(private.sender, private.payload)
            if isinstance(msg, KeysBroadcast):
                report = self._pruner.report(msg.round)
                if report is not None:
                    secure.client.send_private_to_all(report)
        tg.create_task(self._flush_secure(transport))

    async def _send(self, transport: ClientTransport, frames: list[Any], what: str) -> bool:
        """Send ``frames``; a failure is logged, and the message loop notices the lost connection."""
        try:
            await transport.send(frames)
        except TransportError as exc:
            log.warning("client %d: %s lost: %s", self.config.client_id, what, exc)
            return False
        return True

    async def _flush_secure(self, transport: ClientTransport) -> None:
        """Send what secure aggregation queued; the masked input starts the upload clock."""
        secure = self._secure
        if secure is None:
            return
        async with self._send_lock:  # one flush at a time keeps the protocol's messages in order
            await self._send_queued(secure, transport)

    async def _send_queued(self, secure: SecureUpload, transport: ClientTransport) -> None:
        for out in secure.data_to_send():
            frames = encode(out)
            timing = self._timing
            if timing is not None and timing.round == out.round:
                timing.bytes_up += frames_nbytes(frames)
                if isinstance(out, MaskedInput):
                    timing.upload_started_at = asyncio.get_running_loop().time()
            if not await self._send(transport, frames, "secure aggregation message"):
                return

    # ------------------------------------------------------------------------------ training

    async def _fit_and_upload(self, ins: FitIns, timing: RoundTiming, transport: ClientTransport) -> None:
        assert self.model is not None and self.spec is not None
        try:
            self.spec.check(ins.weights)
        except ValueError as exc:
            log.error("client %d: global model does not fit: %s", self.config.client_id, exc)
            return
        if self._warmed_up is not None:
            await self._warmed_up
        loop = asyncio.get_running_loop()
        started = loop.time()
        settings = TrainSettings(
            epochs=int(ins.config.get("epochs", 1) or 1),
            batch_size=int(ins.config.get("batch_size", 32) or 32),
            lr=float(ins.config.get("lr", 0.05) or 0.05),
            optimizer=str(ins.config.get("optimizer", "sgd")),
            momentum=float(ins.config.get("momentum", 0.0) or 0.0),
        )
        seed = int(ins.config.get("seed", 0) or 0) * 1009 + self.config.client_id
        global_flat = self.spec.flatten(ins.weights)
        sub: SubModel | None = None
        if self._pruner is not None:
            self._pruner.observe_global(global_flat)
            deadline = ins.config.get("deadline")
            assigned = ins.config.get("keep_ratio")
            choice = self._pruner.choose(
                float(deadline) if deadline else None,
                float(assigned) if isinstance(assigned, int | float) else None,
            )
            timing.extra.update(choice.record())
            timing.flop_ratio = choice.plan.flop_ratio if choice.selection is not None else 1.0
            if choice.selection is not None:
                sub = self._pruner.build(choice.selection, global_flat)
        result, delta, trained = await asyncio.to_thread(
            self._train, ins.weights, global_flat, sub, settings, seed
        )
        overrun = await self._emulate_slowdown(started, result.cpu_seconds)
        timing.fit_seconds = loop.time() - started
        timing.extra.update(
            train_loss=result.loss,
            cpu_seconds=result.cpu_seconds,
            emulation_overrun=overrun,
            slowdown=self.config.slowdown,
        )
        timing.upload_started_at = loop.time()
        if self._secure is not None and self._secure.round == ins.round:
            self._secure.set_update(ins.config, delta.astype(np.float64), trained, self.num_samples)
            await self._flush_secure(transport)
            return
        update = FitRes(
            round=ins.round,
            delta=self.spec.unflatten(delta),
            num_samples=self.num_samples,
            metrics={"train_loss": result.loss},
            trained_units=trained,
        )
        frames = encode(update)
        timing.bytes_up += frames_nbytes(frames)
        await self._send(transport, frames, f"upload of round {ins.round}")

    def _train(
        self,
        weights: dict[str, np.ndarray],
        global_flat: np.ndarray,
        sub: SubModel | None,
        settings: TrainSettings,
        seed: int,
    ) -> tuple[FitResult, np.ndarray, np.ndarray]:
        """Train the full model or the sub-model; return the full-size delta and the trained units."""
        assert self.model is not None and self.spec is not None
        if sub is not None:
            result = fit(sub.module, self.x, self.y, settings, seed=seed)
            inflated = sub.inflate()
            return result, inflated.delta, inflated.coverage > 0
        load_state(self.model, weights)
        result = fit(self.model, self.x, self.y, settings, seed=seed)
        delta = self.spec.flatten(state_of(self.model)) - global_flat
        return result, delta, np.ones(self.coverage_size, dtype=bool)

    def _set_up_pruning(self, settings: dict[str, Any]) -> None:
        mitigation = str(settings.get("mitigation", "none"))
        if mitigation not in PRUNING_MITIGATIONS:
            self._pruner = None
        elif self._pruner is None or self._pruner.mitigation != mitigation:
            assert self.model is not None
            self._pruner = ClientPruner(
                mitigation,
                self.model,
                self.dataset.input_shape,
                seed=self.run_config.seed * 7919 + self.config.client_id,
                straggler_fraction=float(settings.get("straggler_fraction") or 0.2),
                min_keep_ratio=float(settings.get("min_keep_ratio") or 0.5),
            )

    @property
    def coverage_size(self) -> int:
        return self._pruner.coverage_size if self._pruner is not None else 1

    def _build(self, name: str) -> None:
        self.model_name = name
        self.model = build_model(name, self.dataset)
        self.spec = ParamSpec.of(self.model)
        self._pruner = None

    def _warm_up(self) -> None:
        """One throwaway step on a copy of the model, so torch's one-time set-up is not timed as a fit."""
        import copy

        assert self.model is not None
        model = copy.deepcopy(self.model)
        fit(model, self.x[:2], self.y[:2], TrainSettings(epochs=1, batch_size=2), seed=0)

    async def _emulate_slowdown(self, started: float, cpu_seconds: float) -> bool:
        """Stretch the fit to ``slowdown`` x its CPU time; True when the wall time already exceeded that."""
        if self.config.slowdown <= 1.0:
            return False
        loop = asyncio.get_running_loop()
        target = started + self.config.slowdown * cpu_seconds
        if loop.time() > target:
            return True
        await asyncio.sleep(target - loop.time())
        return False

    def _on_receipt(self, msg: Receipt) -> None:
        timing = self._timing
        if timing is None or timing.round != msg.round:
            log.warning(
                "client %d: receipt for round %d that is not running: dropped",
                self.config.client_id,
                msg.round,
            )
            return
        loop = asyncio.get_running_loop()
        timing.upload_seconds = loop.time() - timing.upload_started_at
        row = {
            "round": timing.round,
            "download_seconds": timing.download_seconds,
            "fit_seconds": timing.fit_seconds,
            "upload_seconds": timing.upload_seconds,
            "bytes_up": timing.bytes_up,
            "bytes_down": timing.bytes_down,
            "keep_ratio": 1.0,
            "straggler": False,
            **timing.extra,
        }
        if self._pruner is not None:
            self._pruner.record(
                ClipTiming(
                    round=timing.round,
                    download_s=timing.download_seconds,
                    fit_s=timing.fit_seconds,
                    upload_s=timing.upload_seconds,
                    flop_ratio=timing.flop_ratio,
                )
            )
        self.rounds_done.append(timing.round)
        if self.run_dir is not None:
            self.run_dir.append_client(self.config.client_id, row)
        self._timing = None


# ------------------------------------------------------------------------------------------ CLI


def transport_factory(config: ClientConfig, curve: Any = None) -> Callable[[], ClientTransport]:
    """ZeroMQ transports for this client, with its bandwidth caps applied as ``--shape`` says.

    ``tc`` shapes this process's own network interface once (root, inside a clipfl namespace);
    ``app`` paces the transport with token buckets of the same semantics.
    """
    from clipfl.shaping import LinkSpec
    from transports.zmq import ZmqClientTransport

    link = LinkSpec.parse(config.upload_rate, config.download_rate)
    app = config.shape == "app"
    if not app and (link.upload_bps or link.download_bps):
        from urllib.parse import urlsplit

        from clipfl.shaping import interface_towards, require_root_netns, shape_own_interface

        require_root_netns()
        host = urlsplit(config.server).hostname or ""
        shape_own_interface(interface_towards(host), link.upload_bps, link.download_bps)

    def factory() -> ClientTransport:
        return ZmqClientTransport(
            heartbeat_timeout=config.heartbeat_timeout,
            upload_bps=link.upload_bps if app else None,
            download_bps=link.download_bps if app else None,
            curve=curve,
        )

    return factory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipfl.client",
        description="Run one clipfl client: it loads its share of the data, connects to the server "
        "and trains until the server ends the run.",
    )
    parser.add_argument("--config", help="TOML file with the same keys as the flags (flags win)")
    parser.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="CurveZMQ: this client's secret key file (from python -m clipfl.keys client DIR NAME)",
    )
    parser.add_argument("--curve-server-key", metavar="FILE", help="CurveZMQ: the server's public key file")
    logs.add_flags(parser)
    add_flags(parser, ClientConfig, title="client")
    add_flags(parser, RunConfig, title="federation (must match the server's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args)
    try:
        base = load_toml(args.config) if args.config else {}
        run = run_config(args, base)
        config = config_from_flags(ClientConfig, args, base)
        torch.set_num_threads(config.threads)
        run_dir = RunDir(config.run_dir) if config.run_dir else None
        curve = None
        if args.curve_secret or args.curve_server_key:
            if not (args.curve_secret and args.curve_server_key):
                raise ConfigError("CurveZMQ needs both --curve-secret and --curve-server-key")
            from transports.curve import CurveClient

            curve = CurveClient.from_files(args.curve_secret, args.curve_server_key)
        factory = transport_factory(config, curve)

        client = Client(run, config, factory, run_dir=run_dir)
        asyncio.run(client.run())
    except ClipflError as exc:
        print(f"clipfl.client: error: {exc}", file=sys.stderr)
        return 2
    except ConnectionLost as exc:
        print(f"clipfl.client: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
