"""The model registry and the presets (issue 3 items 3 and 4; issue 2 item 6).

Parameter counts are exact: they are what the README states and what CLIP's slicer and the FLOP
model compute keep ratios against. Shapes are restricted to what the slicer supports: image models
are plain ``nn.Sequential`` stacks of standard layers; the LSTM exposes ``embedding``/``lstm``/``fc``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from clipfl.data import load_dataset
from clipfl.data.load import DATASETS
from clipfl.errors import ConfigError
from clipfl.models import MODELS, CharLSTM, available_models, build_model, count_parameters
from clipfl.params import ParamSpec
from clipfl.presets import PRESETS, Preset, get_preset

EXPECTED = {
    # name: (parameters, input batch, output shape)
    "digits_mlp": (4_810, torch.zeros(3, 1, 8, 8), (3, 10)),
    "digits_mlp_wide": (1_470_010, torch.zeros(3, 1, 8, 8), (3, 10)),
    "digits_cnn": (38_282, torch.zeros(3, 1, 8, 8), (3, 10)),
    "femnist_cnn": (410_022, torch.zeros(3, 1, 28, 28), (3, 62)),
    "vgg9": (1_469_994, torch.zeros(3, 3, 32, 32), (3, 10)),
    "shakespeare_lstm": (213_849, torch.zeros(3, 80, dtype=torch.long), (3, 81)),
}
SLICEABLE = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear, nn.Dropout)


def test_registry_lists_every_model() -> None:
    assert available_models() == tuple(sorted(EXPECTED))
    assert set(MODELS) == set(EXPECTED)
    assert {e.dataset for e in MODELS.values()} <= set(DATASETS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_parameter_count_and_forward_shape(name: str) -> None:
    params, batch, out_shape = EXPECTED[name]
    torch.manual_seed(0)
    model = build_model(name)
    assert count_parameters(model) == params
    assert ParamSpec.of(model).size == params  # no float buffers: the whole state is the parameters
    out = model(batch)
    assert tuple(out.shape) == out_shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "femnist_cnn", "vgg9"])
def test_image_models_are_plain_sequentials_of_sliceable_layers(name: str) -> None:
    model = build_model(name)
    assert type(model) is nn.Sequential
    assert all(isinstance(layer, SLICEABLE) for layer in model)


def test_char_lstm_contract() -> None:
    m = CharLSTM(81)
    assert isinstance(m.embedding, nn.Embedding) and m.embedding.num_embeddings == 81
    assert m.embedding.embedding_dim == 8
    assert isinstance(m.lstm, nn.LSTM) and m.lstm.num_layers == 2 and m.lstm.hidden_size == 128
    assert m.lstm.batch_first
    assert isinstance(m.fc, nn.Linear) and (m.fc.in_features, m.fc.out_features) == (128, 81)
    assert [n for n, _ in m.named_children()] == ["embedding", "lstm", "fc"]
    # the output is the prediction from the last time step only
    x = torch.randint(0, 81, (2, 80))
    out, _ = m.lstm(m.embedding(x))
    torch.testing.assert_close(m(x), m.fc(out[:, -1]))


def test_builders_size_the_model_from_the_dataset() -> None:
    digits = load_dataset("digits")
    assert build_model("digits_cnn", digits)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    assert build_model("vgg9", num_classes=100)(torch.zeros(1, 3, 32, 32)).shape == (1, 100)
    assert build_model("shakespeare_lstm", vocab_size=90)(torch.zeros(1, 5, dtype=torch.long)).shape == (
        1,
        90,
    )


def test_same_seed_same_initial_weights() -> None:
    torch.manual_seed(3)
    a = build_model("femnist_cnn")
    torch.manual_seed(3)
    b = build_model("femnist_cnn")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small models train fastest on one thread, and do not fight other jobs for the two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield None
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_digits_models_learn_the_embedded_task() -> None:
    """Three epochs of mini-batch Adam take both digits models far above chance (10 %)."""
    from clipfl.data import to_tensors

    ds = load_dataset("digits")
    x, y = to_tensors(ds.train)
    xt, yt = to_tensors(ds.test)
    for name in ("digits_mlp", "digits_cnn"):
        torch.manual_seed(0)
        model = build_model(name, ds)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(3):
            for idx in torch.randperm(len(y)).split(64):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
        with torch.no_grad():
            acc = float((model(xt).argmax(1) == yt).float().mean())
        assert acc > 0.9, (name, acc)


def test_unknown_model_and_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model 'resnet'; available: digits_cnn, digits_mlp"):
        build_model("resnet")
    with pytest.raises(ConfigError, match="does not accept"):
        build_model("vgg9", width=3)


# ----------------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", ["cifar10", "femnist", "shakespeare"])
def test_presets_name_a_known_dataset_model_and_partition(name: str) -> None:
    p = get_preset(name)
    assert p.name == name and p.dataset == name and p.clients == 20
    assert p.model in MODELS and MODELS[p.model].dataset == p.dataset
    assert p.partition in ("iid", "dirichlet", "natural") and p.optimizer in ("sgd", "adam")
    assert 0 < p.target_accuracy < 1 and p.lr > 0 and p.rounds >= 1


def test_preset_errors() -> None:
    assert set(PRESETS) == {"cifar10", "femnist", "shakespeare"}
    with pytest.raises(ConfigError, match="available: cifar10, femnist, shakespeare"):
        get_preset("mnist")
    with pytest.raises(ConfigError, match="target_accuracy"):
        Preset(name="x", dataset="digits", model="digits_cnn", partition="iid", target_accuracy=1.5)
