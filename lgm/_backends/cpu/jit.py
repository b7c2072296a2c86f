"""The one jit helper of the CPU backend: every Numba kernel of lgm is compiled through it, with
the same options everywhere.

- ``parallel=True`` where the kernel has a ``prange``: rows are split across Numba's threads
  (``parallel=False`` for kernels that run inside the serial threading policy or have no rows).
- ``fastmath={"reassoc", "contract"}``: reassociation lets LLVM vectorise the row sums,
  contraction allows FMA. Never "nnan"/"ninf": NaN and inf must behave as IEEE says (NaN
  propagates, an all -inf logsumexp row gives -inf). A kernel may ask for less (Adam: contract).
- ``error_model="numpy"``: division by zero gives inf/NaN instead of raising, and removes the
  zero checks that would block vectorisation.
- ``cache=True``: compiled code is cached on disk (keyed by the CPU and its features).
- ``nogil=True``: callers' threads (dask's threaded scheduler) run kernels concurrently.
Scalar constants in kernels are made with ``x.dtype.type(c)`` so float32 kernels compute in
float32.
"""

from __future__ import annotations

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
