"""Dataset value types, the embedded digits, and the partition schemes (issue 3 item 2; issue 2 item 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clipfl.data import (
    ArraySplit,
    Normalization,
    load_dataset,
    make_partition,
    partition,
    partition_stats,
    subsample,
    to_tensors,
)
from clipfl.errors import DataError


def _split(n: int, classes: int = 10, groups: int | None = None, seed: int = 0) -> ArraySplit:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 1, 2, 2), dtype=np.uint8)
    y = rng.integers(0, classes, size=n)
    g = rng.integers(0, groups, size=n).astype(np.int32) if groups else None
    return ArraySplit(x, y, g, Normalization(1 / 255, (0.5,), (0.25,)))


# ----------------------------------------------------------------------------------------- tensors


def test_to_tensors_normalises_exactly_per_channel() -> None:
    x = np.array([[[[0, 255]], [[51, 102]]]], dtype=np.uint8)  # 1 sample, 2 channels, 1x2
    split = ArraySplit(x, np.array([3]), None, Normalization(1 / 255, (0.0, 0.2), (1.0, 0.2)))
    xt, yt = to_tensors(split)
    assert xt.dtype == torch.float32 and yt.dtype == torch.int64
    torch.testing.assert_close(xt, torch.tensor([[[[0.0, 1.0]], [[0.0, 1.0]]]]))
    assert yt.tolist() == [3]


def test_to_tensors_selects_indices_and_owns_memory() -> None:
    split = _split(50)
    idx = np.array([4, 0, 9])
    xt, yt = to_tensors(split, idx)
    assert yt.tolist() == split.y[idx].tolist()
    full, _ = to_tensors(split)
    assert torch.equal(xt, full[idx])
    xt[0] = 0  # a client may train in place without touching the dataset
    assert split.x[4].any()


def test_to_tensors_tokens_are_int64_ids() -> None:
    split = ArraySplit(np.array([[1, 2, 80]], dtype=np.uint8), np.array([5], dtype=np.uint8))
    x, y = to_tensors(split)
    assert x.dtype == torch.int64 and x.tolist() == [[1, 2, 80]] and y.tolist() == [5]


def test_array_split_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="samples"):
        ArraySplit(np.zeros((3, 4)), np.zeros(2))
    with pytest.raises(ValueError, match="groups"):
        ArraySplit(np.zeros((3, 4)), np.zeros(3), np.zeros(2))


# ------------------------------------------------------------------------------------------ digits


def test_digits_is_the_embedded_default_split_80_20_stratified() -> None:
    ds = load_dataset("digits")
    assert (len(ds.train), len(ds.test)) == (1438, 359)
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10 and ds.natural_clients is None
    assert ds.train.x.dtype == np.uint8 and ds.train.x.shape[1:] == (1, 8, 8) and ds.train.x.max() == 16
    per_class = np.bincount(ds.test.y, minlength=10)
    assert per_class.sum() == 359 and per_class.min() >= 35  # stratified: every class ~20 %
    again = load_dataset("digits")
    assert np.array_equal(ds.test.x, again.test.x) and np.array_equal(ds.train.y, again.train.y)


def test_digits_train_and_test_are_disjoint_and_cover_all_samples() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    ref = load_digits().data.astype(np.uint8).reshape(-1, 64)
    rows = {r.tobytes() for r in ref}
    got = [r.tobytes() for r in np.concatenate([ds.train.x, ds.test.x]).reshape(-1, 64)]
    assert len(got) == len(ref) and set(got) == rows


def test_digits_normalised_inputs_are_roughly_standard() -> None:
    x, _ = to_tensors(load_dataset("digits").train)
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


# -------------------------------------------------------------------------------------- partitions


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 400), clients=st.integers(1, 8), seed=st.integers(0, 2**31))
def test_iid_is_an_exact_balanced_cover(n: int, clients: int, seed: int) -> None:
    parts = partition(_split(n), "iid", clients, seed=seed, min_samples=1)
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(n))  # disjoint and complete
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(np.array_equal(p, np.sort(p)) for p in parts)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    clients=st.integers(2, 10),
    alpha=st.sampled_from([0.1, 0.5, 1.0, 100.0]),
)
def test_dirichlet_is_a_cover_with_the_minimum(seed: int, clients: int, alpha: float) -> None:
    split = _split(600, seed=1)
    parts = partition(split, "dirichlet", clients, seed=seed, alpha=alpha, min_samples=5)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(600))
    assert min(len(p) for p in parts) >= 5


def test_partitions_are_deterministic_by_seed() -> None:
    split = _split(500, groups=30)
    for scheme in ("iid", "dirichlet", "natural"):
        a = partition(split, scheme, 5, seed=7, min_samples=1, pick="sample")
        b = partition(split, scheme, 5, seed=7, min_samples=1, pick="sample")
        c = partition(split, scheme, 5, seed=8, min_samples=1, pick="sample")
        assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
        assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


def test_dirichlet_small_alpha_skews_labels_and_large_alpha_does_not() -> None:
    split = _split(5000, seed=2)

    def mean_classes(alpha: float) -> float:
        parts = partition(split, "dirichlet", 10, seed=0, alpha=alpha, min_samples=1)
        return float(np.mean([len(np.unique(split.y[p])) for p in parts]))

    assert mean_classes(0.05) < 6 < 9.9 <= mean_classes(1000.0)


def test_natural_gives_each_client_one_whole_group_and_its_test_samples() -> None:
    train, test = _split(800, groups=40, seed=3), _split(200, groups=40, seed=4)
    from clipfl.data import Dataset

    ds = Dataset("toy", train, test, 10, (1, 2, 2), 40)
    part = make_partition(ds, "natural", 6, seed=0, min_samples=1)
    assert part.groups is not None and part.test is not None
    counts = np.bincount(train.groups, minlength=40)  # type: ignore[arg-type]
    assert sorted(counts[list(part.groups)].tolist()) == sorted(counts)[-6:]  # the 6 largest
    for g, tr, te in zip(part.groups, part.train, part.test, strict=True):
        assert np.array_equal(tr, np.flatnonzero(train.groups == g))
        assert np.array_equal(te, np.flatnonzero(test.groups == g))


def test_natural_sample_picks_among_eligible_groups_only() -> None:
    split = _split(300, groups=30, seed=5)
    counts = np.bincount(split.groups, minlength=30)  # type: ignore[arg-type]
    need = int(np.sort(counts)[-12])
    part = make_partition(split, "natural", 10, seed=3, min_samples=need, pick="sample")
    assert part.groups is not None and all(counts[g] >= need for g in part.groups)


def test_impossible_partitions_raise_one_line_data_errors() -> None:
    split = _split(50, groups=3)
    cases = [
        dict(scheme="iid", n_clients=6, min_samples=10),
        dict(scheme="dirichlet", n_clients=6, min_samples=10),
        dict(scheme="natural", n_clients=4, min_samples=1),
        dict(scheme="bogus", n_clients=2, min_samples=1),
        dict(scheme="iid", n_clients=0, min_samples=1),
    ]
    for case in cases:
        with pytest.raises(DataError) as info:
            partition(split, **case)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="no writers or roles"):
        partition(_split(50), "natural", 2)


def test_dirichlet_gives_up_when_the_minimum_is_unreachable() -> None:
    split = _split(100, classes=2, seed=6)
    with pytest.raises(DataError, match="attempts"):
        partition(split, "dirichlet", 9, seed=0, alpha=0.01, min_samples=11)


def test_partition_stats_and_subsample() -> None:
    part = make_partition(_split(103), "iid", 4, seed=0, min_samples=1)
    assert partition_stats(part) == {"clients": 4, "min": 25, "median": 26.0, "max": 26, "total": 103}
    idx = np.arange(10, 30)
    sub = subsample(idx, 5, seed=1)
    assert len(sub) == 5 and set(sub) <= set(idx) and np.array_equal(sub, np.sort(sub))
    assert np.array_equal(sub, subsample(idx, 5, seed=1))
    assert subsample(idx, None, seed=0) is not None and len(subsample(idx, 100, seed=0)) == 20


def test_digits_read_from_the_bundled_file_equal_scikit_learns_loader() -> None:
    from sklearn.datasets import load_digits as sk_load_digits

    from clipfl.data.digits import _bundled_digits

    x, y = _bundled_digits()
    bunch = sk_load_digits()
    np.testing.assert_array_equal(x, bunch.data)
    np.testing.assert_array_equal(y, bunch.target)
