"""The one jit helper of the CPU backend: every Numba kernel of lgm is compiled through it, with
the same options everywhere.

- ``parallel=True`` where the kernel has a ``prange``: rows are split across Numba's threads
  (``parallel=False`` for kernels that run inside the serial threading policy or have no rows).
- ``fastmath={"reassoc", "contract"}``: reassociation lets LLVM vectorise the row sums,
  contraction allows FMA. Never "nnan"/"ninf": NaN and inf must behave as IEEE says (NaN
  propagates, an all -inf logsumexp row gives -inf). A kernel may ask for less (Adam: contract).
- ``error_model="numpy"``: division by zero gives inf/NaN instead of raising, and removes the
  zero checks that would block vectorisation.
- ``cache=True``: compiled code is cached on disk (keyed by the CPU and its features). Numba
  keys each kernel's entry on its own file only, and lgm's kernels inline functions of other
  files here (fastmath.py's exp / log1p): after a change to such a file alone (a ``git pull`` into
  an editable install) the kernels would load their old machine code. So the whole cache of
  this folder is dropped when any of its sources changes (:func:`drop_stale_cache`, at import).
- ``nogil=True``: callers' threads (dask's threaded scheduler) run kernels concurrently.
Scalar constants in kernels are made with ``x.dtype.type(c)`` so float32 kernels compute in
float32.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from numba import njit

FASTMATH = frozenset({"reassoc", "contract"})


def jit(parallel=True, fastmath=FASTMATH):
    """The decorator for a kernel (per-element terms are ``overload(..., inline="always")``
    functions, inlined into each caller's IR so that the caller's loop vectorises with them)."""
    return njit(parallel=parallel, fastmath=set(fastmath), error_model="numpy", cache=True,
                nogil=True)


def helper():
    """The decorator for a small serial function called from kernels (a q x q factorisation,
    a row index): cached, exact IEEE arithmetic."""
    return njit(cache=True)


def drop_stale_cache(sources, cache_dir):
    """Delete Numba's cache files (``*.nbi``, ``*.nbc``) in ``cache_dir`` unless the digest of
    ``sources`` (files) matches the one kept there from the last time; then keep this one.
    Returns True when it dropped the cache. Never raises: a read-only or missing cache folder
    leaves things as they are (Numba then caches elsewhere or not at all)."""
    digest = hashlib.sha256(b"".join(Path(f).read_bytes() for f in sorted(sources))).hexdigest()
    stamp = Path(cache_dir) / "lgm-sources.sha256"
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        for f in list(stamp.parent.glob("*.nbi")) + list(stamp.parent.glob("*.nbc")):
            f.unlink(missing_ok=True)  # a process reading one meanwhile recompiles (Numba's load)
        tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, stamp)
    except OSError:
        return False
    return True


def _where_numba_caches():
    """The folder where Numba caches the kernels of this folder's files (beside them, or under
    NUMBA_CACHE_DIR, or a user-wide folder for a read-only install), as Numba reports it."""


try:
    drop_stale_cache(Path(__file__).resolve().parent.glob("*.py"),
                     njit(cache=True)(_where_numba_caches).stats.cache_path)
except Exception:  # noqa: BLE001 — a cache check must never stop lgm from importing
    pass
