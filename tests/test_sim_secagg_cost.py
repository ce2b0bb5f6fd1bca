"""``--secagg-cost model`` (issue 11, item 2): a simulation that skips secure aggregation's cryptography
keeps every message size and every decision, so it gives the very results of the real cryptography;
and the stand-ins keep the shapes the protocol checks (sizes, thresholds, the exact sum)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
import pytest

from clipfl import RunConfig
from clipfl.errors import ConfigError
from clipfl.rundir import read_jsonl
from clipfl.secagg import MODELLED, REAL
from clipfl.secagg import keys as K
from clipfl.sim import load_cost_model, simulate, straggler_fleet

COSTS = load_cost_model()


def _run(run_dir: Path, secagg_cost: str, mitigation: str) -> None:
    config = RunConfig(
        clients=6, rounds=3, local_epochs=1, seed=4, mitigation=mitigation, secagg="secagg+", round_timeout=5
    )
    fleet = straggler_fleet(
        6, base_speed=COSTS.train_speed("digits_cnn"), slowdown=4.0, straggler_ids=[2], straggler_slowdown=8.0
    )
    simulate(config, fleet, run_dir=run_dir, cost_model=COSTS, secagg_cost=secagg_cost)


@pytest.mark.parametrize("mitigation", ["clip", "deadline"])
def test_modelled_cryptography_gives_byte_identical_results(tmp_path: Path, mitigation: str) -> None:
    _run(tmp_path / "real", "real", mitigation)
    _run(tmp_path / "model", "model", mitigation)
    for name in ["metrics.jsonl", "summary.json", *(f"client-{i}.jsonl" for i in range(6))]:
        assert (tmp_path / "model" / name).read_bytes() == (tmp_path / "real" / name).read_bytes(), name
    sims = [json.loads((tmp_path / side / "simulation.json").read_text()) for side in ("real", "model")]
    assert [s.pop("secagg_cost") for s in sims] == ["real", "model"] and sims[0] == sims[1]
    metrics = read_jsonl(tmp_path / "real" / "metrics.jsonl")
    assert all(m["test_accuracy"] > 0 for m in metrics)
    if mitigation == "deadline":  # the straggler dropped after sharing its keys: its mask key was rebuilt
        assert any(2 in m["failures"] or "2" in m["failures"] for m in metrics)
    else:  # the straggler pruned instead
        assert min(r["keep_ratio"] for r in read_jsonl(tmp_path / "real" / "client-2.jsonl")) < 1


def test_an_unknown_secagg_cost_is_one_line() -> None:
    config = RunConfig(clients=3, rounds=1, secagg="secagg", secagg_trust_server=True)
    fleet = straggler_fleet(3, base_speed=COSTS.train_speed("digits_cnn"))
    with pytest.raises(ConfigError, match="secagg_cost must be one of real, model, got 'free'"):
        simulate(config, fleet, cost_model=COSTS, secagg_cost="free")


def test_the_stand_ins_keep_every_size_and_the_sum_exact() -> None:
    a, b = (MODELLED.generate_keys(secrets.token_bytes) for _ in range(2))
    real_a, real_b = (REAL.generate_keys(secrets.token_bytes) for _ in range(2))
    assert [len(x) for x in (a.c_private, a.s_private, a.c_public, a.s_public)] == [K.KEY_BYTES] * 4
    assert MODELLED.public_key_of(a.s_private) == a.s_public
    plain = bytes(range(200))
    sealed = MODELLED.channel(a, b.c_public).seal(plain, secrets.token_bytes)
    real_sealed = REAL.channel(real_a, real_b.c_public).seal(plain, secrets.token_bytes)
    assert len(sealed) == len(real_sealed) and MODELLED.channel(b, a.c_public).open(sealed) == plain
    assert REAL.channel(real_b, real_a.c_public).open(real_sealed) == plain
    with pytest.raises(ValueError, match="does not open"):
        MODELLED.channel(b, a.c_public).open(b"short")
    assert len(MODELLED.sign(None, b"statement")) == K.SIGNATURE_BYTES  # type: ignore[arg-type]
    secret = secrets.token_bytes(32)
    shares = MODELLED.split(secret, threshold=3, xs=[1, 2, 3, 4], random_bytes=secrets.token_bytes)
    assert MODELLED.combine({x: shares[x] for x in (2, 3, 4)}, 3) == secret
    with pytest.raises(ValueError, match="cannot rebuild"):
        MODELLED.combine({1: shares[1], 2: shares[2]}, 3)
    stream, x = MODELLED.mask_stream(5), np.arange(5, dtype=np.uint32)
    y = np.empty(5, dtype=np.uint32)
    stream.add_into(y, x, bytes(32))
    stream.add(y, bytes(32))
    stream.subtract(y, bytes(32))
    assert np.array_equal(y, x)
