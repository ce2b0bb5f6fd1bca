"""Every accepted on-disk format, on tiny fixtures written here in that exact format (issue 3 item 1).

Each fixture is built from known arrays, so the loaders are checked for exact pixels, labels, groups
and order; then the same files are damaged to check the one-line ``DataError`` contract, and the
decode cache is checked for reuse and invalidation.
"""

from __future__ import annotations

import json
import pickle
import tarfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from PIL import Image

import clipfl.data.cifar as cifar_mod
from clipfl.data import load_dataset, make_partition, to_tensors
from clipfl.data.cache import cached, load_npz_mapped
from clipfl.data.shakespeare import LEAF_VOCAB, UNKNOWN, encode, leaf_text
from clipfl.errors import DataError

CLASSES = ["bird", "airplane", "cat"]  # deliberately unsorted: labels follow sorted folder names


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- CIFAR


def _write_batches(d: Path, per_batch: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d.mkdir(parents=True)
    xs, ys = [], []
    for i, name in enumerate(
        ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    ):
        x = _images(per_batch, i)
        y = [(i + k) % 10 for k in range(per_batch)]
        doc = {
            b"batch_label": name.encode(),
            b"labels": y,
            b"data": x.reshape(per_batch, -1),
            b"filenames": [],
        }
        (d / name).write_bytes(pickle.dumps(doc, protocol=2))
        xs.append(x)
        ys.append(np.array(y))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def test_cifar_python_batches_dir(tmp_path: Path) -> None:
    x_tr, y_tr, x_te, y_te = _write_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path, cache_dir=False)
    assert (len(ds.train), len(ds.test), ds.num_classes, ds.input_shape) == (20, 4, 10, (3, 32, 32))
    assert np.array_equal(ds.train.x, x_tr) and np.array_equal(ds.train.y, y_tr)
    assert np.array_equal(ds.test.x, x_te) and np.array_equal(ds.test.y, y_te)
    assert ds.source.startswith("batches:")


def test_cifar_official_tar_gz_read_unopened(tmp_path: Path) -> None:
    x_tr, _, _, y_te = _write_batches(tmp_path / "src" / "cifar-10-batches-py")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path / "cifar-10-python.tar.gz", cache_dir=False)
    assert np.array_equal(ds.train.x, x_tr) and np.array_equal(ds.test.y, y_te)
    assert ds.source.startswith("batches-tar:")


def test_cifar_batches_refuse_pickled_code(tmp_path: Path) -> None:
    _write_batches(tmp_path / "b")

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("owned",))

    (tmp_path / "b" / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3.*refusing to load \S*print"):
        load_dataset("cifar10", tmp_path / "b", cache_dir=False)


def _write_tree(root: Path, ext: str = "png") -> dict[str, list[tuple[str, np.ndarray]]]:
    """{split: [(class, image CHW)]} written as root/{train,test}/<class>/NNNN.<ext>."""
    written: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    for s, split in enumerate(("train", "test")):
        for c, cls in enumerate(CLASSES):
            imgs = _images(3 - s, 10 * s + c)
            for k, img in enumerate(imgs):
                p = root / split / cls / f"{k:04d}.{ext}"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img.transpose(1, 2, 0)).save(p)
                written[split].append((cls, img))
    return written


def _expected(written: dict[str, list[tuple[str, np.ndarray]]], split: str) -> tuple[np.ndarray, np.ndarray]:
    items = sorted(((cls, k), img) for k, (cls, img) in enumerate(written[split]))
    order = sorted(CLASSES)
    return np.stack([img for _, img in items]), np.array([order.index(cls) for (cls, _), _ in items])


def test_cifar_image_folder_tree_labels_by_sorted_class(tmp_path: Path) -> None:
    written = _write_tree(tmp_path / "cifar10-png")  # one level below the data dir, like the real tree
    ds = load_dataset("cifar10", tmp_path, cache_dir=False)
    x, y = _expected(written, "train")
    assert ds.class_names == ("airplane", "bird", "cat") and ds.num_classes == 3
    assert np.array_equal(ds.train.x, x) and np.array_equal(ds.train.y, y)  # PNG is lossless
    assert np.bincount(ds.test.y).tolist() == [2, 2, 2]


