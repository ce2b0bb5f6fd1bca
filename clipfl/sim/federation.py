"""A federation on a virtual clock: the live round engine driven by a discrete-event loop.

The server side runs ``ServerRound`` per round with the virtual clock as its clock; each client is
the live ``ClientEngine`` on a simulated device (``clipfl.sim.client``). Every message is encoded
with the wire codec to learn its size and crosses the simulated links (``clipfl.sim.network``); every
fit runs the real training and lasts what its MACs cost on its device; every deadline is the one the
engine names (``next_deadline``). Nothing is decided here that the live driver does not also leave
to the engine: this module only moves messages and time, as ``clipfl.server.driver`` and
``clipfl.client.session`` do with sockets and the event loop.

Events run in (time, scheduling order): two runs of one scenario are the same run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import nacl.signing
import numpy as np
import torch

from clipfl.clip import UnitLayout
from clipfl.clip.flops import flop_ratio, forward_macs
from clipfl.config import RunConfig
from clipfl.engine.client_round import ClientEngine
from clipfl.engine.records import RoundRecord, summarize
from clipfl.engine.secure_upload import Identity
from clipfl.engine.server_round import RoundOutcome, ServerRound
from clipfl.engine.strategy import FedAvg, Strategy
from clipfl.engine.update import ClientInfo
from clipfl.errors import ConfigError
from clipfl.messages import TOKEN_BYTES, TimingRelay, Welcome
from clipfl.models import build_model
from clipfl.params import ParamSpec, state_of
from clipfl.rundir import RunDir
from clipfl.secagg import MODELLED, REAL, Primitives, Roster, RosterEntry, RoundSetup
from clipfl.sim.backends import FitBackend, LocalBackend
from clipfl.sim.client import SimClient
from clipfl.sim.costs import CostModel
from clipfl.sim.devices import DeviceProfile
from clipfl.sim.events import (
    SERVER,
    Arrival,
    ClientReady,
    DeadlineFired,
    Event,
    EventQueue,
    FitFinished,
    ServerReady,
    VirtualClock,
)
from clipfl.sim.network import Network, message_nbytes
from clipfl.trainer import ClientData, Evaluator, LocalTrainer
from clipfl.wire import Message

__all__ = ["Federation", "SimulationError"]

log = logging.getLogger("clipfl.sim")

_MAX_EVENTS_PER_ROUND = 10_000_000
"""A guard against a bug that would schedule events forever; no real round comes near it."""


SECAGG_COSTS: dict[str, Primitives] = {"real": REAL, "model": MODELLED}
"""How a simulation runs secure aggregation's cryptography: ``real`` (the default) runs it all;
``model`` keeps every message and decision but replaces each operation by a hash-sized stand-in
(``clipfl.secagg.primitives``). Either way its time is charged from the cost model, so the results are
the same; ``model`` only makes 10,000-client federations affordable."""


def secagg_primitives(secagg_cost: str) -> Primitives:
    """The cryptography of ``--secagg-cost``; ``ConfigError`` for an unknown name."""
    try:
        return SECAGG_COSTS[secagg_cost]
    except (KeyError, TypeError):
        raise ConfigError(
            f"secagg_cost must be one of {', '.join(SECAGG_COSTS)}, got {secagg_cost!r}"
        ) from None


class SimulationError(ConfigError):
    """The simulated federation cannot go on as configured (a round no client can finish)."""


class SimulationStopped(Exception):
    """The caller asked the simulation to stop (``stop`` of ``Federation.run``); the run is unfinished."""


class Federation:
    """One simulated federation: its server round engine, its clients, its links and its clock."""

    def __init__(
        self,
        config: RunConfig,
        devices: Mapping[int, DeviceProfile],
        shares: Mapping[int, ClientData],
        *,
        costs: CostModel,
        server_bps: float | None = None,
        run_dir: RunDir | None = None,
        strategy: Strategy | None = None,
        eval_threads: int | None = None,
        train: bool = True,
        backend: FitBackend | None = None,
        device: str = "cpu",
        secagg_cost: str = "real",
    ) -> None:
        if sorted(devices) != list(range(config.clients)):
            raise ConfigError(
                f"devices: expected one device profile per client id 0..{config.clients - 1}, "
                f"got ids {sorted(devices)[:5]}{'...' if len(devices) > 5 else ''}"
            )
        self.config = config
        self._primitives = secagg_primitives(secagg_cost)
        self._eval_threads = eval_threads
        self.settings = config.run_settings()
        self.costs = costs
        self.run_dir = run_dir
        dataset = shares[0].dataset
        torch.manual_seed(config.seed)  # the live server's initial model, bit for bit
        model = build_model(config.model_name, dataset)
        self.spec = ParamSpec.of(model)
        layout = UnitLayout.of(model, dataset.input_shape) if self.settings.prunes else None
        self._layout = layout
        self.coverage_size = layout.units + 1 if layout is not None else 1
        self.strategy = strategy or FedAvg(config, layout)
        self.weights = self.spec.flatten(state_of(model))
        self._evaluate = Evaluator.for_run(config, model, dataset)
        macs = forward_macs(model, dataset.input_shape)
        self.roster, identities = _identities(config)
        self.backend = backend or LocalBackend()
        self._eval_seconds = costs.eval_seconds(config.model_name, macs, len(self._evaluate.y))
        self.clients = {
            i: SimClient(
                ClientEngine(
                    i,
                    config,
                    LocalTrainer(shares[i], config.model_name, device),
                    identities.get(i),
                    self._primitives,
                ),
                devices[i],
                costs,
                forward_macs=macs,
                train=config.train_settings(),
                backend=self.backend,
                really_train=train,
            )
            for i in range(config.clients)
        }
        self.network = Network(dict(devices), server_bps)
        self.clock = VirtualClock()
        self.queue = EventQueue()
        self.records: list[RoundRecord] = []
        self.rows: list[dict[str, Any]] = []
        self.dropped_messages = 0
        self._round: ServerRound | None = None
        self._setup: RoundSetup | None = None
        self._deadlines: set[float] = set()
        self._finished_round: int | None = None
        self._closed: tuple[RoundOutcome, float, float] | None = None
        """The closed round's outcome, test loss and accuracy, until its ServerReady."""
        self._tester_free = 0.0
        """Under ``eval_overlap``: when the server's test of the last closed round ends."""
        self._infos = [self._register(c.engine) for c in self.clients.values()]

    # ---------------------------------------------------------------------------- registration

    def _register(self, engine: ClientEngine) -> ClientInfo:
        """Registration without a network: the client's ``Register``, the server's ``Welcome``."""
        hello = engine.hello()
        if hello.num_samples > self.settings.max_weight:
            raise ConfigError(
                f"client {hello.client_id} holds {hello.num_samples} samples, above the cap of "
                f"{self.settings.max_weight} (max_weight)"
            )
        welcome = Welcome(client_id=hello.client_id, settings=self.settings, token=bytes(TOKEN_BYTES))
        engine.receive(welcome, self.clock.now())
        engine.needs_warm_up = False  # virtual time has no torch start-up to hide
        return ClientInfo(hello.client_id, hello.num_samples, tuple(hello.capabilities))

    # -------------------------------------------------------------------------------- running

    def run(self, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Every round, then the in-flight messages; the summary, as the live server returns it.
        ``stop`` is asked before each round; when it says so, ``SimulationStopped`` (the rounds done
        are recorded, the run has no summary)."""
        for number in range(1, self.config.rounds + 1):
            if stop is not None and stop():
                raise SimulationStopped(f"stopped before round {number} of {self.config.rounds}")
            self._run_round(number)
        total = max(self.clock.now(), self._tester_free)
        while self.queue:  # the last receipts reach their clients, who record their rounds
            self._step()
        return summarize(self.records, self.config, total)

    def _run_round(self, number: int) -> None:
        t0 = self.clock.now()
        rnd = ServerRound(
            number,
            self._infos,
            config=self.config,
            settings=self.settings,
            strategy=self.strategy,
            spec=self.spec,
            coverage_size=self.coverage_size,
            global_weights=self.weights,
            clock=self.clock.now,
            roster=self.roster,
            primitives=self._primitives,
        )
        self._round, self._deadlines, self._finished_round = rnd, set(), None
        self._server_send(rnd.opening(lambda _: True))
        self._after_server_step(rnd)
        events = 0
        while self._finished_round != number:
            if not self.queue:
                raise SimulationError(f"round {number}: nothing is left to happen but the round is open")
            self._step()
            events += 1
            if events > _MAX_EVENTS_PER_ROUND:
                raise SimulationError(f"round {number}: more than {_MAX_EVENTS_PER_ROUND} events")
        now = self.clock.now()
        assert self._closed is not None
        outcome, loss, accuracy = self._closed
        record = outcome.record(
            number, round_seconds=now - t0, elapsed_seconds=now, loss=loss, accuracy=accuracy
        )
        self.records.append(record)
        row = record.row(
            {
                "bytes_in": self.network.bytes_to_server,
                "bytes_out": self.network.bytes_from_server,
                "dropped_messages": self.dropped_messages,
                "clients_connected": len(self.clients),
            }
        )
        self.rows.append(row)
        if self.run_dir is not None:
            self.run_dir.append_metrics(row)
        log.info(
            "round %d/%d: accuracy %.4f, %.2f virtual s, %d clients",
            number,
            self.config.rounds,
            record.test_accuracy,
            record.round_seconds,
            len(record.participants),
        )

    def _step(self) -> None:
        time, event = self.queue.pop()
        self.clock.advance(time)
        self._handle(event)

    def _handle(self, event: Event) -> None:
        if isinstance(event, Arrival):
            if event.to == SERVER:
                self._server_receives(event.sender, event.msg)
            else:
                self._client_receives(self.clients[event.to], event.msg, event.nbytes)
        elif isinstance(event, FitFinished):
            self._fit_finished(self.clients[event.client_id], event)
        elif isinstance(event, ClientReady):
            self._client_sends(self.clients[event.client_id])
        elif isinstance(event, DeadlineFired):
            rnd = self._round
            if rnd is not None and rnd.round == event.round and self.clock.now() >= rnd.next_deadline():
                rnd.expire(self.clock.now())
                self._server_send(rnd.data_to_send())
                self._after_server_step(rnd)
        elif isinstance(event, ServerReady):
            self._finished_round = event.round

    # --------------------------------------------------------------------------------- server

    def _server_receives(self, sender: int, msg: Message) -> None:
        rnd = self._round
        if isinstance(msg, TimingRelay):
            relayed = rnd.relay_timing(sender, msg) if rnd is not None else None
            if relayed is None:
                self.dropped_messages += 1
            else:
                self._server_send(relayed)
            return
        if rnd is None:  # between rounds: the live driver drops it too
            self.dropped_messages += 1
            return
        rnd.receive(sender, msg)
        self._server_send(rnd.data_to_send())
        self._after_server_step(rnd)

    def _server_send(self, messages: list[tuple[int, Message]]) -> None:
        now = self.clock.now()
        sizes: dict[int, int] = {}  # one message object sent to many (RoundSetup) is encoded once
        for client_id, msg in messages:
            if isinstance(msg, RoundSetup):
                self._setup = msg
            nbytes = sizes.get(id(msg))
            if nbytes is None:
                nbytes = sizes[id(msg)] = message_nbytes(msg)
            self.queue.push(
                self.network.download(now, client_id, nbytes), Arrival(client_id, SERVER, msg, nbytes)
            )

    def _after_server_step(self, rnd: ServerRound) -> None:
        """Schedule the engine's next deadline, or close the round once it is done."""
        if not rnd.done:
            deadline = max(rnd.next_deadline(), self.clock.now())
            if deadline not in self._deadlines:
                self._deadlines.add(deadline)
                self.queue.push(deadline, DeadlineFired(rnd.round))
            return
        self._round = None
        outcome = rnd.close()
        self.weights = outcome.weights
        if not outcome.participants:
            self._explain_empty_round(rnd, outcome.failures)
        loss, accuracy = self._evaluate_now()
        self._closed = (outcome, loss, accuracy)
        unmask = 0.0  # the server unmasks the sum, then the model is ready
        setup = self._setup
        if setup is not None and setup.round == rnd.round:
            survivors = len(outcome.participants)
            unmask = self.costs.unmask_s(
                length=setup.vector_length,
                survivors=survivors,
                dropped=len(outcome.selected) - survivors,
                threshold=setup.threshold,
                neighbors=setup.neighbors,
            )
        now = self.clock.now()
        if self.config.eval_overlap:  # tested beside the next round, one test at a time
            self._tester_free = max(self._tester_free, now + unmask) + self._eval_seconds
            seconds = unmask
        else:
            seconds = self._eval_seconds + unmask
        self.queue.push(now + seconds, ServerReady(rnd.round))

    def _evaluate_now(self) -> tuple[float, float]:
        """The real test of the new model, on the live server's torch threads (its cost is charged
        from the cost model; the clients keep training on one thread each, as live)."""
        if self._eval_threads is None:
            return self._evaluate(self.weights)
        threads = torch.get_num_threads()
        torch.set_num_threads(self._eval_threads)
        try:
            return self._evaluate(self.weights)
        finally:
            torch.set_num_threads(threads)

    def local_accuracy(self) -> dict[str, dict[str, float]]:
        """The final global model on each client's own test split (natural partitions have one): what
        a client gets from the federation on its own data, e.g. one the deadline kept dropping. A
        measurement of the result, not part of the run: nothing in the rounds depends on it."""
        out = {}
        for cid, client in sorted(self.clients.items()):
            data = client.engine.trainer.data
            if data.test_x is None or data.test_y is None or not len(data.test_y):
                continue
            loss, accuracy = self._evaluate.on(self.weights, data.test_x, data.test_y)
            out[str(cid)] = {"accuracy": accuracy, "loss": loss, "samples": len(data.test_y)}
        return out

    def _explain_empty_round(self, rnd: ServerRound, failures: Mapping[int, str]) -> None:
        """No update survived. When the server's deadline is shorter than the cheapest fit the fastest
        device may train, no round ever can: say so instead of simulating futile rounds. Otherwise
        (an adaptive deadline that was too tight once, as live) the run goes on."""
        cheapest = self._layout_ratio(self.settings.min_keep_ratio) if self.settings.prunes else 1.0
        fastest = min(c.fit_seconds(cheapest) for c in self.clients.values())
        if rnd.plan.deadline_seconds >= fastest:
            log.warning("round %d: no update survived (%s)", rnd.round, next(iter(failures.values()), "-"))
            return
        reasons = sorted(set(failures.values())) or ["no client took part"]
        raise SimulationError(
            f"round {rnd.round}: no update survived ({reasons[0]}); the server waits "
            f"{rnd.plan.deadline_seconds:g} s and the fastest device needs {fastest:.3g} s for the "
            "smallest fit it may train: raise round_timeout or make the devices faster"
        )

    def _layout_ratio(self, keep_ratio: float) -> float:
        assert self._layout is not None
        return flop_ratio(self._layout, keep_ratio)

    # -------------------------------------------------------------------------------- clients

    def _client_receives(self, client: SimClient, msg: Message, nbytes: int) -> None:
        now = self.clock.now()
        client.engine.receive(msg, now, nbytes)
        job = client.engine.take_fit()
        if job is not None:
            fit = client.start_fit(job, now)
            self.queue.push(fit.ends_at, FitFinished(client.client_id, fit))
        self._client_flush(client, client.protocol_seconds(msg))

    def _fit_finished(self, client: SimClient, event: FitFinished) -> None:
        fit = event.fit
        client.engine.fit_finished(fit.job, client.fit_output(fit), fit.seconds, client.fit_record())
        self._client_flush(client, client.input_seconds(fit.job.round))

    def _client_flush(self, client: SimClient, seconds: float) -> None:
        """Send what the engine queued, after ``seconds`` of cryptography (in order, one lane)."""
        self._write_rows(client)
        now = self.clock.now()
        if seconds <= 0 and client.protocol_free_at <= now:
            self._client_sends(client)
            return
        if seconds > 0:
            client.protocol_free_at = max(now, client.protocol_free_at) + seconds
            self.queue.push(client.protocol_free_at, ClientReady(client.client_id))
        # else: a send already scheduled on the busy lane carries what was queued now

    def _client_sends(self, client: SimClient) -> None:
        now = self.clock.now()
        for msg in client.engine.data_to_send(now):
            nbytes = message_nbytes(msg)
            client.engine.sent(getattr(msg, "round", 0), nbytes)
            arrives = self.network.upload(now, client.client_id, nbytes)
            self.queue.push(arrives, Arrival(SERVER, client.client_id, msg, nbytes))

    def _write_rows(self, client: SimClient) -> None:
        for row in client.engine.take_rows():
            if self.run_dir is not None:
                self.run_dir.append_client(client.client_id, row)

    def global_model(self) -> np.ndarray:
        return self.weights


def _identities(config: RunConfig) -> tuple[Roster | None, dict[int, Identity]]:
    """As the launcher provisions them: an operator-signed roster and one identity key per client,
    here in memory. The keys change the masks, never the exact sum, so results stay reproducible."""
    if config.secagg == "off" or config.secagg_trust_server:
        return None, {}
    operator = nacl.signing.SigningKey.generate()
    keys = {i: nacl.signing.SigningKey.generate() for i in range(config.clients)}
    entries = [
        RosterEntry(client_id=i, identity_key=bytes(k.verify_key), curve_key=None) for i, k in keys.items()
    ]
    roster = Roster.sign(entries, operator)
    return roster, {i: Identity(roster, key) for i, key in keys.items()}
