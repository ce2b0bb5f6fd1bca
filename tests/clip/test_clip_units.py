"""Unit discovery and coordinate grouping (issue 5 item 3: "grouped with all the parameters tied to it")."""

from __future__ import annotations

import numpy as np
import pytest
from clip_testmodels import CharLSTM, conv_chain, mlp
from torch import nn

from clipfl.clip import UnitLayout
from clipfl.errors import ConfigError


def tensor_units(layout: UnitLayout, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(out_unit, in_unit) of tensor ``name`` reshaped like the tensor."""
    spec = layout.spec
    i = spec.names.index(name)
    sl = slice(spec.offsets[i], spec.offsets[i] + spec.sizes[i])
    return layout.out_unit[sl].reshape(spec.shapes[i]), layout.in_unit[sl].reshape(spec.shapes[i])


def test_mlp_hidden_units_tie_rows_bias_and_next_columns() -> None:
    layout = UnitLayout.of(mlp(6, 5, 3), (6,))
    rest = layout.units
    assert [(g.name, g.size, g.offset) for g in layout.groups] == [("0", 5, 0)]
    out, inp = tensor_units(layout, "0.weight")
    assert (out == np.arange(5)[:, None]).all() and (inp == rest).all()  # first layer's inputs: never pruned
    out, inp = tensor_units(layout, "0.bias")
    assert out.tolist() == [0, 1, 2, 3, 4] and (inp == rest).all()
    out, inp = tensor_units(layout, "2.weight")
    assert (out == rest).all() and (inp == np.arange(5)[None, :]).all()  # classifier outputs: never pruned
    out, inp = tensor_units(layout, "2.bias")
    assert (out == rest).all() and (inp == rest).all()


def test_conv_bn_flatten_linear_grouping() -> None:
    model = conv_chain(batchnorm=True)
    layout = UnitLayout.of(model, (3, 8, 8))
    rest = layout.units
    assert [(g.name, g.size, g.offset) for g in layout.groups] == [("0", 4, 0), ("4", 6, 4), ("8", 7, 10)]
    out, inp = tensor_units(layout, "0.weight")  # (4, 3, 3, 3)
    assert (out == np.arange(4)[:, None, None, None]).all() and (inp == rest).all()
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        out, inp = tensor_units(layout, f"1.{leaf}")
        assert out.tolist() == [0, 1, 2, 3] and (inp == rest).all()
        out, inp = tensor_units(layout, f"5.{leaf}")
        assert out.tolist() == [4, 5, 6, 7, 8, 9] and (inp == rest).all()
    out, inp = tensor_units(layout, "4.weight")  # (6, 4, 3, 3): out channel of conv 2, in channel of conv 1
    assert (out == 4 + np.arange(6)[:, None, None, None]).all()
    assert (inp == np.arange(4)[None, :, None, None]).all()
    out, inp = tensor_units(layout, "8.weight")  # (7, 24): column c * 4 + t reads channel c of conv 2
    assert (out == 10 + np.arange(7)[:, None]).all()
    assert inp[0].tolist() == [4 + c for c in range(6) for _ in range(4)]
    out, inp = tensor_units(layout, "11.weight")
    assert (out == rest).all() and (inp == 10 + np.arange(7)[None, :]).all()


def test_running_statistics_are_tied_but_not_trainable() -> None:
    model = conv_chain(batchnorm=True)
    layout = UnitLayout.of(model, (3, 8, 8))
    spec = layout.spec
    for name, offset, size in zip(spec.names, spec.offsets, spec.sizes, strict=True):
        expected = not name.endswith(("running_mean", "running_var"))
        assert (layout.trainable[offset : offset + size] == expected).all(), name


def test_lstm_units_gate_rows_recurrent_column_and_readers() -> None:
    model = CharLSTM(vocab_size=11, embed_dim=3, hidden=4)
    layout = UnitLayout.of(model, (7,))
    rest = layout.units
    assert [(g.name, g.size, g.offset) for g in layout.groups] == [("lstm.l0", 4, 0), ("lstm.l1", 4, 4)]
    out, inp = tensor_units(layout, "embedding.weight")
    assert (out == rest).all() and (inp == rest).all()
    gate_rows = np.tile(np.arange(4), 4)  # rows i0..i3 f0..f3 g0..g3 o0..o3
    for k in (0, 1):
        out, inp = tensor_units(layout, f"lstm.weight_ih_l{k}")
        assert (out == 4 * k + gate_rows[:, None]).all()
        assert (inp == (rest if k == 0 else np.arange(4)[None, :])).all()
        out, inp = tensor_units(layout, f"lstm.weight_hh_l{k}")
        assert (out == 4 * k + gate_rows[:, None]).all() and (inp == 4 * k + np.arange(4)[None, :]).all()
        for bias in ("bias_ih", "bias_hh"):
            out, inp = tensor_units(layout, f"lstm.{bias}_l{k}")
            assert (out == 4 * k + gate_rows).all() and (inp == rest).all()
    out, inp = tensor_units(layout, "fc.weight")
    assert (out == rest).all() and (inp == 4 + np.arange(4)[None, :]).all()


def test_coordinate_mask_needs_both_units() -> None:
    layout = UnitLayout.of(conv_chain(), (3, 8, 8))
    kept = (np.array([0, 2]), np.arange(6), np.array([1, 3, 5]))
    mask = layout.coordinate_mask(kept)
    spec = layout.spec
    named = spec.unflatten(mask.astype(np.float32))
    assert named["0.weight"].sum() == 2 * 27
    assert named["3.weight"].sum() == 6 * 2 * 9  # conv 2 now reads channels 0 and 2 only
    assert named["6.weight"].sum() == 3 * 24
    assert named["9.weight"].sum() == 3 * 3 and named["9.bias"].all()


@pytest.mark.parametrize(
    ("layer", "name"),
    [
        (nn.Conv1d(1, 1, 1), "Conv1d"),
        (nn.LayerNorm(4), "LayerNorm"),
        (nn.Conv2d(4, 4, 1, groups=2), "Conv2d"),
    ],
)
def test_unsupported_layer_is_refused_by_name(layer: nn.Module, name: str) -> None:
    model = nn.Sequential(nn.Linear(4, 4), layer, nn.Linear(4, 2))
    with pytest.raises(ConfigError, match=rf"layer 1 \({name}\)"):
        UnitLayout.of(model, (4,))


def test_unsupported_model_and_containers_are_refused() -> None:
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)

    with pytest.raises(ConfigError, match="Custom"):
        UnitLayout.of(Custom(), (3,))
    with pytest.raises(ConfigError, match=r"layer 0 \(Custom\)"):
        UnitLayout.of(nn.Sequential(Custom(), nn.Linear(3, 2)), (3,))
    lstm = CharLSTM(5, 2, 3)
    lstm.extra = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"layer extra \(Linear\)"):
        UnitLayout.of(lstm, (4,))


def test_nested_sequential_paths_match_state_dict() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 5), nn.ReLU()), nn.Linear(5, 2))
    layout = UnitLayout.of(model, (4,))
    assert [g.name for g in layout.groups] == ["0.0"]
    _, inp = tensor_units(layout, "1.weight")
    assert (inp == np.arange(5)[None, :]).all()
    out, _ = tensor_units(layout, "0.0.weight")
    assert (out == np.arange(5)[:, None]).all()
