"""The client's mitigation glue and the live deadline strategy: plain arithmetic, no sockets."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from clipfl.clip import RoundTiming, TimingReport
from clipfl.config import RunConfig
from clipfl.engine.pruning import ClientPruner, decode_report, encode_report
from clipfl.engine.strategy import DEADLINE_SLACK, FedAvg
from clipfl.errors import ConfigError


def _mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)
    )


def _pruner(mitigation: str = "clip") -> ClientPruner:
    return ClientPruner(mitigation, _mlp(), (1, 4, 4), seed=1, straggler_fraction=0.2, min_keep_ratio=0.5)


def _history(p: ClientPruner, fit: float, rounds: int = 2) -> None:
    for r in range(1, rounds + 1):
        p.record(RoundTiming(round=r, download_s=0.1, fit_s=fit, upload_s=0.1))


def test_a_model_with_an_unsupported_layer_is_refused_at_start_naming_it() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    with pytest.raises(ConfigError, match="LayerNorm"):
        ClientPruner("clip", model, (1, 4, 4), seed=0, straggler_fraction=0.2, min_keep_ratio=0.5)


def test_reports_round_trip_and_garbage_is_ignored() -> None:
    report = TimingReport(
        round=3, download_s=0.1, fit_s=1.0, upload_s=0.2, predicted_fit_s=1.0, predicted_total_s=1.3
    )
    assert decode_report(encode_report(report)) == report
    p = _pruner()
    p.receive_report(4, b"\xc1 not msgpack")
    p.receive_report(5, encode_report(report)[:-3])
    p.receive_report(6, b"\x81\xa1x\x01")  # a map with the wrong fields
    assert p.peers == {}
    p.receive_report(7, encode_report(report))
    assert p.peers == {7: report}


def test_without_reports_the_client_trains_the_full_model() -> None:
    p = _pruner()
    _history(p, fit=5.0)
    choice = p.choose()
    assert not choice.plan.straggler and choice.selection is None and choice.keep_ratio == 1.0


@pytest.mark.parametrize("mitigation", ["clip", "clip-compute", "random", "ordered"])
def test_a_slow_client_prunes_and_builds_a_smaller_model(mitigation: str) -> None:
    p = _pruner(mitigation)
    _history(p, fit=4.0)
    fast = TimingReport(
        round=2, download_s=0.1, fit_s=1.0, upload_s=0.1, predicted_fit_s=1.0, predicted_total_s=1.2
    )
    for peer in range(5):
        p.receive_report(peer, encode_report(fast))
    weights = p.layout.spec.flatten({k: v.detach().numpy() for k, v in p.model.state_dict().items()})
    p.observe_global(weights)
    p.observe_global(weights + np.linspace(0, 1e-3, weights.size, dtype=np.float32))
    choice = p.choose()
    assert choice.plan.straggler and choice.keep_ratio == 0.5  # even p_min cannot meet 1.2 s: best effort
    assert choice.selection is not None and choice.record()["units_dropped"] == 10
    sub = p.build(choice.selection, weights)
    assert sum(x.numel() for x in sub.module.parameters()) < sum(x.numel() for x in p.model.parameters())
    if mitigation == "ordered":
        assert [k.tolist() for k in choice.selection.kept] == [list(range(6)), list(range(4))]


def test_the_deadline_follows_the_slowest_non_straggler_and_remembers_the_late() -> None:
    config = RunConfig(clients=5, mitigation="deadline", round_timeout=100, straggler_fraction=0.2)
    strategy = FedAvg(config)
    assert strategy.round_deadline() == 100  # nothing measured yet: wait up to the timeout
    strategy.record_arrivals(1, {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 20.0}, late=[])
    first = strategy.round_deadline()
    assert first == pytest.approx(4.0 * (1 + DEADLINE_SLACK) + 0.05)
    strategy.record_arrivals(2, {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}, late=[4])
    assert strategy.round_deadline() == pytest.approx(first)  # the late client does not pull it down
    assert FedAvg(RunConfig(clients=5)).round_deadline() == RunConfig().round_timeout


def test_fluid_gives_only_the_clients_above_the_quantile_a_smaller_model() -> None:
    from clipfl.clip import UnitLayout, flop_ratio

    layout = UnitLayout.of(_mlp(), (1, 4, 4))
    strategy = FedAvg(RunConfig(clients=5, mitigation="fluid", min_keep_ratio=0.5), layout)
    assert strategy.fluid_keep_ratios(range(5)) == {}  # nothing measured yet
    strategy.record_arrivals(1, {0: 1.0, 1: 1.1, 2: 1.2, 3: 1.3, 4: 2.0}, late=[])
    ratios = strategy.fluid_keep_ratios(range(5))
    assert list(ratios) == [4]
    p = ratios[4]
    assert 2.0 * flop_ratio(layout, p) <= 1.3 < 2.0 * flop_ratio(layout, round(p + 0.01, 2))
    plan = strategy.configure_fit(2, [])
    assert plan.keep_ratios == {}
