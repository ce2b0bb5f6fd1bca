"""Whole federations over the in-memory transport, in one event loop: the real server and client
drivers, the real engine, real torch and real secure aggregation, with no sockets and no processes."""

from __future__ import annotations

import asyncio
import tempfile

import pytest

from clipfl import Client, ClientConfig, RunConfig, Server, federation_data
from clipfl.data import load_dataset
from clipfl.engine.secure_upload import Identity
from clipfl.keys import load_identity, load_roster, provision
from clipfl.models import build_model
from clipfl.params import ParamSpec
from clipfl.rundir import RunDir, load_checkpoint, read_jsonl
from clipfl.trainer import Evaluator
from transports.memory import MemoryHub


async def _federation(
    config: RunConfig, run_dir: RunDir | None = None, slowdown: dict[int, float] | None = None
):
    slowdown = slowdown or {}
    hub = MemoryHub()
    transport = hub.server()
    identities: dict[int, Identity] = {}
    roster = None
    if config.secagg != "off":  # identities on, as the launcher provisions them
        keys = provision(tempfile.mkdtemp(prefix="clipfl-keys-"), range(config.clients))
        roster = load_roster(keys.roster, keys.operator_public)
        identities = {i: Identity(roster, load_identity(keys.identity(i))) for i in range(config.clients)}
    server = Server(config, transport, run_dir=run_dir, roster=roster)
    shares = federation_data(config)
    async with transport:
        server.address = await transport.bind("mem://server")
        clients = [
            Client(
                config,
                ClientConfig(client_id=i, server="mem://server", slowdown=slowdown.get(i, 1.0)),
                shares[i],
                hub.client,
                run_dir=run_dir,
                identity=identities.get(i),
            )
            for i in range(config.clients)
        ]
        async with asyncio.timeout(120):
            summary, *rounds = await asyncio.gather(server.run(), *(c.run() for c in clients))
    return summary, server, rounds


async def test_a_plain_federation_learns_and_every_client_records_every_round(tmp_path) -> None:
    config = RunConfig(clients=3, rounds=3, local_epochs=1, seed=1)
    summary, server, rounds = await _federation(config, RunDir(tmp_path))
    assert summary["rounds"] == 3 and rounds == [3, 3, 3]
    assert [r.participants for r in server.records] == [[0, 1, 2]] * 3
    assert server.records[-1].test_accuracy > server.records[0].test_accuracy > 0.3
    for i in range(3):
        assert [row["round"] for row in read_jsonl(tmp_path / f"client-{i}.jsonl")] == [1, 2, 3]


@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
async def test_a_secure_federation_sums_exactly_what_the_plain_one_sums(mode: str) -> None:
    """DESIGN section 3: the unmasked sum is the survivors' quantized inputs; the model moves alike."""
    plain, _, _ = await _federation(RunConfig(clients=4, rounds=2, seed=2))
    secure, server, _ = await _federation(RunConfig(clients=4, rounds=2, seed=2, secagg=mode))
    assert [r.participants for r in server.records] == [[0, 1, 2, 3]] * 2
    stages = {"advertise_keys", "share_keys", "masked_input", "unmasking"}
    assert set(server.records[0].stage_seconds) >= stages
    assert secure["final_accuracy"] == pytest.approx(plain["final_accuracy"], abs=0.03)


async def test_straggler_fraction_zero_means_no_client_ever_calls_itself_a_straggler(tmp_path) -> None:
    """The bug: ``--straggler-fraction 0`` became 0.2 on every client, so the slowest pruned."""
    config = RunConfig(clients=5, rounds=4, mitigation="clip", straggler_fraction=0.0, seed=3)
    await _federation(config, RunDir(tmp_path), slowdown={0: 6.0})
    rows = [row for i in range(5) for row in read_jsonl(tmp_path / f"client-{i}.jsonl")]
    assert len(rows) == 20
    assert not any(row["straggler"] for row in rows)
    assert all(row["keep_ratio"] == 1.0 for row in rows)


async def test_testing_beside_the_next_round_records_every_round_once_in_order(tmp_path) -> None:
    """``eval_overlap``: each round's test runs while the next round trains; the rows and checkpoints
    still come once per round, in order, each with its own round's model and accuracy."""
    config = RunConfig(clients=3, rounds=4, local_epochs=1, seed=1, eval_overlap=True)
    summary, server, rounds = await _federation(config, RunDir(tmp_path))
    assert summary["rounds"] == 4 and rounds == [4, 4, 4]
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [row["round"] for row in rows] == [1, 2, 3, 4]
    assert [r.test_accuracy for r in server.records] == [row["test_accuracy"] for row in rows]
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint.round == 4 and checkpoint.metrics_row == rows[-1]
    dataset = load_dataset(config.dataset)
    model = build_model(config.model_name, dataset)
    evaluate = Evaluator.for_run(config, model, dataset)
    spec = ParamSpec.of(model)
    assert evaluate(spec.flatten(checkpoint.state))[1] == rows[-1]["test_accuracy"]
    assert rows[-1]["test_accuracy"] > rows[0]["test_accuracy"] > 0.3