def test_cifar_image_tree_tar_gz_and_jpeg(tmp_path: Path) -> None:
    written = _write_tree(tmp_path / "src" / "cifar10-jpeg", ext="jpg")
    with tarfile.open(tmp_path / "cifar10-jpeg.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar10-jpeg", arcname="cifar10-jpeg")
    (tmp_path / "data").mkdir()
    (tmp_path / "cifar10-jpeg.tar.gz").rename(tmp_path / "data" / "cifar10-jpeg.tar.gz")
    ds = load_dataset("cifar10", tmp_path / "data", cache_dir=False)
    x, y = _expected(written, "test")
    assert np.array_equal(ds.test.y, y) and ds.test.x.shape == x.shape and ds.test.x.dtype == np.uint8
    # JPEG is lossy: decoded pixels are close to, not equal to, what was written.
    assert np.abs(ds.test.x.astype(int) - x).mean() < 60


def test_cifar_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="accepted: cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path / "empty")
    _write_batches(tmp_path / "b")
    (tmp_path / "b" / "test_batch").write_bytes((tmp_path / "b" / "test_batch").read_bytes()[:500])
    with pytest.raises(DataError, match=r"test_batch.*truncated"):
        load_dataset("cifar10", tmp_path / "b", cache_dir=False)
    (tmp_path / "b" / "data_batch_2").unlink()
    with pytest.raises(DataError, match="data_batch_2 is missing"):
        load_dataset("cifar10", tmp_path / "b", cache_dir=False)
    tree = tmp_path / "t"
    _write_tree(tree)
    (tree / "train" / "cat" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"0000.png.*cannot be decoded"):
        load_dataset("cifar10", tree, cache_dir=False)
    Image.new("RGB", (8, 8)).save(tree / "train" / "cat" / "0000.png")
    with pytest.raises(DataError, match="8x8, CIFAR-10 needs 32x32"):
        load_dataset("cifar10", tree, cache_dir=False)
    (tree / "train" / "cat" / "0000.png").unlink()
    (tree / "test" / "dog").mkdir()
    Image.new("RGB", (32, 32)).save(tree / "test" / "dog" / "0.png")
    with pytest.raises(DataError, match="class folders differ"):
        load_dataset("cifar10", tree, cache_dir=False)
    good = tmp_path / "g"
    _write_tree(good / "src")
    with tarfile.open(good / "x.tar.gz", "w:gz") as tf:
        tf.add(good / "src", arcname="tree")
    raw = (good / "x.tar.gz").read_bytes()
    (good / "x.tar.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("cifar10", good / "x.tar.gz", cache_dir=False)


# ----------------------------------------------------------------------------------------- FEMNIST


def _femnist_arrays(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 62, 30).astype(np.int16),
        "writer_train": np.repeat(np.arange(3), 10).astype(np.int32),
        "x_test": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 62, 6).astype(np.int16),
        "writer_test": np.array([0, 0, 1, 1, 2, 2], dtype=np.int32),
        "writers": np.array(["f0001_00", "f0002_11", "f0003_22"]),
        "writer_source": np.array(["a", "b", "c"]),
    }


def test_femnist_npz(tmp_path: Path) -> None:
    a = _femnist_arrays()
    np.savez_compressed(tmp_path / "femnist.npz", **a)
    ds = load_dataset("femnist", tmp_path, cache_dir=False)
    assert (len(ds.train), len(ds.test), ds.num_classes, ds.natural_clients) == (30, 6, 62, 3)
    assert np.array_equal(ds.train.x[:, 0], a["x_train"]) and np.array_equal(ds.test.y, a["y_test"])
    assert ds.group_names == ("f0001_00", "f0002_11", "f0003_22")
    part = make_partition(ds, "natural", 2, seed=0, min_samples=5)
    assert part.test is not None and [len(t) for t in part.test] == [2, 2]


