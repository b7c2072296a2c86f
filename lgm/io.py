"""Files: atomic .npz writes (nothing a user saved is half-overwritten) and pickle-free reads."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["write_atomic", "save_npz_atomic", "load_npz", "pack_json", "unpack_json",
           "check_writable"]


def _create_temporary(path):
    """A new file ``.{name}.{pid}.{random}.tmp`` beside ``path``, opened for writing: (fd, name).
    Created with mode 0666 so that the process's umask applies, as to any file a user writes
    (tempfile.mkstemp would make it 0600)."""
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                           0o666), str(tmp)
        except FileExistsError:  # pragma: no cover - 2^-32
            continue


def write_atomic(path, content):
    """Write ``content`` (str, bytes, or a callable taking a binary file) to ``path`` atomically.

    A temporary file unique to this call (``.{name}.{pid}.{random}.tmp`` in the same directory,
    so that threads and processes writing the same path never share one) is written, flushed
    and fsync'ed, then renamed over ``path`` with ``os.replace``, and the directory is fsync'ed
    so that the rename itself survives a crash: a reader sees the old file or the new one, never
    a torn one. On any failure the temporary is removed. Temporaries of ``path`` left by a
    process that was killed (their pid no longer runs) are removed after a successful write.
    Returns the path.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory, not a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    _remove_stale_temporaries(path)
    return path


def _fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's live process
        return True
    return True


def _remove_stale_temporaries(path):
    """Remove ``.{name}.{pid}.*.tmp`` files beside ``path`` whose writer process is gone."""
    prefix = f".{path.name}."
    for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = p.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                p.unlink()


def check_writable(path, what):
    """Raise OSError naming ``what`` unless a file can be written at ``path`` (checked before
    long work: a temporary file is created in its directory and removed)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what}: {str(path)!r} is a directory; expected a file name")
    d = path.parent
    blocker = next((p for p in (d, *d.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise NotADirectoryError(f"{what}: cannot write {str(path)!r}: {str(blocker)!r} is a file, "
                                 "not a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OSError(f"{what}: cannot write {str(path)!r} ({exc.strerror or exc})") from None
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
            if not hasattr(z, "files"):
                raise ValueError("it holds one array (.npy), not an .npz archive")
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        why = str(exc) or type(exc).__name__
        if "Object arrays" in why:
            why = "it holds object arrays, which need pickle; lgm reads pickle-free files only"
        elif "pickle" in why:  # numpy's word for "not a format I know"; lgm never loads pickles
            why = "numpy does not recognise it as an .npz archive"
        raise ValueError(f"{str(path)!r} is not a readable .npz file ({why})") from None


def pack_json(obj):
    """A JSON document as a 0-d unicode array (storable in .npz without pickle)."""
    return np.array(json.dumps(obj))


def unpack_json(a):
    """The JSON document stored by :func:`pack_json` (ValueError if it is not one)."""
    try:
        return json.loads(str(np.asarray(a)[()]))
    except (json.JSONDecodeError, IndexError, TypeError) as exc:
        raise ValueError(f"not a JSON document ({exc})") from None
