"""Invariance scores (DESIGN 5.4): the largest relative change over every coordinate tied to a unit."""

from __future__ import annotations

import numpy as np
from clip_testmodels import CharLSTM, conv_chain, mlp
from hypothesis import given, settings
from hypothesis import strategies as st

from clipfl.clip import UnitLayout, unit_scores
from clipfl.params import state_of


def test_one_changed_coordinate_scores_exactly_its_units() -> None:
    layout = UnitLayout.of(mlp(3, 4, 2), (3,))
    spec = layout.spec
    prev = np.ones(spec.size, dtype=np.float32)
    cur = spec.unflatten(prev.copy())
    cur["0.weight"][2, 1] = 1.5  # unit 2's incoming weight: +50 %
    cur["2.weight"][0, 3] = 0.75  # a weight that reads unit 3: -25 %
    cur["2.bias"][1] = 9.0  # the classifier's bias: tied to no unit
    scores = unit_scores(layout, prev, spec.flatten(cur), eps=1e-6)
    assert scores.tolist() == [0.0, 0.0, 0.5 / (1 + 1e-6), 0.25 / (1 + 1e-6)]


def test_score_is_the_maximum_over_incoming_and_outgoing() -> None:
    layout = UnitLayout.of(mlp(3, 4, 2), (3,))
    spec = layout.spec
    prev = np.full(spec.size, 2.0, dtype=np.float32)
    cur = spec.unflatten(prev.copy())
    cur["0.weight"][1, 0] = 2.5  # 0.25
    cur["0.bias"][1] = 1.0  # 0.5
    cur["2.weight"][1, 1] = 3.0  # 0.5 as well: the maximum, reached twice
    cur["2.weight"][0, 1] = 2.2  # 0.1
    scores = unit_scores(layout, prev, spec.flatten(cur), eps=1e-6)
    assert scores[1] == 1.0 / (2 + 1e-6) and scores[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]


def test_running_statistics_do_not_score() -> None:
    layout = UnitLayout.of(conv_chain(batchnorm=True), (3, 8, 8))
    spec = layout.spec
    prev = np.ones(spec.size, dtype=np.float32)
    cur = spec.unflatten(prev.copy())
    cur["1.running_mean"][:] = 100.0
    cur["1.running_var"][:] = 100.0
    assert not unit_scores(layout, prev, spec.flatten(cur)).any()
    cur["1.bias"][3] = 3.0  # a norm *parameter* does
    scores = unit_scores(layout, prev, spec.flatten(cur), eps=1e-6)
    assert np.flatnonzero(scores).tolist() == [3]


def test_lstm_recurrent_column_scores_the_unit_it_reads() -> None:
    layout = UnitLayout.of(CharLSTM(7, embed_dim=3, hidden=4), (5,))
    spec = layout.spec
    prev = np.ones(spec.size, dtype=np.float32)
    cur = spec.unflatten(prev.copy())
    cur["lstm.weight_hh_l1"][2 * 4 + 1, 3] = 1.5  # g-gate row of unit 1, recurrent column of unit 3 (layer 1)
    cur["lstm.bias_ih_l0"][3 * 4 + 2] = 1.25  # o-gate bias of unit 2 of layer 0
    scores = unit_scores(layout, prev, spec.flatten(cur), eps=1e-6)
    expect = np.zeros(8)
    expect[[4 + 1, 4 + 3]] = 0.5 / (1 + 1e-6)
    expect[2] = 0.25 / (1 + 1e-6)
    assert scores.tolist() == expect.tolist()


def brute_force(layout: UnitLayout, prev: np.ndarray, cur: np.ndarray, eps: float) -> np.ndarray:
    p, c = prev.astype(np.float64), cur.astype(np.float64)
    change = np.abs(c - p) / (np.abs(p) + eps)
    out = np.zeros(layout.units)
    for u in range(layout.units):
        tied = ((layout.out_unit == u) | (layout.in_unit == u)) & layout.trainable
        out[u] = change[tied].max()
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), which=st.sampled_from(["conv", "lstm"]))
def test_scatter_max_matches_a_per_unit_loop(seed: int, which: str) -> None:
    rng = np.random.default_rng(seed)
    model, shape = (conv_chain(batchnorm=True), (3, 8, 8)) if which == "conv" else (CharLSTM(6, 3, 5), (4,))
    layout = UnitLayout.of(model, shape)
    prev = layout.spec.flatten(state_of(model))
    cur = (prev + rng.normal(0, 0.05, prev.size) * (rng.random(prev.size) < 0.3)).astype(np.float32)
    np.testing.assert_array_equal(
        unit_scores(layout, prev, cur, eps=1e-4), brute_force(layout, prev, cur, 1e-4)
    )