def _write_leaf(root: Path, split: str, users: dict[str, tuple[list, list]], shards: int = 1) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    names = list(users)
    for s in range(shards):
        mine = names[s::shards]
        doc = {
            "users": mine,
            "num_samples": [len(users[u][1]) for u in mine],
            "user_data": {u: {"x": users[u][0], "y": users[u][1]} for u in mine},
        }
        (root / split / f"all_data_{s}_niid_05_keep_0_{split}_9.json").write_text(json.dumps(doc))


def test_femnist_leaf_json_matches_the_npz_pixels(tmp_path: Path) -> None:
    a = _femnist_arrays(1)
    users = {}
    for split in ("train", "test"):
        users[split] = {
            str(w): (
                (a[f"x_{split}"][a[f"writer_{split}"] == i].reshape(-1, 784) / 255.0).tolist(),
                a[f"y_{split}"][a[f"writer_{split}"] == i].tolist(),
            )
            for i, w in enumerate(a["writers"])
        }
        _write_leaf(tmp_path / "leaf-json", split, users[split], shards=2)
    np.savez(tmp_path / "union.npz", **a)
    leaf = load_dataset("femnist", tmp_path, cache_dir=False, fmt="leaf")
    npz = load_dataset("femnist", tmp_path, cache_dir=False)  # npz preferred when both are there
    assert npz.source.startswith("npz:") and leaf.source.startswith("leaf:")
    assert leaf.natural_clients == 3 and len(leaf.train) == 30
    for w in range(3):
        name = a["writers"][w]
        lg = leaf.group_names.index(name)  # type: ignore[union-attr]
        assert np.array_equal(leaf.train.x[leaf.train.groups == lg], npz.train.x[npz.train.groups == w])
        assert np.array_equal(leaf.test.y[leaf.test.groups == lg], npz.test.y[npz.test.groups == w])


