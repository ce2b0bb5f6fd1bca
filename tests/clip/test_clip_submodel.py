"""Structured sub-models and re-inflation (DESIGN 5.5 and section 4).

The reference for a sub-model is the full model with the dropped units' *outgoing* weights zeroed
(the next layer's columns that read them, and for an LSTM unit its own recurrent column): a dropped
unit then contributes nothing, which is exactly what removing it does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clip_testmodels import CharLSTM, conv_chain, mlp, vgg_like
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from clipfl.clip import UnitLayout, build_submodel, select_random
from clipfl.errors import ConfigError
from clipfl.params import load_state, state_of


def zero_outgoing(model: nn.Module, layout: UnitLayout, kept: tuple[np.ndarray, ...]) -> nn.Module:
    """The full model with every weight that reads a dropped unit set to zero (a copy)."""
    import copy

    masked = copy.deepcopy(model)
    vector = layout.spec.flatten(state_of(model))
    vector[~layout.unit_mask(kept)[layout.in_unit]] = 0.0
    load_state(masked, layout.spec.unflatten(vector))
    return masked


def random_kept(layout: UnitLayout, seed: int, p: float) -> tuple[np.ndarray, ...]:
    return select_random(layout, p, np.random.default_rng(seed)).kept


CASES = {
    "mlp": (lambda: mlp(6, 9, 4), (6,), torch.float32),
    "conv": (lambda: conv_chain(batchnorm=False), (3, 8, 8), torch.float32),
    "conv-bn": (lambda: conv_chain(batchnorm=True), (3, 8, 8), torch.float32),
    "lstm": (lambda: CharLSTM(9, embed_dim=4, hidden=6), (5,), torch.long),
}


def example_input(shape: tuple[int, ...], dtype: torch.dtype, batch: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    if dtype == torch.long:
        return torch.randint(0, 9, (batch, *shape), generator=gen)
    return torch.randn((batch, *shape), generator=gen)


@settings(max_examples=20, deadline=None)
@given(case=st.sampled_from(sorted(CASES)), seed=st.integers(0, 2**32 - 1), p=st.floats(0.2, 1.0))
def test_submodel_output_equals_full_model_with_outgoing_weights_zeroed(
    case: str, seed: int, p: float
) -> None:
    factory, shape, dtype = CASES[case]
    torch.manual_seed(seed % 1000)
    model = factory()
    if case == "conv-bn":  # non-trivial running statistics, compared in eval mode
        with torch.no_grad():
            model.train()
            model(torch.randn(16, *shape))
    model.eval()
    layout = UnitLayout.of(model, shape)
    kept = random_kept(layout, seed, p)
    sub = build_submodel(model, layout, kept).module.eval()
    x = example_input(shape, dtype)
    with torch.no_grad():
        expected = zero_outgoing(model, layout, kept)(x)
        got = sub(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_submodel_tensors_are_the_kept_slices() -> None:
    model = conv_chain(batchnorm=True)
    layout = UnitLayout.of(model, (3, 8, 8))
    kept = (np.array([0, 3]), np.array([1, 2, 5]), np.array([0, 4, 6]))
    sub = build_submodel(model, layout, kept).module
    assert isinstance(sub, nn.Sequential)
    full, part = state_of(model), state_of(sub)
    c1, c2, f1 = kept
    cols = np.concatenate([np.arange(4 * c, 4 * c + 4) for c in c2])  # flatten: channel c owns 4 columns
    expected = {
        "0.weight": full["0.weight"][c1],
        "0.bias": full["0.bias"][c1],
        "1.weight": full["1.weight"][c1],
        "1.running_var": full["1.running_var"][c1],
        "4.weight": full["4.weight"][np.ix_(c2, c1)],
        "5.running_mean": full["5.running_mean"][c2],
        "8.weight": full["8.weight"][np.ix_(f1, cols)],
        "8.bias": full["8.bias"][f1],
        "11.weight": full["11.weight"][:, f1],
        "11.bias": full["11.bias"],
    }
    for name, value in expected.items():
        np.testing.assert_array_equal(part[name], value, err_msg=name)
    assert [m.out_channels for m in (sub[0], sub[4])] == [2, 3] and sub[4].in_channels == 2
    assert (sub[8].in_features, sub[8].out_features, sub[11].in_features) == (12, 3, 3)


def test_lstm_submodel_slices_gate_rows_and_columns() -> None:
    model = CharLSTM(7, embed_dim=3, hidden=5)
    layout = UnitLayout.of(model, (4,))
    kept = (np.array([0, 2, 4]), np.array([1, 2, 3]))
    sub = build_submodel(model, layout, kept).module
    full, part = state_of(model), state_of(sub)
    rows0 = np.concatenate([g * 5 + kept[0] for g in range(4)])
    rows1 = np.concatenate([g * 5 + kept[1] for g in range(4)])
    np.testing.assert_array_equal(part["lstm.weight_ih_l0"], full["lstm.weight_ih_l0"][rows0])
    np.testing.assert_array_equal(
        part["lstm.weight_hh_l0"], full["lstm.weight_hh_l0"][np.ix_(rows0, kept[0])]
    )
    np.testing.assert_array_equal(
        part["lstm.weight_ih_l1"], full["lstm.weight_ih_l1"][np.ix_(rows1, kept[0])]
    )
    np.testing.assert_array_equal(part["lstm.bias_hh_l1"], full["lstm.bias_hh_l1"][rows1])
    np.testing.assert_array_equal(part["fc.weight"], full["fc.weight"][:, kept[1]])
    np.testing.assert_array_equal(part["embedding.weight"], full["embedding.weight"])
    with pytest.raises(ConfigError, match="one hidden size"):
        build_submodel(model, layout, (np.array([0, 1]), np.array([1, 2, 3])))


def test_building_leaves_the_full_model_alone_and_copies_integer_buffers() -> None:
    model = conv_chain(batchnorm=True)
    model.train()
    model(torch.randn(8, 3, 8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layout = UnitLayout.of(model, (3, 8, 8))
    sub = build_submodel(model, layout, random_kept(layout, 1, 0.5)).module
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert int(sub.state_dict()["1.num_batches_tracked"]) == 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_inflation_puts_zeros_and_coverage_exactly_where_units_were_dropped(case: str) -> None:
    factory, shape, _ = CASES[case]
    torch.manual_seed(0)
    model = factory()
    layout = UnitLayout.of(model, shape)
    kept = random_kept(layout, 3, 0.6)
    sub = build_submodel(model, layout, kept)
    trained = {k: v + 1.0 for k, v in state_of(sub.module).items()}
    delta, coverage = sub.inflate(trained, weight=2.5)
    assert delta.dtype == np.float32 and delta.shape == (layout.spec.size,)
    np.testing.assert_array_equal(delta != 0, layout.coordinate_mask(kept))
    unit_kept = np.zeros(layout.units, dtype=bool)
    for g, k in zip(layout.groups, kept, strict=True):
        unit_kept[g.offset + k] = True
    np.testing.assert_array_equal(coverage, np.where(np.append(unit_kept, True), 2.5, 0.0))
    untouched = sub.inflate()  # a sub-model nobody trained has a zero delta
    assert not untouched.delta.any()


@pytest.mark.parametrize("case", sorted(CASES))
def test_sgd_steps_on_a_submodel_change_only_kept_coordinates(case: str) -> None:
    factory, shape, dtype = CASES[case]
    torch.manual_seed(1)
    model = factory()
    layout = UnitLayout.of(model, shape)
    kept = random_kept(layout, 5, 0.5)
    sub = build_submodel(model, layout, kept)
    module = sub.module.train()
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    x = example_input(shape, dtype, batch=8)
    for _ in range(3):
        opt.zero_grad()
        out = module(x)
        loss = nn.functional.cross_entropy(out, torch.arange(8) % out.shape[1])
        loss.backward()
        opt.step()
    delta, _ = sub.inflate()
    mask = layout.coordinate_mask(kept)
    assert not delta[~mask].any()
    assert np.count_nonzero(delta[mask & layout.trainable]) > 0.5 * np.count_nonzero(mask & layout.trainable)


def test_vgg_shaped_submodel_runs_and_has_fewer_parameters() -> None:
    model = vgg_like(batchnorm=True)
    layout = UnitLayout.of(model, (3, 32, 32))
    sub = build_submodel(model, layout, random_kept(layout, 0, 0.5))
    assert sub.module(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    full_params = sum(p.numel() for p in model.parameters())
    sub_params = sum(p.numel() for p in sub.module.parameters())
    assert sub_params < 0.3 * full_params
