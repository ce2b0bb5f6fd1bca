"""Exact MAC counts (issue 5 item 4: "Count the FLOPs of a sub-model exactly"), against hand arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from clip_testmodels import CharLSTM, conv_chain, mlp, vgg_like
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from clipfl.clip import UnitLayout, build_submodel, flop_ratio, forward_macs, layout_macs, select_random
from clipfl.errors import ConfigError


def test_mlp_by_hand() -> None:
    model = mlp(10, 20, 5)
    assert forward_macs(model, (10,)) == 10 * 20 + 20 * 5
    layout = UnitLayout.of(model, (10,))
    assert layout_macs(layout) == 300
    assert layout_macs(layout, [7]) == 10 * 7 + 7 * 5
    assert flop_ratio(layout, 0.5) == 0.5  # both layers scale with the one hidden layer


def test_conv_chain_by_hand() -> None:
    model = conv_chain(batchnorm=True)  # BatchNorm, ReLU, pool, dropout count 0
    conv1 = 8 * 8 * 4 * 3 * 3 * 3  # padding 1 keeps 8x8
    conv2 = 2 * 2 * 6 * 4 * 3 * 3  # after the 2x2 pool: 4x4 -> 2x2
    fc1 = 24 * 7
    fc2 = 7 * 3
    assert forward_macs(model, (3, 8, 8)) == conv1 + conv2 + fc1 + fc2 == 7965
    layout = UnitLayout.of(model, (3, 8, 8))
    assert layout_macs(layout) == 7965
    kept = [2, 3, 5]  # conv1 2 of 4, conv2 3 of 6, fc1 5 of 7
    assert layout_macs(layout, kept) == 8 * 8 * 2 * 27 + 2 * 2 * 3 * 2 * 9 + 3 * 4 * 5 + 5 * 3


def test_lstm_by_hand() -> None:
    model = CharLSTM(20, embed_dim=8, hidden=16)
    per_step = 4 * 16 * (8 + 16) + 4 * 16 * (16 + 16)  # input and recurrent matmuls of four gates, two layers
    expected = 5 * per_step + 16 * 20  # five steps, then the classifier on the last step
    assert forward_macs(model, (5,)) == expected == 18240
    layout = UnitLayout.of(model, (5,))
    assert layout_macs(layout) == expected
    assert layout_macs(layout, [8, 8]) == 5 * (4 * 8 * (8 + 8) + 4 * 8 * (8 + 8)) + 8 * 20


def test_vgg9_full_count() -> None:
    convs = [(3, 32, 32), (32, 32, 32), (32, 64, 16), (64, 64, 16), (64, 128, 8), (128, 128, 8)]
    expected = (
        sum(side * side * c_out * c_in * 9 for c_in, c_out, side in convs) + 2048 * 512 + 512 * 256 + 256 * 10
    )
    model = vgg_like()
    assert forward_macs(model, (3, 32, 32)) == expected
    assert layout_macs(UnitLayout.of(model, (3, 32, 32))) == expected


@settings(max_examples=12, deadline=None)
@given(case=st.sampled_from(["conv", "lstm", "mlp"]), p=st.floats(0.1, 1.0), seed=st.integers(0, 1000))
def test_layout_count_equals_measured_count_of_the_built_submodel(case: str, p: float, seed: int) -> None:
    model, shape = {
        "conv": (conv_chain(batchnorm=True), (3, 8, 8)),
        "lstm": (CharLSTM(9, embed_dim=4, hidden=6), (5,)),
        "mlp": (mlp(6, 9, 4), (6,)),
    }[case]
    layout = UnitLayout.of(model, shape)
    sel = select_random(layout, p, np.random.default_rng(seed))
    sub = build_submodel(model, layout, sel.kept).module
    assert forward_macs(sub, shape) == layout_macs(layout, [k.size for k in sel.kept])
    assert flop_ratio(layout, p) == forward_macs(sub, shape) / forward_macs(model, shape)


def test_flop_ratio_is_monotone_in_keep_ratio() -> None:
    layout = UnitLayout.of(vgg_like(), (3, 32, 32))
    ratios = [flop_ratio(layout, p) for p in np.linspace(0.05, 1.0, 96)]
    assert ratios == sorted(ratios) and ratios[-1] == 1.0
    assert 0.25 < flop_ratio(layout, 0.5) < 0.27  # interior layers scale with p^2, first and last with p


def test_counting_restores_train_mode_and_refuses_unknown_layers() -> None:
    model = conv_chain(batchnorm=True).train()
    model[1].eval()
    forward_macs(model, (3, 8, 8))
    assert model.training and not model[1].training
    with pytest.raises(ConfigError, match=r"layer 1 \(LayerNorm\) has no FLOP rule"):
        forward_macs(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), (4,))
