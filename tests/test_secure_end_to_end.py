"""Secure aggregation end to end over ZeroMQ: real client processes, one killed mid-round.

Bonawitz et al. (CCS 2017), section 4: a client that drops after sharing its keys is recovered by the
survivors' shares of its mask secret, and the round completes with the survivors' sum.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from pathlib import Path

import pytest

from clipfl.config import RunConfig
from clipfl.engine.secure_collect import SecureCollector
from clipfl.keys import load_roster, provision
from clipfl.launch import client_argv, config_flags
from clipfl.rundir import RunDir, read_jsonl
from clipfl.secagg import Stage
from clipfl.server import Server
from transports.zmq import ZmqServerTransport

pytestmark = pytest.mark.slow


async def _start_client(config: RunConfig, address: str, run_dir: Path, i: int, slowdown: float):
    argv = client_argv(
        i, address, run_dir, slowdown=slowdown, heartbeat_timeout=2, flags=config_flags(config)
    )
    argv += ["--identity", str(run_dir / "keys" / f"identity-{i}.secret")]
    log = open(run_dir / f"client-{i}.log", "wb")  # noqa: SIM115, ASYNC230 - the child holds it
    return await asyncio.create_subprocess_exec(
        *argv, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
    )


async def _wait_for_stage(server: Server, rnd: int, stage: Stage) -> None:
    while True:  # a test's bounded wait; the product itself never polls
        r = server._round
        c = r.collector if r is not None else None
        if isinstance(c, SecureCollector) and c.round == rnd and c.stage is stage:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
async def test_a_client_killed_during_masked_input_collection_does_not_stop_the_round(
    tmp_path: Path, mode: str
) -> None:
    config = RunConfig(
        clients=5,
        rounds=3,
        secagg=mode,
        round_timeout=60,
        registration_timeout=120,
        secagg_neighbors=4 if mode == "secagg+" else None,
    )
    keys = provision(tmp_path / "keys", range(config.clients))  # identities on, as the launcher does
    config = dataclasses.replace(config, roster=str(keys.roster), operator_key=str(keys.operator_public))
    transport = ZmqServerTransport(heartbeat_interval=0.2, heartbeat_timeout=2.0)
    roster = load_roster(keys.roster, keys.operator_public)
    server = Server(config, transport, run_dir=RunDir(tmp_path), roster=roster)
    procs = []
    async with transport:
        server.address = await transport.bind("tcp://127.0.0.1:0")
        run = asyncio.create_task(server.run())
        try:
            # client 4 is slow, so round 2 is still collecting masked inputs when it is killed
            for i in range(5):
                procs.append(
                    await _start_client(config, server.address, tmp_path, i, 40.0 if i == 4 else 1.0)
                )
            async with asyncio.timeout(180):
                await _wait_for_stage(server, 2, Stage.MASKED_INPUT)
                procs[4].send_signal(signal.SIGKILL)
                summary = await run
        finally:
            run.cancel()
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()

    assert summary["rounds"] == 3
    first, second, third = server.records
    assert first.participants == [0, 1, 2, 3, 4]
    assert second.participants == [0, 1, 2, 3] and set(second.failures) == {4}
    assert third.participants == [0, 1, 2, 3]
    assert second.test_accuracy != first.test_accuracy  # the survivors' sum moved the model
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows[1]["secagg_survivors"] == 4 and "unmasking" in rows[1]["stage_seconds"]
