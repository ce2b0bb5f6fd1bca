"""The loaders on the real datasets in ../shared/data (or $CLIPFL_DATA): the issue 3 contract.

Skipped, with the reason, when the folder is absent. Decoded arrays go to one cache directory for
the whole session, so the 60,000 CIFAR-10 JPEGs are decoded once (about 10 s).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from clipfl.data import load_dataset, make_partition, to_tensors
from clipfl.data.__main__ import main as data_main
from clipfl.data.types import Dataset


def _data_root() -> Path | None:
    env = os.environ.get("CLIPFL_DATA")
    for cand in (Path(env) if env else None, Path(__file__).resolve().parents[2] / "shared" / "data"):
        if cand is not None and cand.is_dir():
            return cand
    return None


ROOT = _data_root()
pytestmark = pytest.mark.skipif(
    ROOT is None, reason="real datasets absent: neither $CLIPFL_DATA nor ../shared/data exists"
)


def _need(rel: str) -> Path:
    assert ROOT is not None
    path = ROOT / rel
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clipfl-cache")


@pytest.fixture(scope="session")
def load(cache: Path) -> Any:
    loaded: dict[tuple[str, str | None], Dataset] = {}

    def get(name: str, fmt: str | None = None) -> Dataset:
        if (name, fmt) not in loaded:
            loaded[name, fmt] = load_dataset(name, ROOT, cache_dir=cache, fmt=fmt)
        return loaded[name, fmt]

    return get


def _cli(cache: Path, *args: str) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = data_main([*args, "--data-dir", str(ROOT), "--cache-dir", str(cache), "--json"])
    assert rc == 0
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def test_cifar10_contract(cache: Path, load: Any) -> None:
    _need("cifar10/cifar10-jpeg.tar.gz")
    stats = _cli(cache, "--dataset", "cifar10")
    assert (stats["train_samples"], stats["test_samples"], stats["classes"]) == (50000, 10000, 10)
    assert stats["natural_clients"] is None
    ds = load("cifar10")
    assert ds.class_names[0] == "airplane" and ds.class_names[-1] == "truck"
    assert np.bincount(ds.train.y).tolist() == [5000] * 10 and np.bincount(ds.test.y).tolist() == [1000] * 10
    x, _ = to_tensors(ds.train, np.arange(0, 50000, 50))
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1  # the normalisation fits the data


def test_femnist_npz_contract_and_writers(cache: Path, load: Any) -> None:
    path = _need("femnist/femnist_leaf_union_300w.npz")
    stats = _cli(cache, "--dataset", "femnist", "--partition", "natural", "--clients", "20")
    assert (stats["train_samples"], stats["test_samples"], stats["classes"], stats["natural_clients"]) == (
        41432,
        4755,
        62,
        300,
    )
    assert stats["partition"]["clients"] == 20 and stats["partition"]["min"] >= 10
    ds = load("femnist")
    with np.load(path) as z:
        writers, w_train = z["writers"], z["writer_train"]
    assert ds.train.y.min() >= 0 and ds.train.y.max() == 61 and ds.test.y.max() <= 61
    for w in (0, 150, 299):  # a writer's samples all carry that writer, in both splits
        assert ds.group_names[w] == writers[w]
        assert np.array_equal(np.flatnonzero(ds.train.groups == w), np.flatnonzero(w_train == w))
    part = make_partition(ds, "natural", 20, seed=0)
    assert part.test is not None and all(len(t) > 0 for t in part.test)
    assert all(len(np.unique(ds.train.groups[i])) == 1 for i in part.train)


def test_femnist_leaf_shard_matches_the_npz_writers(load: Any) -> None:
    _need("femnist/leaf-json/train")
    _need("femnist/femnist_leaf_union_300w.npz")
    leaf, npz = load("femnist", "leaf"), load("femnist")
    assert (len(leaf.train), len(leaf.test), leaf.natural_clients) == (779, 89, 5)
    for name in leaf.group_names:
        lg, ng = leaf.group_names.index(name), npz.group_names.index(name)
        assert np.array_equal(leaf.train.x[leaf.train.groups == lg], npz.train.x[npz.train.groups == ng])
        assert np.array_equal(leaf.train.y[leaf.train.groups == lg], npz.train.y[npz.train.groups == ng])


def test_shakespeare_tff_contract(cache: Path, load: Any) -> None:
    train_h5 = _need("shakespeare/shakespeare_train.h5")
    stats = _cli(cache, "--dataset", "shakespeare")
    assert stats["natural_clients"] == 715 and stats["classes"] == 81
    # Independent count of LEAF's windows: a role's lines joined by newlines, newlines to spaces,
    # runs of spaces collapsed; one sample per 80-character window that has a next character.
    expected = 0
    with h5py.File(train_h5, "r") as f:
        for role in f["examples"]:
            text = "".join(s.decode() + "\n" for s in f["examples"][role]["snippets"][()])
            expected += max(0, len(re.sub(" {2,}", " ", text.replace("\n", " "))) - 80)
    assert stats["train_samples"] == expected == 2256123
    assert stats["test_samples"] == 284498
    ds = load("shakespeare")
    assert ds.train.x.shape == (2256123, 80) and int(ds.train.y.max()) < 81
    part = make_partition(ds, "natural", 20, seed=0)
    assert part.test is not None and len(part) == 20


def test_max_client_samples_caps_a_clients_own_test_split_too() -> None:
    """A natural partition's local test split is the client's data as much as its train split: the
    preset's cap bounds both (Shakespeare's roles hold thousands of test windows each)."""
    _need("femnist/femnist_leaf_union_300w.npz")
    from clipfl.config import RunConfig
    from clipfl.trainer import federation_data

    common = dict(dataset="femnist", data_dir=str(ROOT), partition="natural", clients=4, pick="largest")
    full = federation_data(RunConfig(**common))  # type: ignore[arg-type]
    capped = federation_data(RunConfig(**common, max_client_samples=12))  # type: ignore[arg-type]
    sizes = []
    for cid, share in full.items():
        assert share.test_y is not None and capped[cid].test_y is not None
        sizes.append(len(share.test_y))
        assert len(capped[cid].test_y) == min(12, len(share.test_y)) and len(capped[cid].y) == 12
        rows = {tuple(x.flatten().tolist()) for x in share.test_x}
        assert all(tuple(x.flatten().tolist()) in rows for x in capped[cid].test_x)  # a subset of its own
    assert max(sizes) > 12  # the cap bound
