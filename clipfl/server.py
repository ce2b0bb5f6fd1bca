"""The federated-learning server: an asyncio shell around the round collectors and a strategy.

Two tasks in one ``TaskGroup``: the *receiver* turns transport events into protocol steps (one
chokepoint, ``_dispatch``, feeds the current round's collector and flushes what it wants to send),
and the *trainer* runs the rounds. A round is a deadline on the event loop's clock: the trainer
waits until the collector is done or the deadline passes, woken by the receiver, never by polling.
A bad message is logged with its peer and dropped; the server keeps serving.

Run ``python -m clipfl.server --help`` for the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipfl import logs
from clipfl.aio import task_group
from clipfl.clip import UnitLayout
from clipfl.collect import Collector, PlainCollector
from clipfl.config import RunConfig, add_flags, load_toml, run_config
from clipfl.data import load_dataset, subsample, to_tensors
from clipfl.errors import ClipflError, ConfigError, RemoteProtocolError
from clipfl.messages import (
    FitIns,
    NotRegistered,
    Register,
    Reject,
    RoundStart,
    Shutdown,
    TimingRelay,
    Welcome,
)
from clipfl.models import build_model
from clipfl.params import ParamSpec, load_state, state_of
from clipfl.pruning import PRUNING_MITIGATIONS
from clipfl.rundir import Checkpoint, RunDir, load_checkpoint
from clipfl.secagg import UpdateLayout
from clipfl.secure import SecureCollector, codec_settings, secagg_config
from clipfl.strategy import ClientInfo, FedAvg, FitPlan, Strategy, UpdateSum
from clipfl.training import evaluate
from clipfl.wire import Limits, Message, decode, encode
from transports.base import PeerJoined, PeerLeft, Received, ServerTransport

__all__ = ["ClientSession", "RoundRecord", "Server", "main"]

log = logging.getLogger("clipfl.server")


@dataclass(slots=True)
class ClientSession:
    """Connection bookkeeping for one registered client (kept apart from protocol state)."""

    info: ClientInfo
    peer: bytes | None


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
    extra: dict[str, float] = field(default_factory=dict)


class Server:
    def __init__(
        self,
        config: RunConfig,
        transport: ServerTransport,
        *,
        run_dir: RunDir | None = None,
        strategy: Strategy | None = None,
        limits: Limits | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        resume: Checkpoint | None = None,
    ) -> None:
        self.config = config
        self.transport = transport
        self.run_dir = run_dir
        self.limits = limits or Limits()
        self._on_event = on_event or (lambda _: None)
        self.dataset = load_dataset(config.dataset, config.data_dir)
        torch.manual_seed(config.seed)
        self.model = build_model(config.model_name, self.dataset)
        self.spec = ParamSpec.of(self.model)
        # Clients that prune send one coverage entry per prunable unit plus the rest slot.
        self.layout = (
            UnitLayout.of(self.model, self.dataset.input_shape)
            if config.mitigation in PRUNING_MITIGATIONS
            else None
        )
        self.coverage_size = self.layout.units + 1 if self.layout is not None else 1
        self.strategy = strategy or FedAvg(config, self.layout)
        self.first_round = 1
        self._elapsed_before = 0.0
        self.weights = self.spec.flatten(state_of(self.model))
        test_idx = subsample(np.arange(len(self.dataset.test)), config.max_test_samples, seed=config.seed)
        self._test = to_tensors(self.dataset.test, test_idx)
        self.sessions: dict[int, ClientSession] = {}
        self._peers: dict[bytes, int] = {}
        self._enough_clients = asyncio.Event()
        self._progress = asyncio.Event()
        self._collector: Collector | None = None
        self.records: list[RoundRecord] = []
        self._rows: list[dict[str, Any]] = []
        self._started_at: float | None = None
        self._finished = False
        if resume is not None:
            self._resume_from(resume)
        self.address: str | None = None
        self.dropped_messages = 0

    # ------------------------------------------------------------------------------ receiving

    async def _receive_forever(self) -> None:
        while True:
            event = await self.transport.recv()
            if isinstance(event, Received):
                await self._on_frames(event.peer, event.frames)
            elif isinstance(event, PeerLeft):
                await self._on_peer_left(event.peer, event.reason)
            elif isinstance(event, PeerJoined):
                await self._on_peer_joined(event.peer)

    async def _on_peer_joined(self, peer: bytes) -> None:
        """A connection this server does not know: ask it to register.

        A new client registers anyway (it ignores this until it is welcomed); a client of a server
        that restarted (``--resume``) would otherwise go on with a round this server never started.
        """
        log.debug("peer %s connected", peer.hex())
        if peer not in self._peers:
            await self.transport.send(peer, encode(NotRegistered(reason="this server does not know you")))

    def _label(self, peer: bytes) -> str:
        cid = self._peers.get(peer)
        return f"client {cid}" if cid is not None else f"peer {peer.hex()}"

    def _drop(self, peer: bytes, why: str) -> None:
        self.dropped_messages += 1
        log.warning("dropped message from %s: %s", self._label(peer), why)

    async def _on_frames(self, peer: bytes, frames: list[Any]) -> None:
        try:
            msg = decode(frames, self.limits)
        except RemoteProtocolError as exc:
            self._drop(peer, str(exc))
            return
        if isinstance(msg, Register):
            await self._register(peer, msg)
            return
        client_id = self._peers.get(peer)
        if client_id is None:
            self._drop(peer, f"{type(msg).__name__} from a peer that has not registered")
            return
        if isinstance(msg, TimingRelay):
            await self._relay_timing(client_id, msg)
            return
        await self._dispatch(lambda c: c.receive(client_id, msg))

    async def _relay_timing(self, sender: int, msg: TimingRelay) -> None:
        """Forward a plain-mode timing report to the round's other clients (never under secagg)."""
        collector = self._collector
        if self.config.secagg != "off" or collector is None or msg.round != collector.round:
            self._drop(self.sessions[sender].peer or b"", "timing report outside a plain-mode round")
            return
        frames = encode(TimingRelay(round=msg.round, sender=sender, payload=msg.payload))
        for client_id in sorted(collector.expected - {sender}):
            peer = self.sessions[client_id].peer
            if peer is not None:
                await self.transport.send(peer, frames)

    async def _on_peer_left(self, peer: bytes, reason: str) -> None:
        client_id = self._peers.pop(peer, None)
        if client_id is None:
            return
        session = self.sessions.get(client_id)
        if session is not None and session.peer == peer:
            session.peer = None
        log.warning("client %d disconnected: %s", client_id, reason)
        if self._collector is not None:
            await self._dispatch(lambda c: c.fail(client_id, f"disconnected ({reason})"))

    async def _dispatch(self, step: Callable[[Collector], None]) -> None:
        """The chokepoint: apply one step to the round's collector, then flush what it queued."""
        collector = self._collector
        if collector is None:
            log.warning("message outside a round: dropped")
            self.dropped_messages += 1
            return
        step(collector)
        await self._flush(collector)
        self._progress.set()

    async def _flush(self, collector: Collector) -> None:
        for client_id, msg in collector.data_to_send():
            await self.send(client_id, msg)

    async def send(self, client_id: int, msg: Message) -> None:
        session = self.sessions.get(client_id)
        if session is None or session.peer is None:
            return
        await self.transport.send(session.peer, encode(msg))

    # ---------------------------------------------------------------------------- registration

    async def _register(self, peer: bytes, msg: Register) -> None:
        c = self.config
        reason = None
        if msg.client_id >= c.clients:
            reason = (
                f"client id {msg.client_id} is outside 0..{c.clients - 1}; "
                f"start it with --client-id below {c.clients}"
            )
        elif msg.dataset != c.dataset:
            reason = f"client holds dataset {msg.dataset!r}, this federation trains on {c.dataset!r}"
        if reason is not None:
            log.warning("registration refused for %s: %s", peer.hex(), reason)
            await self.transport.send(peer, encode(Reject(reason=reason)))
            self.transport.disconnect(peer)
            return
        old = self.sessions.get(msg.client_id)
        if old is not None and old.peer is not None and old.peer != peer:
            self._peers.pop(old.peer, None)
            self.transport.disconnect(old.peer)
            if self._collector is not None:
                await self._dispatch(lambda c: c.fail(msg.client_id, "reconnected during the round"))
        self._peers[peer] = msg.client_id
        info = ClientInfo(msg.client_id, msg.num_samples, tuple(msg.capabilities))
        self.sessions[msg.client_id] = ClientSession(info, peer)
        log.info("client %d registered (%d samples)", msg.client_id, msg.num_samples)
        await self.transport.send(peer, encode(Welcome(client_id=msg.client_id, settings=self._settings())))
        if len(self.connected()) >= c.clients:
            self._enough_clients.set()

    def _settings(self) -> dict[str, Any]:
        c = self.config
        return {
            "model": c.model_name,
            "rounds": c.rounds,
            "mitigation": c.mitigation,
            "straggler_fraction": c.straggler_fraction,
            "min_keep_ratio": c.min_keep_ratio,
            **c.secagg_settings(),
        }

    def connected(self) -> list[ClientInfo]:
        return [s.info for s in self.sessions.values() if s.peer is not None]

    # -------------------------------------------------------------------------------- training

    async def _wait_until_done(self, collector: Collector, round_deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while not collector.done:
            self._progress.clear()
            deadline = collector.next_deadline(round_deadline)
            try:
                async with asyncio.timeout_at(deadline):
                    await self._progress.wait()
            except TimeoutError:
                collector.expire(loop.time())
                await self._flush(collector)

    def _collector_for(self, rnd: int, plan: FitPlan, weights: dict[int, float]) -> tuple[Collector, FitPlan]:
        """The round's collector: in the clear, or through secure aggregation."""
        c = self.config
        clock = asyncio.get_running_loop().time
        collector: Collector
        if c.secagg == "off":
            collector = PlainCollector(
                rnd, plan.clients, weights, self.spec, coverage_size=self.coverage_size, clock=clock
            )
            return collector, plan
        max_weight = max(int(weights[i]) for i in plan.clients)
        config = {**plan.config, **codec_settings(len(plan.clients), max_weight, c.clip_range)}
        plan = FitPlan(plan.clients, config, plan.deadline_seconds, plan.per_client)
        collector = SecureCollector(
            rnd,
            plan.clients,
            config=secagg_config(c.secagg_settings()),
            fit_config=config,
            layout=UpdateLayout(self.spec.size, self.coverage_size),
            clock=clock,
            unmask_timeout=c.unmask_timeout,
        )
        return collector, plan

    async def _run_round(self, rnd: int, started: float) -> RoundRecord:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        clients = self.connected()
        plan = self.strategy.configure_fit(rnd, clients)
        weights = {x.client_id: self.strategy.client_weight(x) for x in clients}
        failures: dict[int, str] = {}
        update: UpdateSum | None = None
        stats: dict[str, float] = {}
        if self.config.secagg != "off" and len(plan.clients) < 2:
            failures = dict.fromkeys(plan.clients, "secure aggregation needs at least 2 clients in a round")
        else:
            collector, plan = self._collector_for(rnd, plan, weights)
            self._collector = collector
            try:
                await self._start_round(rnd, plan, collector)
                await self._wait_until_done(collector, t0 + plan.deadline_seconds)
            finally:
                self._collector = None
            update, failures, stats = collector.outcome(), collector.failures, collector.statistics()
            self.strategy.record_arrivals(rnd, collector.arrivals, [i for i in plan.clients if i in failures])
            stats.update(self._coverage_metrics(update))
        self.weights = self.strategy.aggregate_fit(rnd, self.weights, update, failures)
        loss, accuracy = await asyncio.to_thread(self._evaluate)
        now = loop.time()
        return RoundRecord(
            round=rnd,
            round_seconds=now - t0,
            elapsed_seconds=now - started,
            test_accuracy=accuracy,
            test_loss=loss,
            participants=list(update.contributors) if update else [],
            failures=dict(sorted(failures.items())),
            selected=list(plan.clients),
            extra={**stats, **(update.metrics if update else {})},
        )

    def _coverage_metrics(self, update: UpdateSum | None) -> dict[str, float]:
        """What the summed coverage reveals: the weighted mean fraction of units that were trained."""
        if update is None or update.coverage_sum is None or update.weight_sum <= 0:
            return {}
        units = update.coverage_sum[:-1]
        return {"mean_keep_ratio": float(units.mean() / update.weight_sum)}

    async def _start_round(self, rnd: int, plan: FitPlan, collector: Collector) -> None:
        """Announce the round, send what the collector queued (secure aggregation's setup), then the model."""
        announce = encode(RoundStart(round=rnd))
        for client_id in plan.clients:
            peer = self.sessions[client_id].peer
            if peer is None:
                collector.fail(client_id, "disconnected before the round started")
            else:
                await self.transport.send(peer, announce)
        await self._flush(collector)
        weights = self.spec.unflatten(self.weights)
        shared = encode(FitIns(round=rnd, weights=weights, config=plan.config))
        for client_id in plan.clients:
            peer = self.sessions[client_id].peer
            if peer is None:
                continue
            extra = plan.per_client.get(client_id)
            if extra:  # same tensor frames, its own envelope
                frames = encode(FitIns(round=rnd, weights=weights, config={**plan.config, **extra}))
                await self.transport.send(peer, frames)
            else:
                await self.transport.send(peer, shared)

    def _evaluate(self) -> tuple[float, float]:
        load_state(self.model, self.spec.unflatten(self.weights))
        return evaluate(self.model, *self._test)

    async def _train(self) -> dict[str, Any]:
        c = self.config
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(c.registration_timeout):
                await self._enough_clients.wait()
        except TimeoutError:
            raise ConfigError(
                f"only {len(self.connected())} of {c.clients} clients registered within "
                f"{c.registration_timeout:g} s; start the missing clients or lower --clients"
            ) from None
        started = loop.time() - self._elapsed_before
        self._started_at = time.time() - self._elapsed_before
        self._on_event({"event": "start", "clients": len(self.connected()), "rounds": c.rounds})
        for rnd in range(self.first_round, c.rounds + 1):
            record = await self._run_round(rnd, started)
            self.records.append(record)
            row = asdict(record)
            row.update(row.pop("extra"))
            row.update(self.transport_counters())
            row["clients_connected"] = len(self.connected())
            self._rows.append(row)
            if self.run_dir is not None:
                # the checkpoint first, holding the row too: a crash between the two loses nothing
                extra = {"config": asdict(c), "strategy": self.strategy.state_dict(), "metrics": row}
                self.run_dir.save_checkpoint(rnd, self.spec.unflatten(self.weights), extra)
                self.run_dir.append_metrics(row)
            log.info(
                "round %d/%d: accuracy %.4f, loss %.4f, %.2f s, %d clients, %d dropped",
                rnd,
                c.rounds,
                record.test_accuracy,
                record.test_loss,
                record.round_seconds,
                len(record.participants),
                len(record.failures),
            )
            for key, seconds in row.items():
                if key.startswith("secagg_") and key.endswith("_seconds") and key != "secagg_setup_seconds":
                    stage = key.removeprefix("secagg_").removesuffix("_seconds")
                    self._on_event({"event": "stage", "round": rnd, "stage": stage, "seconds": seconds})
            self._on_event({"event": "round", **row})
        summary = self.summary(loop.time() - started)
        self._finished = True
        if self.run_dir is not None:
            self.run_dir.write_json("summary.json", summary)
        return summary

    def _resume_from(self, ckpt: Checkpoint) -> None:
        """Continue after the checkpoint's round: its model, strategy state and metrics so far."""
        try:
            self.spec.check(ckpt.state)
        except ValueError as exc:
            raise ConfigError(
                f"--resume: the checkpoint does not fit model {self.config.model_name}: {exc}"
            ) from None
        if ckpt.round >= self.config.rounds:
            raise ConfigError(f"--resume: the run already completed its {ckpt.round} rounds; raise --rounds")
        self.weights = self.spec.flatten(ckpt.state)
        self.strategy.load_state_dict(ckpt.strategy)
        self.first_round = ckpt.round + 1
        rows = list(ckpt.rows)
        if ckpt.metrics_row and (not rows or rows[-1]["round"] < ckpt.round):
            rows.append(ckpt.metrics_row)  # killed between the checkpoint and the metrics line
            if self.run_dir is not None:
                self.run_dir.append_metrics(ckpt.metrics_row)
        self._rows = rows
        self._elapsed_before = float(rows[-1].get("elapsed_seconds", 0.0)) if rows else 0.0
        for row in rows:
            self.records.append(
                RoundRecord(
                    round=int(row["round"]),
                    round_seconds=float(row.get("round_seconds", 0.0)),
                    elapsed_seconds=float(row.get("elapsed_seconds", 0.0)),
                    test_accuracy=float(row.get("test_accuracy", 0.0)),
                    test_loss=float(row.get("test_loss") or 0.0),
                    participants=list(row.get("participants", [])),
                    failures={int(k): str(v) for k, v in dict(row.get("failures", {})).items()},
                    selected=list(row.get("selected", [])),
                )
            )
        log.info("resuming after round %d of %d", ckpt.round, self.config.rounds)

    # ------------------------------------------------------------------ operations (read-only)

    def status(self) -> dict[str, Any]:
        collector = self._collector
        stage = "registering" if not self._enough_clients.is_set() else "evaluating"
        if collector is not None:
            secure = getattr(collector, "stage", None)
            stage = secure.value.replace("-", "_") if secure is not None else "collecting"
        elif self._finished:
            stage = "finished"
        return {
            "round": collector.round if collector is not None else len(self.records),
            "stage": stage,
            "clients_connected": len(self.connected()),
            "clients_registered": len(self.sessions),
            "clients_dropped": len(collector.failures) if collector is not None else 0,
            "rounds_total": self.config.rounds,
            "config": {**asdict(self.config), "model": self.config.model_name},
            "started_at": self._started_at,
        }

    def rounds(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def counters(self) -> dict[str, float]:
        return {
            "rounds_completed": len(self.records),
            "dropouts_total": sum(len(r.failures) for r in self.records),
            "clients_connected": len(self.connected()),
            **self.transport_counters(),
        }

    def transport_counters(self) -> dict[str, int]:
        s = self.transport.statistics()
        return {"bytes_in": s.bytes_in, "bytes_out": s.bytes_out, "dropped_messages": self.dropped_messages}

    def summary(self, total_seconds: float) -> dict[str, Any]:
        accs = [r.test_accuracy for r in self.records]
        target = self.config.target_accuracy
        reached = [
            r.elapsed_seconds for r in self.records if target is not None and r.test_accuracy >= target
        ]
        return {
            "rounds": len(self.records),
            "total_seconds": total_seconds,
            "final_accuracy": accs[-1] if accs else None,
            "best_accuracy": max(accs) if accs else None,
            "mean_round_seconds": float(np.mean([r.round_seconds for r in self.records])) if accs else None,
            "final_loss": self.records[-1].test_loss if accs else None,
            "target_accuracy": target,
            "time_to_target_seconds": reached[0] if reached else None,
            "dataset": self.config.dataset,
            "model": self.config.model_name,
            "clients": self.config.clients,
            "secagg": self.config.secagg,
            "mitigation": self.config.mitigation,
        }

    async def serve(self, address: str) -> dict[str, Any]:
        """Bind ``address``, then ``run``."""
        self.address = await self.transport.bind(address)
        return await self.run()

    async def run(self) -> dict[str, Any]:
        """Train every round on the bound transport, tell the clients to stop, return the summary."""
        loss, accuracy = await asyncio.to_thread(self._evaluate)  # also warms torch up before round 1
        log.info("initial model: accuracy %.4f, loss %.4f", accuracy, loss)
        log.info("listening on %s", self.address)
        self._on_event({"event": "listening", "address": self.address})
        if self.run_dir is not None:
            self.run_dir.write_json("config.json", {**asdict(self.config), "model": self.config.model_name})
        summary: dict[str, Any] = {}
        async with task_group() as tg:
            receiver = tg.create_task(self._receive_forever(), name="receiver")
            try:
                summary = await self._train()
            finally:
                with contextlib.suppress(Exception):
                    await self._say_goodbye()
                receiver.cancel()
        self._on_event({"event": "summary", **summary})
        return summary

    async def _say_goodbye(self) -> None:
        bye = encode(Shutdown(reason="training finished"))
        for session in self.sessions.values():
            if session.peer is not None:
                await self.transport.send(session.peer, bye)


# ------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipfl.server",
        description="Run a clipfl federated-learning server: it waits for --clients clients, trains "
        "--rounds rounds and writes the run directory.",
    )
    parser.add_argument(
        "--bind",
        default="tcp://127.0.0.1:7700",
        help="ZeroMQ address to bind; port 0 picks a free one (default: tcp://127.0.0.1:7700)",
    )
    parser.add_argument("--run-dir", help="directory for metrics, checkpoints and the summary")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR after its last completed round (its config is reused)",
    )
    parser.add_argument("--config", help="TOML file with the same keys as the flags (flags win)")
    parser.add_argument(
        "--events", action="store_true", help="print one JSON object per event on stdout (for the launcher)"
    )
    parser.add_argument(
        "--http", metavar="HOST:PORT", help="serve the HTTP API and live dashboard there (off by default)"
    )
    parser.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="CurveZMQ: the server's secret key file (from python -m clipfl.keys server DIR)",
    )
    parser.add_argument(
        "--curve-allow", metavar="DIR", help="CurveZMQ: directory of the allowed client public keys (*.key)"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=10.0,
        help="seconds of silence after which a client counts as gone (default: 10)",
    )
    logs.add_flags(parser)
    add_flags(parser, RunConfig, title="federation")
    return parser


