"""The asyncio server: a thin shell that owns the sockets and the timers and drives ``ServerRound``.

Two tasks in one ``TaskGroup``: the *receiver* turns transport events into protocol steps (one
chokepoint, ``_step``, feeds the current round and flushes what it wants to send), and the
*trainer* runs the rounds. A round is a deadline on the event loop's clock: the trainer waits until
the round is done or its next deadline passes, woken by the receiver, never by polling. Everything
the server decides is the round engine's (``clipfl.engine``). A bad message is logged with its peer
and dropped; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from clipfl.aio import task_group
from clipfl.clip import UnitLayout
from clipfl.config import RunConfig
from clipfl.data import load_dataset
from clipfl.engine.records import RoundRecord, record_of_row, summarize
from clipfl.engine.server_round import ServerRound
from clipfl.engine.strategy import FedAvg, Strategy
from clipfl.engine.update import ClientInfo
from clipfl.errors import ConfigError, RemoteProtocolError
from clipfl.messages import NotRegistered, Register, Reject, Shutdown, TimingRelay, Welcome
from clipfl.models import build_model
from clipfl.params import ParamSpec, state_of
from clipfl.rundir import Checkpoint, RunDir
from clipfl.server.sessions import Sessions
from clipfl.trainer import Evaluator
from clipfl.wire import Limits, Message, decode, encode
from transports.base import PeerJoined, PeerLeft, Received, ServerTransport

__all__ = ["Server"]

log = logging.getLogger("clipfl.server")


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
        self.settings = config.run_settings()
        self.transport = transport
        self.run_dir = run_dir
        self.limits = limits or Limits()
        self._on_event = on_event or (lambda _: None)
        dataset = load_dataset(config.dataset, config.data_dir)
        torch.manual_seed(config.seed)
        model = build_model(config.model_name, dataset)
        self.spec = ParamSpec.of(model)
        # Clients that prune send one coverage entry per prunable unit plus the rest slot.
        self.layout = UnitLayout.of(model, dataset.input_shape) if self.settings.prunes else None
        self.coverage_size = self.layout.units + 1 if self.layout is not None else 1
        self.strategy = strategy or FedAvg(config, self.layout)
        self.weights = self.spec.flatten(state_of(model))
        self._evaluate = Evaluator.for_run(config, model, dataset)
        self.sessions = Sessions()
        self._enough_clients = asyncio.Event()
        self._progress = asyncio.Event()
        self._round: ServerRound | None = None
        self.records: list[RoundRecord] = []
        self._rows: list[dict[str, Any]] = []
        self.first_round = 1
        self._elapsed_before = 0.0
        self._started_at: float | None = None
        self._finished = False
        self.address: str | None = None
        self.dropped_messages = 0
        if resume is not None:
            self._resume_from(resume)

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
        if self.sessions.client_of(peer) is None:
            await self.transport.send(peer, encode(NotRegistered(reason="this server does not know you")))

    def _drop(self, peer: bytes, why: str) -> None:
        self.dropped_messages += 1
        client_id = self.sessions.client_of(peer)
        who = f"client {client_id}" if client_id is not None else f"peer {peer.hex()}"
        log.warning("dropped message from %s: %s", who, why)

    async def _on_frames(self, peer: bytes, frames: list[Any]) -> None:
        try:
            msg = decode(frames, self.limits)
        except RemoteProtocolError as exc:
            self._drop(peer, str(exc))
            return
        if isinstance(msg, Register):
            await self._register(peer, msg)
            return
        client_id = self.sessions.client_of(peer)
        if client_id is None:
            self._drop(peer, f"{type(msg).__name__} from a peer that has not registered")
        elif isinstance(msg, TimingRelay):
            await self._relay_timing(peer, client_id, msg)
        else:
            await self._step(lambda r: r.receive(client_id, msg))

    async def _relay_timing(self, peer: bytes, sender: int, msg: TimingRelay) -> None:
        """Forward a plain-mode timing report to the round's other clients (never under secagg)."""
        rnd = self._round
        relayed = rnd.relay_timing(sender, msg) if rnd is not None else None
        if relayed is None:
            self._drop(peer, "timing report outside a plain-mode round")
            return
        await self._send_all(relayed)

    async def _on_peer_left(self, peer: bytes, reason: str) -> None:
        client_id = self.sessions.unbind(peer)
        if client_id is not None:
            log.warning("client %d disconnected: %s", client_id, reason)
            if self._round is not None:
                await self._fail(client_id, f"disconnected ({reason})")

    async def _step(self, step: Callable[[ServerRound], None]) -> None:
        """The chokepoint: apply one step to the running round, then flush what it queued."""
        rnd = self._round
        if rnd is None:
            log.warning("message outside a round: dropped")
            self.dropped_messages += 1
            return
        step(rnd)
        await self._send_all(rnd.data_to_send())
        self._progress.set()

    async def _fail(self, client_id: int, reason: str) -> None:
        await self._step(lambda r: r.fail(client_id, reason))

    async def _send_all(self, messages: list[tuple[int, Message]]) -> None:
        for client_id, msg in messages:
            peer = self.sessions.peer_of(client_id)
            if peer is not None:
                await self.transport.send(peer, encode(msg))

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
        elif msg.num_samples > self.settings.max_weight:
            reason = (
                f"client claims {msg.num_samples} samples, above this federation's cap of "
                f"{self.settings.max_weight} (--max-weight)"
            )
        if reason is not None:
            log.warning("registration refused for %s: %s", peer.hex(), reason)
            await self.transport.send(peer, encode(Reject(reason=reason)))
            self.transport.disconnect(peer)
            return
        info = ClientInfo(msg.client_id, msg.num_samples, tuple(msg.capabilities))
        old_peer = self.sessions.peer_of(msg.client_id)
        for ended in self.sessions.bind(info, peer):
            if self._round is not None:
                await self._fail(ended, "registered again during the round")
        if old_peer is not None and old_peer != peer:
            self.transport.disconnect(old_peer)
        log.info("client %d registered (%d samples)", msg.client_id, msg.num_samples)
        await self.transport.send(peer, encode(Welcome(client_id=msg.client_id, settings=self.settings)))
        if len(self.sessions.connected()) >= c.clients:
            self._enough_clients.set()

    def connected(self) -> list[ClientInfo]:
        return self.sessions.connected()

    # -------------------------------------------------------------------------------- training

    async def _run_round(self, number: int, started: float) -> RoundRecord:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        rnd = ServerRound(
            number,
            self.connected(),
            config=self.config,
            settings=self.settings,
            strategy=self.strategy,
            spec=self.spec,
            coverage_size=self.coverage_size,
            global_weights=self.weights,
            clock=loop.time,
        )
        self._round = rnd
        try:
            await self._send_all(rnd.opening(lambda i: self.sessions.peer_of(i) is not None))
            while not rnd.done:
                self._progress.clear()
                try:
                    async with asyncio.timeout_at(rnd.next_deadline()):
                        await self._progress.wait()
                except TimeoutError:
                    rnd.expire(loop.time())
                    await self._send_all(rnd.data_to_send())
        finally:
            self._round = None
        outcome = rnd.close()
        self.weights = outcome.weights
        loss, accuracy = await asyncio.to_thread(self._evaluate, self.weights)
        now = loop.time()
        return RoundRecord(
            round=number,
            round_seconds=now - t0,
            elapsed_seconds=now - started,
            test_accuracy=accuracy,
            test_loss=loss,
            participants=list(outcome.participants),
            failures=outcome.failures,
            selected=list(outcome.selected),
            stage_seconds=outcome.stage_seconds,
            metrics=outcome.metrics,
        )

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
        for number in range(self.first_round, c.rounds + 1):
            record = await self._run_round(number, started)
            self.records.append(record)
            row = record.row({**self.transport_counters(), "clients_connected": len(self.connected())})
            self._rows.append(row)
            if self.run_dir is not None:
                # the checkpoint first, holding the row too: a crash between the two loses nothing
                extra = {"config": asdict(c), "strategy": self.strategy.state_dict(), "metrics": row}
                self.run_dir.save_checkpoint(number, self.spec.unflatten(self.weights), extra)
                self.run_dir.append_metrics(row)
            log.info(
                "round %d/%d: accuracy %.4f, loss %.4f, %.2f s, %d clients, %d dropped",
                number,
                c.rounds,
                record.test_accuracy,
                record.test_loss,
                record.round_seconds,
                len(record.participants),
                len(record.failures),
            )
            for stage, seconds in record.stage_seconds.items():
                self._on_event({"event": "stage", "round": number, "stage": stage, "seconds": seconds})
            self._on_event({"event": "round", **row})
        summary = summarize(self.records, c, loop.time() - started)
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
        self.records = [record_of_row(row) for row in rows]
        log.info("resuming after round %d of %d", ckpt.round, self.config.rounds)

    # ------------------------------------------------------------------ operations (read-only)

    def status(self) -> dict[str, Any]:
        rnd = self._round
        stage = "registering" if not self._enough_clients.is_set() else "evaluating"
        if rnd is not None:
            secure = getattr(rnd.collector, "stage", None)
            stage = secure.value.replace("-", "_") if secure is not None else "collecting"
        elif self._finished:
            stage = "finished"
        return {
            "round": rnd.round if rnd is not None else len(self.records),
            "stage": stage,
            "clients_connected": len(self.connected()),
            "clients_registered": len(self.sessions),
            "clients_dropped": len(rnd.failures) if rnd is not None else 0,
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
        return summarize(self.records, self.config, total_seconds)

    # -------------------------------------------------------------------------------- running

    async def serve(self, address: str) -> dict[str, Any]:
        """Bind ``address``, then ``run``."""
        self.address = await self.transport.bind(address)
        return await self.run()

    async def run(self) -> dict[str, Any]:
        """Train every round on the bound transport, tell the clients to stop, return the summary."""
        loss, accuracy = await asyncio.to_thread(self._evaluate, self.weights)  # also warms torch up
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
        for peer in self.sessions.peers():
            await self.transport.send(peer, bye)
