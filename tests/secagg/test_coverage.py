"""Minimum coverage (issue 13, attack 8): plans travel sealed between clients, and a client withholds
units that too few clients train, so the sum never carries one client's delta for a unit in the clear."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from secagg_harness import make_federation, run
from torch import nn

from clipfl import RunConfig
from clipfl.clip.units import UnitLayout
from clipfl.rundir import read_jsonl
from clipfl.secagg import SecAggConfig
from clipfl.secagg.coverage import contributable, is_plan, pack_plan, unpack_plan, withhold_thin_units
from clipfl.secagg.messages import KeysBroadcast, RelayPrivate, ServerMessage
from clipfl.sim import load_cost_model, simulate, straggler_fleet


@given(arrays(bool, st.integers(1, 300)))
def test_plans_round_trip(trained: np.ndarray) -> None:
    payload = pack_plan(trained)
    assert is_plan(payload)
    np.testing.assert_array_equal(unpack_plan(payload, trained.shape[0]), trained)


def test_a_plan_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="the model has 9"):
        unpack_plan(pack_plan(np.ones(8, bool)), 9)
    with pytest.raises(ValueError, match="not a coverage plan"):
        unpack_plan(b"timing report", 8)


def test_units_trained_by_too_few_clients_are_withheld() -> None:
    own = np.array([1, 1, 1, 0], bool)
    peers = {1: np.array([1, 1, 0, 1], bool), 2: np.array([1, 0, 0, 1], bool)}
    np.testing.assert_array_equal(withhold_thin_units(own, peers, 3), [True, False, False, False])
    np.testing.assert_array_equal(withhold_thin_units(own, peers, 1), own)


def test_attack8_a_client_alone_on_a_unit_withholds_it_and_the_server_never_reads_plans() -> None:
    """The server singles client 3 out so that it alone trains unit 0; client 3 learns from its peers'
    sealed plans that nobody else does, and contributes nothing for that unit."""
    fed = make_federation(n=6, length=8, config=SecAggConfig(mode="secagg"), seed=3)
    plans = {c: np.array([c == 3, True, True], bool) for c in range(6)}
    original = {c: client.receive for c, client in fed.clients.items()}

    def announce(c: int):  # type: ignore[no-untyped-def]
        def receive(m: ServerMessage) -> None:
            original[c](m)
            if isinstance(m, KeysBroadcast) and fed.clients[c].aborted is None:
                fed.clients[c].send_private_to_all(pack_plan(plans[c]))

        return receive

    for c in fed.clients:
        fed.clients[c].receive = announce(c)  # type: ignore[method-assign]
    run(fed)
    received = {
        p.sender: unpack_plan(p.payload, 3) for p in fed.clients[3].received_private() if is_plan(p.payload)
    }
    assert set(received) == {0, 1, 2, 4, 5}
    np.testing.assert_array_equal(withhold_thin_units(plans[3], received, 2), [False, True, True])
    relayed = b"".join(
        x for _, m in fed.server_inbox if isinstance(m, RelayPrivate) for x in m.ciphertexts.values()
    )
    assert b"clipfl.coverage" not in relayed


def _two_hidden_layers() -> UnitLayout:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    return UnitLayout.of(model, (3,))


def test_a_weight_between_two_units_is_withheld_when_too_few_plans_keep_both() -> None:
    """Units 0 (first layer) and 4 (second) are each covered by three plans, but only this client
    keeps both: the weight from unit 0 into unit 4 would be its own delta in the clear."""
    layout = _two_hidden_layers()
    assert layout.units == 8

    def plan(*dropped: int) -> np.ndarray:
        mask = np.ones(layout.units + 1, bool)
        mask[list(dropped)] = False
        return mask

    own = plan()
    peers = {1: plan(0), 2: plan(4), 3: plan(0), 4: plan(4)}
    units, coordinates = contributable(layout, own, peers, 3)
    np.testing.assert_array_equal(units, own)
    lone = (layout.out_unit == 4) & (layout.in_unit == 0)
    assert lone.sum() == 1
    np.testing.assert_array_equal(coordinates, ~lone)
    units, coordinates = contributable(layout, own, peers, 4)  # units 0 and 4 now too thin as well
    np.testing.assert_array_equal(units, plan(0, 4))
    tied = np.isin(layout.out_unit, [0, 4]) | np.isin(layout.in_unit, [0, 4])
    np.testing.assert_array_equal(coordinates, ~tied)
    # the rest (the output layer's bias, tied to no unit) is never withheld, even with no peers at all
    units, coordinates = contributable(layout, own, {}, 3)
    assert units[-1] and not units[:-1].any()
    rest = (layout.out_unit == layout.units) & (layout.in_unit == layout.units)
    np.testing.assert_array_equal(coordinates, rest)


def _simulate(run_dir: Path, min_coverage: int) -> list[list[dict[str, Any]]]:
    """Four clients under SecAgg, two of them stragglers pruning the same trailing units (ordered):
    those units are trained by the two others only."""
    costs = load_cost_model()
    config = RunConfig(
        clients=4,
        rounds=4,
        seed=4,
        mitigation="ordered",
        secagg="secagg",
        secagg_trust_server=True,
        secagg_min_coverage=min_coverage,
        straggler_fraction=0.5,
        round_timeout=5,
    )
    fleet = straggler_fleet(
        4,
        base_speed=costs.train_speed("digits_cnn"),
        slowdown=4.0,
        straggler_ids=[2, 3],
        straggler_slowdown=8.0,
    )
    simulate(config, fleet, run_dir=run_dir, cost_model=costs)
    return [read_jsonl(run_dir / f"client-{c}.jsonl") for c in range(4)]


def test_clients_withhold_the_units_that_only_two_of_them_train(tmp_path: Path) -> None:
    rows = _simulate(tmp_path / "min3", 3)
    pruned = [r["round"] for r in rows[2] if r["units_dropped"] > 0]
    assert pruned and pruned == [r["round"] for r in rows[3] if r["units_dropped"] > 0]
    for c in (0, 1):  # the full clients withhold exactly what both stragglers dropped
        for row, straggler in zip(rows[c], rows[2], strict=True):
            assert row["units_withheld"] == straggler["units_dropped"], (c, row["round"])
    for c in (2, 3):  # what a straggler keeps, all four train
        assert all(r["units_withheld"] == 0 for r in rows[c])
    metrics = read_jsonl(tmp_path / "min3" / "metrics.jsonl")
    assert [m["mean_keep_ratio"] for m in metrics if m["round"] in pruned] == [0.5] * len(pruned)
    off = _simulate(tmp_path / "off", 1)
    assert all(r["units_withheld"] == 0 for client in off for r in client)
