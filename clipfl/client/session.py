"""The asyncio client: connect, register, and drive the ``ClientEngine`` until the run ends.

The message loop never blocks: local training runs in a worker thread as a task of the session's
``TaskGroup``, so heartbeats and (under secure aggregation) protocol stages go on while it trains.
The engine decides everything; this shell owns the socket, the clock (the event loop's), the worker
thread and the emulated slowdown (a fit is stretched to ``slowdown`` x its CPU time on an asyncio
timer). When the server goes silent the client reconnects with exponential backoff and registers again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from clipfl.aio import task_group
from clipfl.config import ClientConfig, RunConfig
from clipfl.engine.client_round import ClientEngine, FitJob, MustRegister, RunFinished
from clipfl.engine.secure_upload import Identity
from clipfl.errors import ConfigError, RemoteProtocolError
from clipfl.rundir import RunDir
from clipfl.trainer import ClientData, LocalTrainer
from clipfl.wire import Message, decode, encode
from transports.base import ClientTransport, frames_nbytes
from transports.errors import ConnectionLost, TransportError

__all__ = ["Client"]

log = logging.getLogger("clipfl.client")


class Client:
    """One client process's (or one in-process client's) connection to the federation."""

    def __init__(
        self,
        run: RunConfig,
        config: ClientConfig,
        data: ClientData,
        transport_factory: Callable[[], ClientTransport],
        *,
        run_dir: RunDir | None = None,
        identity: Identity | None = None,
    ) -> None:
        if config.client_id >= run.clients:
            raise ConfigError(
                f"client-id {config.client_id} is outside 0..{run.clients - 1} (--clients {run.clients})"
            )
        self.config = config
        self.run_dir = run_dir
        self._factory = transport_factory
        self.engine = ClientEngine(config.client_id, run, LocalTrainer(data, run.model_name), identity)
        self._send_lock = asyncio.Lock()
        self._warm: asyncio.Task[None] | None = None

    @property
    def rounds_done(self) -> list[int]:
        return self.engine.rounds_done

    async def run(self) -> int:
        """Take part until the server says the run is over; return the number of rounds done."""
        await asyncio.to_thread(self.engine.trainer.warm_up)
        self.engine.needs_warm_up = False
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.config.connect_timeout
        attempt = 0
        while True:
            transport = self._factory()
            try:
                async with transport:
                    await transport.connect(self.config.server)
                    await self._session(transport)
            except RunFinished:
                return len(self.rounds_done)
            except (ConnectionLost, TransportError, MustRegister) as exc:
                if self.rounds_done or attempt == 0:
                    log.warning("client %d: connection lost (%s); reconnecting", self.config.client_id, exc)
            if self.engine.welcomed:
                give_up_at = loop.time() + self.config.connect_timeout
            if loop.time() >= give_up_at:
                raise ConnectionLost(
                    f"no server at {self.config.server} for {self.config.connect_timeout:g} s; is it running?"
                )
            attempt += 1
            delay = min(5.0, 0.1 * 2 ** min(attempt, 6)) * (0.5 + random.random() / 2)
            await asyncio.sleep(delay)

    async def _session(self, transport: ClientTransport) -> None:
        loop = asyncio.get_running_loop()
        await transport.send(encode(self.engine.hello()))
        async with task_group() as tg:
            while True:
                try:
                    async with asyncio.timeout(
                        None if self.engine.welcomed else self.config.heartbeat_timeout
                    ):
                        frames = await transport.recv()
                except TimeoutError:
                    raise ConnectionLost("no answer to the registration") from None
                try:
                    msg = decode(frames)
                except RemoteProtocolError as exc:
                    log.warning(
                        "client %d: dropped a message from the server: %s", self.config.client_id, exc
                    )
                    continue
                self.engine.receive(msg, loop.time(), frames_nbytes(frames))
                if self.engine.needs_warm_up:
                    self.engine.needs_warm_up = False
                    self._warm = tg.create_task(
                        asyncio.to_thread(self.engine.trainer.warm_up), name="warm-up"
                    )
                job = self.engine.take_fit()
                if job is not None:
                    tg.create_task(self._fit(job, transport), name=f"fit-{job.round}")
                self._write_rows()
                tg.create_task(self._flush(transport))

    async def _fit(self, job: FitJob, transport: ClientTransport) -> None:
        """Train in a worker thread, stretch to the emulated speed, hand the result to the engine."""
        if self._warm is not None:
            await self._warm
        loop = asyncio.get_running_loop()
        started = loop.time()
        out = await asyncio.to_thread(
            self.engine.trainer.train, job.weights, job.sub, job.train, job.seed, job.coverage_size
        )
        overrun = await self._emulate_slowdown(started, out.result.cpu_seconds)
        record = {"emulation_overrun": overrun, "slowdown": self.config.slowdown}
        self.engine.fit_finished(job, out, loop.time() - started, record)
        await self._flush(transport)

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

    async def _flush(self, transport: ClientTransport) -> None:
        """Send what the engine queued, one flush at a time so that the protocol's order holds."""
        async with self._send_lock:
            for msg in self.engine.data_to_send(asyncio.get_running_loop().time()):
                if not await self._send(transport, msg):
                    return

    async def _send(self, transport: ClientTransport, msg: Message) -> bool:
        frames = encode(msg)
        self.engine.sent(getattr(msg, "round", 0), frames_nbytes(frames))
        try:
            await transport.send(frames)
        except TransportError as exc:  # the message loop notices the lost connection
            log.warning("client %d: %s lost: %s", self.config.client_id, type(msg).__name__, exc)
            return False
        return True

    def _write_rows(self) -> None:
        for row in self.engine.take_rows():
            if self.run_dir is not None:
                self.run_dir.append_client(self.config.client_id, row)
