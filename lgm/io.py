"""Files: atomic .npz writes (nothing a user saved is half-overwritten) and pickle-free reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["write_atomic", "save_npz_atomic", "load_npz", "pack_json", "unpack_json"]


def write_atomic(path, content):
    """Write ``content`` (str, bytes, or a callable taking a binary file) to ``path`` atomically:
    a temporary file in the same directory, flushed and fsync'ed, then ``os.replace`` — a crash
    leaves the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_npz_atomic(path, **arrays):
    """Write ``arrays`` to ``path`` (.npz) atomically (see :func:`write_atomic`)."""
    if Path(path).suffix != ".npz":
        raise ValueError(f"save_npz_atomic: expected path ending in .npz, got {str(path)!r}")
    return write_atomic(path, lambda f: np.savez(f, **arrays))


def load_npz(path):
    """All arrays of an .npz file as a dict, read with ``allow_pickle=False``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_npz: no such file {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        raise ValueError(f"load_npz: {str(path)!r} is not a pickle-free .npz file ({exc})") from exc


def pack_json(obj):
    """A JSON document as a 0-d unicode array (storable in .npz without pickle)."""
    return np.array(json.dumps(obj))


def unpack_json(a):
    return json.loads(str(a[()]))