def test_femnist_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match=r"no FEMNIST data.*LEAF"):
        load_dataset("femnist", tmp_path / "e")
    a = _femnist_arrays()
    np.savez(tmp_path / "e" / "f.npz", **{k: v for k, v in a.items() if k != "writers"})
    with pytest.raises(DataError, match="lacks writers"):
        load_dataset("femnist", tmp_path / "e", cache_dir=False)
    np.savez(tmp_path / "e" / "f.npz", **a)
    raw = (tmp_path / "e" / "f.npz").read_bytes()
    (tmp_path / "e" / "f.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("femnist", tmp_path / "e", cache_dir=False)
    _write_leaf(tmp_path / "l", "train", {"u": ([[0.5] * 784], [3])})
    _write_leaf(tmp_path / "l", "test", {"u": ([[0.5] * 784], [99])})
    with pytest.raises(DataError, match=r"labels outside 0..61"):
        load_dataset("femnist", tmp_path / "l", cache_dir=False)
    (tmp_path / "l" / "test" / "all_data_0_niid_05_keep_0_test_9.json").write_text(
        '{"users": ["u"], "user_da'
    )
    with pytest.raises(DataError, match="truncated or not JSON"):
        load_dataset("femnist", tmp_path / "l", cache_dir=False)


# ------------------------------------------------------------------------------------- Shakespeare

ROLE_A = ["To be, or not to be:  that is the question.", "Whether 'tis nobler in the mind to suffer"]
ROLE_B = ["The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles", "é!"]


def _write_tff(path: Path, roles: dict[str, list[str]]) -> None:
    with h5py.File(path, "w") as f:
        for role, snippets in roles.items():
            f.create_dataset(
                f"examples/{role}/snippets",
                data=[s.encode("utf-8") for s in snippets],
                dtype=h5py.string_dtype("utf-8"),
            )


def test_leaf_text_and_vocabulary() -> None:
    assert len(LEAF_VOCAB) == 80 and UNKNOWN == 80
    assert leaf_text(["a\nb", "c  d   e"]) == "a b c d e "
    assert encode("Az}").tolist() == [LEAF_VOCAB.index("A"), LEAF_VOCAB.index("z"), 79]
    assert encode("é\t").tolist() == [UNKNOWN, UNKNOWN]


def test_shakespeare_tff_hdf5_windows(tmp_path: Path) -> None:
    _write_tff(tmp_path / "shakespeare_train.h5", {"PLAY_A": ROLE_A, "PLAY_B": ROLE_B, "PLAY_C": ["short"]})
    _write_tff(tmp_path / "shakespeare_test.h5", {"PLAY_A": ROLE_A[:1] * 3, "PLAY_B": ROLE_B[:1]})
    ds = load_dataset("shakespeare", tmp_path, cache_dir=False)
    texts = [leaf_text(ROLE_A), leaf_text(ROLE_B), leaf_text(["short"])]
    assert len(ds.train) == sum(max(0, len(t) - 80) for t in texts)  # one sample per 80-char window
    assert ds.natural_clients == 3 and ds.num_classes == 81 and ds.input_shape == (80,)
    assert ds.group_names == ("PLAY_A", "PLAY_B", "PLAY_C")
    b = np.flatnonzero(ds.train.groups == 1)
    tb = texts[1]
    for k in (0, len(b) - 1):
        assert "".join(LEAF_VOCAB[i] if i < 80 else "?" for i in ds.train.x[b[k]]) == tb[k : k + 80].replace(
            "é", "?"
        )
        assert ds.train.y[b[k]] == encode(tb[k + 80])[0]
    x, _ = to_tensors(ds.train, b[:2])
    assert x.shape == (2, 80) and str(x.dtype) == "torch.int64"
    assert len(ds.test) == max(0, len(leaf_text(ROLE_A[:1] * 3)) - 80) + max(
        0, len(leaf_text(ROLE_B[:1])) - 80
    )


def test_shakespeare_leaf_json(tmp_path: Path) -> None:
    text = leaf_text(ROLE_A + ROLE_B)
    xs = [text[i : i + 80] for i in range(len(text) - 80)]
    ys = [text[i + 80] for i in range(len(text) - 80)]
    _write_leaf(tmp_path, "train", {"HAMLET": (xs[:5], ys[:5]), "OPHELIA": (xs[5:], ys[5:])})
    _write_leaf(tmp_path, "test", {"HAMLET": (xs[:2], ys[:2])})
    ds = load_dataset("shakespeare", tmp_path, cache_dir=False)
    assert ds.source.startswith("leaf:") and ds.natural_clients == 2 and len(ds.train) == len(xs)
    assert np.array_equal(ds.train.x[7], encode(xs[7])) and ds.train.y[7] == encode(ys[7])[0]
    assert ds.test.groups.tolist() == [0, 0]  # type: ignore[union-attr]


def test_shakespeare_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="TFF HDF5 files"):
        load_dataset("shakespeare", tmp_path)
    _write_tff(tmp_path / "shakespeare_train.h5", {"A": ROLE_A})
    (tmp_path / "shakespeare_test.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"shakespeare_test.h5.*truncated or corrupt"):
        load_dataset("shakespeare", tmp_path, cache_dir=False)
    with h5py.File(tmp_path / "shakespeare_test.h5", "w") as f:
        f.create_dataset("other", data=[1])
    with pytest.raises(DataError, match="no /examples group"):
        load_dataset("shakespeare", tmp_path, cache_dir=False)
    leaf = tmp_path / "leaf"
    _write_leaf(leaf, "train", {"A": (["too short"], ["x"])})
    _write_leaf(leaf, "test", {"A": (["too short"], ["x"])})
    with pytest.raises(DataError, match="not 80-character strings"):
        load_dataset("shakespeare", leaf, cache_dir=False)


def test_unknown_dataset_and_missing_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="expected one of digits, cifar10"):
        load_dataset("mnist")
    monkeypatch.delenv("CLIPFL_DATA", raising=False)
    with pytest.raises(DataError, match="--data-dir or set CLIPFL_DATA"):
        load_dataset("femnist")


