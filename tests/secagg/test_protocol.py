"""SecAgg / SecAgg+ end to end in memory: bit-exact sums of the survivors under dropouts.

Bonawitz et al. (CCS 2017) section 4: the server learns sum_{u in U3} x_u exactly as long as at least
t clients remain at every stage; below t the round is abandoned. Bell et al. (CCS 2020): the same
holds with masks and shares restricted to a k-regular graph, per neighbourhood.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from secagg_harness import Federation, make_federation, run, run_round

from clipfl.secagg import SecAggConfig, Stage
from clipfl.secagg.messages import Abort, MaskedInput

DROP_STAGES = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY, Stage.UNMASKING]
IN_THE_SUM = (Stage.CONSISTENCY, Stage.UNMASKING, Stage.DONE)  # dropped after their masked input
MODES = ["secagg", "secagg+"]


def assert_exact(fed: Federation) -> None:
    assert fed.server.done, fed.server.aborted
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [2, 3, 7, 20])
def test_exact_sum_of_everyone_without_dropouts(mode: str, n: int) -> None:
    config = SecAggConfig(mode=mode, min_clients=2)  # type: ignore[arg-type]
    fed = run_round(n=n, length=257, config=config, seed=n)
    assert_exact(fed)
    assert fed.server.survivors == frozenset(range(n)) and not fed.server.failures
    assert all(c.done for c in fed.clients.values())


@pytest.mark.parametrize("mode", MODES)
def test_fifty_clients_with_arbitrary_ids_reordered(mode: str) -> None:
    ids = random.Random(5).sample(range(10_000), 50)
    fed = run_round(n=50, length=100, config=SecAggConfig(mode=mode), ids=ids, seed=3, reorder=True)  # type: ignore[arg-type]
    assert_exact(fed)
    assert fed.server.survivors == frozenset(ids)


@pytest.mark.parametrize("disconnect", [False, True], ids=["deadline", "disconnect"])
@pytest.mark.parametrize("stage", DROP_STAGES, ids=lambda s: s.value)
def test_secagg_survives_n_minus_t_dropouts_at_each_stage(stage: Stage, disconnect: bool) -> None:
    config = SecAggConfig(mode="secagg")
    n = 12
    t = config.resolved(n).threshold  # 9: t > 2n/3
    dropped = {c: stage for c in (1, 6, 11)}  # n - t = 3
    assert len(dropped) == n - t
    fed = run_round(n=n, length=300, config=config, seed=11, dropouts=dropped, disconnect=disconnect)
    assert_exact(fed)
    expected_survivors = set(range(n)) - (set(dropped) if stage not in IN_THE_SUM else set())
    assert fed.server.survivors == expected_survivors  # consistency and unmasking dropouts stay in the sum
    assert set(fed.server.failures) == set(dropped)


@pytest.mark.parametrize("seed", range(12))
def test_secagg_random_dropouts_at_mixed_stages(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(5, 16)
    config = SecAggConfig(mode="secagg")
    t = config.resolved(n).threshold
    victims = rng.sample(range(n), rng.randint(0, n - t))
    dropped = {c: rng.choice(DROP_STAGES) for c in victims}
    fed = run_round(
        n=n, length=64, config=config, seed=seed, dropouts=dropped, reorder=True, disconnect=seed % 2 == 0
    )
    assert_exact(fed)
    assert fed.server.survivors == {c for c in range(n) if dropped.get(c, Stage.DONE) in IN_THE_SUM}


@pytest.mark.parametrize("seed", range(8))
def test_secagg_plus_fifty_clients_tolerates_holders_minus_t_dropouts(seed: int) -> None:
    """k = 38, t = 28 of 39 holders: any 11 dropouts leave every neighbourhood at least t holders."""
    config = SecAggConfig(mode="secagg+")
    r = config.resolved(50)
    assert (r.neighbors, r.threshold) == (38, 28)
    rng = random.Random(seed)
    dropped = {c: rng.choice(DROP_STAGES) for c in rng.sample(range(50), r.holders - r.threshold)}
    fed = run_round(n=50, length=64, config=config, seed=seed, dropouts=dropped, reorder=True)
    assert_exact(fed)


@pytest.mark.parametrize("seed", range(10))
def test_secagg_plus_sparse_graph_is_exact_or_aborts_cleanly(seed: int) -> None:
    """Flower's setting k = 3, t = 2 with many dropouts: a neighbourhood may lose all its holders;
    then the round must abort with a reason, never return a wrong sum."""
    config = SecAggConfig(mode="secagg+", neighbors=3, threshold=2)
    rng = random.Random(seed)
    dropped = {c: rng.choice(DROP_STAGES) for c in rng.sample(range(20), 6)}
    fed = run_round(n=20, length=64, config=config, seed=seed, dropouts=dropped)
    if fed.server.aborted:
        assert fed.server.stage is Stage.ABORTED and "t=2" in fed.server.aborted
    else:
        assert_exact(fed)


@pytest.mark.parametrize("mode", MODES)
def test_below_threshold_the_round_aborts_and_tells_the_clients(mode: str) -> None:
    config = SecAggConfig(mode=mode, threshold=4)  # type: ignore[arg-type]
    n = 6
    fed = run_round(
        n=n,
        length=32,
        config=config,
        dropouts={0: Stage.SHARE_KEYS, 1: Stage.SHARE_KEYS, 2: Stage.SHARE_KEYS},
    )
    assert fed.server.stage is Stage.ABORTED
    assert "threshold is 4" in (fed.server.aborted or "")
    with pytest.raises(Exception, match="not done"):
        fed.server.result()
    live = [c for c in fed.clients.values() if c.client_id not in fed.dead]
    assert live and all(c.aborted and "server aborted" in c.aborted for c in live)
    assert all(isinstance(m, Abort) for c, m in fed.client_inbox[-len(live) :])


def test_too_many_dropouts_during_unmasking_abort_instead_of_a_wrong_sum() -> None:
    config = SecAggConfig(mode="secagg")  # n = 6, t = 5
    fed = run_round(
        n=6, length=32, config=config, dropouts={0: Stage.UNMASKING, 1: Stage.UNMASKING, 2: Stage.UNMASKING}
    )
    assert fed.server.stage is Stage.ABORTED
    assert "cannot rebuild" in (fed.server.aborted or "")


@pytest.mark.parametrize("mode", MODES)
def test_server_never_receives_a_plaintext_input(mode: str) -> None:
    """The server's whole inbox holds no array equal (or even close) to a client's plain input."""
    fed = run_round(n=10, length=4096, config=SecAggConfig(mode=mode), seed=2, dropouts={3: Stage.UNMASKING})  # type: ignore[arg-type]
    assert_exact(fed)
    arrays = [m.vector for _, m in fed.server_inbox if isinstance(m, MaskedInput)]
    assert len(arrays) == 10
    for array in arrays:
        for x in fed.inputs.values():
            assert not np.array_equal(array, x)
            assert np.mean(array == x) < 0.01  # a masked coordinate matches only by chance (2^-32)
    # nothing else the server sees is an array
    assert all(
        isinstance(m, MaskedInput)
        for _, m in fed.server_inbox
        if any(isinstance(v, np.ndarray) for v in vars_of(m))
    )


def vars_of(message: object) -> list[object]:
    return [getattr(message, f) for f in message.__dataclass_fields__]  # type: ignore[attr-defined]


def test_input_before_or_after_the_request_gives_the_same_sum() -> None:
    sums = []
    for early in (True, False):
        fed = make_federation(n=6, length=50, config=SecAggConfig(), seed=9)
        sums.append(run(fed, seed=9, early_input=early).server.result())
    np.testing.assert_array_equal(sums[0], sums[1])


def test_trusting_the_server_needs_an_explicit_flag() -> None:
    """Without a roster nothing authenticates a peer's keys (attack 1): the client refuses to run
    unless ``trust_server=True`` says that the server is trusted."""
    from clipfl.errors import ConfigError
    from clipfl.secagg import SecAggClient

    with pytest.raises(ConfigError, match="trust_server"):
        SecAggClient(client_id=0, round=1, config=SecAggConfig())
    fed = run_round(n=6, length=40, config=SecAggConfig(), seed=1, trust_server=True)
    assert_exact(fed)
    sums = [fed.server.result(), fed.expected_sum()]
    np.testing.assert_array_equal(sums[0], sums[1])


def test_statistics_are_frozen_snapshots() -> None:
    fed = run_round(n=5, length=8, config=SecAggConfig(mode="secagg"), dropouts={2: Stage.MASKED_INPUT})
    stats = fed.server.statistics()
    assert (stats.stage, stats.clients, stats.survivors, stats.dropped, stats.failed) == ("done", 5, 4, 1, 1)
    with pytest.raises(AttributeError):
        stats.stage = "x"  # type: ignore[misc]
    assert fed.clients[0].statistics().masks_applied == 1 + 4
