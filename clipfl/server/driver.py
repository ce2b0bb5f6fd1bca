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

import numpy as np
import torch

from clipfl.aio import task_group
from clipfl.clip import UnitLayout
from clipfl.config import RunConfig
from clipfl.data import load_dataset
from clipfl.droplog import Drop, DropLog
from clipfl.engine.records import RoundRecord, summarize
from clipfl.engine.server_round import RoundOutcome, ServerRound
from clipfl.engine.strategy import FedAvg, Strategy
from clipfl.engine.update import ClientInfo
from clipfl.errors import ConfigError
from clipfl.messages import NotRegistered, Register, Reject, Shutdown, TimingRelay, Welcome
from clipfl.models import build_model
from clipfl.params import ParamSpec, state_of
from clipfl.rundir import Checkpoint, RunDir
from clipfl.secagg import Roster
from clipfl.server.resume import resume as resume_run
from clipfl.server.sessions import Sessions
from clipfl.trainer import Evaluator
from clipfl.wire import DecodeError, Limits, Message, decode, encode
from transports.base import (
    PeerJoined,
    PeerLeft,
    Received,
    Rejected,
    ServerEvent,
    ServerTransport,
    frames_nbytes,
)

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
        roster: Roster | None = None,
    ) -> None:
        self.config = config
        self.settings = config.run_settings()
        if self.settings.secagg is not None and roster is None and not config.secagg_trust_server:
            raise ConfigError(
                "secure aggregation against a malicious server needs the roster: give --roster and "
                "--operator-key (python -m clipfl.keys roster), or --secagg-trust-server"
            )
        self.roster = roster
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
        self._droplog = DropLog()
        if resume is not None:
            state = resume_run(resume, self.spec, config, run_dir)
            self.weights, self.first_round = state.weights, state.first_round
            self.strategy.load_state_dict(state.strategy_state)
            self._rows, self.records = state.rows, state.records
            self._elapsed_before = state.elapsed_seconds

    # ------------------------------------------------------------------------------ receiving

    async def _receive_forever(self) -> None:
        while True:
            event = await self.transport.recv()
            try:
                await self._handle(event)
            except Exception as exc:  # one peer's message must never end the server: contain it
                why = f"internal error {type(exc).__name__}: {exc}"
                self._drop(Drop(peer=event.peer, reason=why, frames=0, nbytes=0))
                log.debug("traceback of the contained error", exc_info=True)
                client_id = self.sessions.client_of(event.peer)
                if client_id is not None and self._round is not None:
                    await self._fail(client_id, f"its message raised {type(exc).__name__}")

    async def _handle(self, event: ServerEvent) -> None:
        if isinstance(event, Received):
            await self._on_frames(event.peer, event.frames, event.credential)
        elif isinstance(event, Rejected):  # refused by the transport as its frames arrived
            self._drop(Drop(peer=event.peer, reason=event.reason, frames=event.frames, nbytes=event.nbytes))
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

    def _drop(self, drop: Drop) -> None:
        """Count a dropped message; log it in one bounded line, rate-limited per peer."""
        self.dropped_messages += 1
        for line in self._droplog.record(drop):
            log.warning("%s", line)

    def _dropped(self, peer: bytes, frames: list[Any], why: str, kind: str | None) -> None:
        nbytes = frames_nbytes(frames)
        self._drop(Drop(peer=peer, reason=why, frames=len(frames), nbytes=nbytes, message_type=kind))

    async def _on_frames(self, peer: bytes, frames: list[Any], credential: str | None = None) -> None:
        try:
            msg = decode(frames, self.limits)
        except DecodeError as exc:
            self._dropped(peer, frames, str(exc), exc.message_type)
            return
        if isinstance(msg, Register):
            await self._register(peer, msg, credential, frames_nbytes(frames))
            return
        client_id = self.sessions.client_of(peer)
        if client_id is None:
            self._dropped(peer, frames, "from a peer that has not registered", type(msg).__name__)
        elif isinstance(msg, TimingRelay):
            if not await self._relay_timing(client_id, msg):
                self._dropped(peer, frames, "timing report outside a plain-mode round", "TimingRelay")
        else:
            await self._step(lambda r: r.receive(client_id, msg))

    async def _relay_timing(self, sender: int, msg: TimingRelay) -> bool:
        """Forward a plain-mode timing report to the round's other clients (never under secagg)."""
        rnd = self._round
        relayed = rnd.relay_timing(sender, msg) if rnd is not None else None
        if relayed is None:
            return False
        await self._send_all(relayed)
        return True

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

    async def _register(self, peer: bytes, msg: Register, credential: str | None, nbytes: int) -> None:
        c = self.config
        reason = None
        retryable = False
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
        elif (conflict := self._key_conflict(msg.client_id, credential)) is not None:
            reason = conflict
        elif not self.sessions.may_take(msg.client_id, peer, msg.token, credential):
            reason = (
                f"client {msg.client_id} is connected on another connection and this registration "
                "does not carry its session token; stop the other process or wait for it to time out"
            )
            retryable = True  # a restarted client waits for its old connection to time out
        if reason is not None:  # logged through the drop log: a flood of refusals cannot flood the log
            why = f"registration refused: {reason}"
            self._drop(Drop(peer=peer, reason=why, frames=1, nbytes=nbytes, message_type="Register"))
            await self.transport.send(peer, encode(Reject(reason=reason, retryable=retryable)))
            self.transport.disconnect(peer)
            return
        info = ClientInfo(msg.client_id, msg.num_samples, tuple(msg.capabilities))
        old_peer = self.sessions.peer_of(msg.client_id)
        for ended in self.sessions.bind(info, peer, credential):
            if self._round is not None:
                await self._fail(ended, "registered again during the round")
        if old_peer is not None and old_peer != peer:
            self.transport.disconnect(old_peer)
        log.info("client %d registered (%d samples)", msg.client_id, msg.num_samples)
        token = self.sessions.token_of(msg.client_id)
        welcome = Welcome(client_id=msg.client_id, settings=self.settings, token=token)
        await self.transport.send(peer, encode(welcome))
        if len(self.sessions.connected()) >= c.clients:
            self._enough_clients.set()

    def _key_conflict(self, client_id: int, credential: str | None) -> str | None:
        """Why the CurveZMQ key ``credential`` may not register as ``client_id``, or None: the roster's
        binding where it names keys, else the first id the key registered as (one key, one id)."""
        if credential is not None and self.roster is not None:
            owner = self.roster.client_for_curve_key(credential.encode())
            if owner is not None and owner != client_id:
                return f"the roster binds this CurveZMQ key to client {owner}, not {client_id}"
        return self.sessions.key_conflict(client_id, credential)

    def connected(self) -> list[ClientInfo]:
        return self.sessions.connected()

    # -------------------------------------------------------------------------------- training

    async def _run_round(self, number: int) -> tuple[RoundOutcome, float, float]:
        """Run round ``number`` to its close; its outcome, start and close times (loop clock)."""
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
            roster=self.roster,
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
        return outcome, t0, loop.time()

    async def _test_and_record(
        self,
        number: int,
        outcome: RoundOutcome,
        weights: np.ndarray,
        strategy_state: dict[str, Any],
        t0: float,
        closed: float,
        started: float,
    ) -> None:
        """Test round ``number``'s model, then record the round: checkpoint, metrics row, events.

        The round ends when its model is ready under ``eval_overlap`` (the test runs beside the next
        round), else once it is tested. ``weights`` and ``strategy_state`` are the round's own, taken
        at its close: under ``eval_overlap`` the next round may close before this test ends."""
        c = self.config
        loop = asyncio.get_running_loop()
        loss, accuracy = await asyncio.to_thread(self._evaluate, weights)
        end = closed if c.eval_overlap else loop.time()
        record = outcome.record(
            number, round_seconds=end - t0, elapsed_seconds=end - started, loss=loss, accuracy=accuracy
        )
        self.records.append(record)
        row = record.row({**self.transport_counters(), "clients_connected": len(self.connected())})
        self._rows.append(row)
        if self.run_dir is not None:
            # the checkpoint first, holding the row too: a crash between the two loses nothing
            extra = {"config": asdict(c), "strategy": strategy_state, "metrics": row}
            self.run_dir.save_checkpoint(number, self.spec.unflatten(weights), extra)
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
        testing: asyncio.Task[None] | None = None  # the previous round's test, under eval_overlap
        try:
            for number in range(self.first_round, c.rounds + 1):
                outcome, t0, closed = await self._run_round(number)
                if testing is not None:
                    await testing  # rounds are recorded in order
                state = self.strategy.state_dict()
                test = self._test_and_record(number, outcome, self.weights, state, t0, closed, started)
                if c.eval_overlap:
                    testing = asyncio.create_task(test, name=f"test-round-{number}")
                else:
                    testing = None
                    await test
            if testing is not None:
                await testing
        finally:
            if testing is not None and not testing.done():
                testing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await testing
        summary = summarize(self.records, c, loop.time() - started)
        for line in self._droplog.flush():
            log.warning("%s", line)
        self._finished = True
        if self.run_dir is not None:
            self.run_dir.write_json("summary.json", summary)
        return summary

    # ----------------------------------------------------------- read-only state (``OpsView``)

    @property
    def current_round(self) -> ServerRound | None:
        return self._round

    @property
    def all_registered(self) -> bool:
        return self._enough_clients.is_set()

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def started_at(self) -> float | None:
        """UNIX time the first round started (shifted back by a resumed run's elapsed time)."""
        return self._started_at

    def rows(self) -> list[dict[str, Any]]:
        """The ``metrics.jsonl`` rows so far, oldest first."""
        return list(self._rows)

    def transport_counters(self) -> dict[str, int]:
        s = self.transport.statistics()
        return {
            "bytes_in": s.bytes_in,
            "bytes_out": s.bytes_out,
            "dropped_messages": self.dropped_messages,
            "rejected_bytes": s.rejected_bytes,
        }

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