# ------------------------------------------------------------------------------------------- cache


def test_cache_is_used_on_second_load_and_rebuilt_when_the_source_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_batches(tmp_path / "b", per_batch=8)  # 120 kB: large enough to be mapped, not read
    calls: list[Path] = []
    real = cifar_mod._batches_dir

    def counting(d: Path) -> dict[str, np.ndarray]:
        calls.append(d)
        return real(d)

    monkeypatch.setattr(cifar_mod, "_batches_dir", counting)
    cache = tmp_path / "cache"
    first = load_dataset("cifar10", tmp_path / "b", cache_dir=cache)
    second = load_dataset("cifar10", tmp_path / "b", cache_dir=cache)
    assert len(calls) == 1  # decoded once
    assert isinstance(second.train.x, np.memmap) and np.array_equal(first.train.x, second.train.x)
    entries = list(cache.glob("cifar10-batches-*.npz"))
    assert len(entries) == 1
    x_tr, _, _, _ = _write_batches(tmp_path / "b2", per_batch=5)  # a changed source is decoded again
    for f in (tmp_path / "b2").iterdir():
        f.replace(tmp_path / "b" / f.name)
    third = load_dataset("cifar10", tmp_path / "b", cache_dir=cache)
    assert len(calls) == 2 and len(third.train) == 25 and np.array_equal(third.train.x, x_tr)
    assert list(cache.glob("cifar10-batches-*.npz")) != entries and len(list(cache.glob("*.npz"))) == 1


def test_cache_of_a_file_source_follows_its_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPFL_CACHE", str(tmp_path / "envcache"))
    src = tmp_path / "src.bin"
    src.write_bytes(b"one")
    built: list[int] = []

    def build() -> dict[str, np.ndarray]:
        built.append(1)
        return {"v": np.frombuffer(src.read_bytes(), dtype=np.uint8).copy(), "n": np.array(len(built))}

    assert cached("t", [src], build, None)["v"].tobytes() == b"one"
    assert cached("t", [src], build, None)["v"].tobytes() == b"one" and len(built) == 1
    src.write_bytes(b"two")
    out = cached("t", [src], build, None)
    assert out["v"].tobytes() == b"two" and int(out["n"]) == 2 and out["n"].shape == ()
    assert (tmp_path / "envcache").is_dir()
    assert cached("t", [src], build, False)["v"].tobytes() == b"two" and len(built) == 3


def test_damaged_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.write_bytes(b"abc")
    build = lambda: {"x": np.arange(100_000, dtype=np.int32)}  # noqa: E731
    cached("d", [src], build, tmp_path / "c")
    (entry,) = (tmp_path / "c").glob("d-*.npz")
    entry.write_bytes(entry.read_bytes()[:1000])
    assert np.array_equal(cached("d", [src], build, tmp_path / "c")["x"], np.arange(100_000))
    assert np.array_equal(load_npz_mapped(entry)["x"], np.arange(100_000))


def test_unusable_cache_dir_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    src = tmp_path / "s"
    src.write_bytes(b"abc")
    with pytest.raises(DataError, match="not usable"):
        cached("d", [src], lambda: {"x": np.zeros(1)}, tmp_path / "file" / "sub")


def test_tensors_from_a_mapped_cache_are_writable_copies(tmp_path: Path) -> None:
    _write_batches(tmp_path / "b", per_batch=8)
    ds = load_dataset("cifar10", tmp_path / "b", cache_dir=tmp_path / "c")
    assert isinstance(ds.train.x, np.memmap) and not ds.train.x.flags.writeable
    x, y = to_tensors(ds.train)
    x.zero_()
    y.zero_()  # would fault if the tensors shared the read-only map
    assert ds.train.x.any() and ds.train.y.any()