async def run_server(
    config: RunConfig,
    bind: str,
    run_dir: RunDir | None,
    *,
    events: bool,
    heartbeat_timeout: float,
    http: str | None = None,
    curve: Any = None,
    resume: Checkpoint | None = None,
) -> dict[str, Any]:
    from clipfl.ops.api import parse_http_address, start_api
    from clipfl.ops.events import EventBus
    from transports.zmq import ZmqServerTransport

    bus = EventBus()

    def emit(event: dict[str, Any]) -> None:
        bus.publish(event)
        if events:
            print(json.dumps(event, default=str), flush=True)

    transport = ZmqServerTransport(heartbeat_timeout=heartbeat_timeout, curve=curve)
    async with transport:
        server = Server(config, transport, run_dir=run_dir, on_event=emit, resume=resume)
        runner = None
        if http:
            runner, port = await start_api(server, bus, *parse_http_address(http))
            host = parse_http_address(http)[0]
            log.info("HTTP API and dashboard on http://%s:%d/", host, port)
            emit({"event": "http", "url": f"http://{host}:{port}/"})
        try:
            return await server.serve(bind)
        finally:
            if runner is not None:
                await runner.cleanup()
            bus.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args)
    try:
        base = load_toml(args.config) if args.config else {}
        resume = None
        if args.resume:
            if args.run_dir and Path(args.run_dir).resolve() != Path(args.resume).resolve():
                raise ConfigError(
                    "--resume continues in its own directory: drop --run-dir or give the same one"
                )
            resume = load_checkpoint(args.resume)
            saved = {k: v for k, v in resume.config.items() if k in {f.name for f in fields(RunConfig)}}
            base = {**saved, **base}
            args.run_dir = args.resume
        config = run_config(args, base)
        run_dir = RunDir(args.run_dir) if args.run_dir else None
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        curve = None
        if args.curve_secret or args.curve_allow:
            if not (args.curve_secret and args.curve_allow):
                raise ConfigError("CurveZMQ needs both --curve-secret and --curve-allow")
            from transports.curve import CurveServer

            curve = CurveServer.from_files(args.curve_secret, args.curve_allow)
        summary = asyncio.run(
            run_server(
                config,
                args.bind,
                run_dir,
                events=args.events,
                heartbeat_timeout=args.heartbeat_timeout,
                http=args.http,
                curve=curve,
                resume=resume,
            )
        )
    except ClipflError as exc:
        print(f"clipfl.server: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    log.info("done in %.1f s: final accuracy %s", time.perf_counter() - t0, summary.get("final_accuracy"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
