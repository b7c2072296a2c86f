"""The device line: ``backend_of(*arrays)`` returns the one :class:`Backend` that serves them.

This is the only way across the line. Everything above it (the kernels API, the models, the
E-step strategies) asks ``backend_of(x)`` and then uses what the backend carries:

- ``xp``: the array module (numpy or cupy);
- ``kernels``: the kernel twins of the public kernels API (``lgm._backends.cpu.kernels``, Numba;
  ``lgm._backends.gpu.launchers``, CUDA), same names and argument order (outputs first);
- ``lowrank``: the low-rank-plus-diagonal Gaussian's row passes and missing-value twins
  (``row_stats``, ``missing_rows_logpdf``, ``missing_estep``, ``missing_mstep_stats``);
- ``nn``: the layers' elementwise passes (``bias_act``, ``act_bias_backward``,
  ``relu_backward``, ``adam_step``): Numba on the CPU (``cpu.nn``), array expressions on the
  GPU (``gpu.nn``, which is also their specification);
- ``to_host(a)``: a numpy copy of a device array (host arrays and scalars pass as numpy);
- ``threads()``: the threading policy for model work (below);
- ``pair(first, second)``: ``(first(), second())`` for two independent pieces of model work,
  side by side on two cores where they are free (CPU: ``cpu.policy.pair``), else one after the
  other (always on the GPU), with the same results either way.

Detection is by the array's type module ("cupy" -> the GPU backend, anything else -> the CPU
one); cupy is imported only when a cupy array arrives, so the CPU path never needs it.

Threading policy (CPU): model work alternates BLAS calls (OpenBLAS's own pool, whose workers
keep spinning for a while after each call) with small elementwise Numba kernels. A parallel Numba
region started while those workers spin fights them for the cores: on 2 cores training steps
were 3-7x slower, measured. Inside ``threads()`` lgm's Numba kernels run on one thread
(thread-local, restored on exit). It is entered by the VAE's public compute methods (one
decorator) and by ``lowrank_gaussian_logpdf`` around its row passes; the kernels API called
directly keeps Numba's threads, less the cores other runnable tasks on the machine take
(``cpu.policy``: the kernels are seen through ``LoadAwareKernels``; LGM_THREAD_POLICY=fixed or
``lgm.set_thread_policy("fixed")`` turns that off). On the GPU ``threads()`` does nothing.

Naming, one name per idea on both sides of the line: D the data dimension, d the latent
dimension, S the number of samples (importance samples, Monte Carlo samples, chains' draws), B
the batch, R the rows of a collapsed leading shape, N the data points. Shape suffixes on kernel
arguments say the layout: ``x_rd`` (R, D), ``t_rl`` (R, d) with l for latent, ``lw_sb`` (S, B).
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np

from .cpu.policy import set_thread_policy, thread_policy

__all__ = ["Backend", "backend_of", "backend_for", "module_name", "gpu_info", "set_thread_policy",
           "thread_policy"]


def module_name(a):
    """'cupy' for a cupy array, 'numpy' otherwise (cupy is never imported here)."""
    return "cupy" if type(a).__module__.split(".", 1)[0] == "cupy" else "numpy"


def device_to_host(a):
    """A numpy copy of a cupy array; anything else (a host array, a scalar) as a numpy array."""
    return a.get() if module_name(a) == "cupy" else np.asarray(a)


class Backend:
    """What one device offers (see the module docstring). Made once per device and cached."""

    def __init__(self, name, xp, kernels, lowrank, nn, to_host, threads, pair=None):
        self.name, self.xp, self.kernels, self.lowrank, self.nn = name, xp, kernels, lowrank, nn
        self.to_host = to_host
        self._threads = threads
        self._pair = pair

    def threads(self):
        """Context manager: the threading policy for model work on this device."""
        return self._threads()

    def pair(self, first, second):
        """(first(), second()): two independent pieces of model work, called from inside
        :meth:`threads`; side by side where the device has two free cores for them."""
        if self._pair is None:
            return first(), second()
        return self._pair(first, second, self._threads)

    def __repr__(self):
        return f"Backend({self.name!r})"


class _SerialNumba:
    """lgm's Numba kernels on one thread inside the block (thread-local, restored on exit)."""

    def __enter__(self):
        import numba

        self._n = numba.get_num_threads()
        numba.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        import numba

        numba.set_num_threads(self._n)
        return False


def _cpu():
    from . import batched
    from .cpu import kernels, lowrank, nn
    from .cpu.policy import LoadAwareKernels, pair

    low = SimpleNamespace(row_stats=lowrank.row_stats, missing_rows_logpdf=lowrank.missing_rows_logpdf,
                          missing_estep=lowrank.missing_estep,
                          missing_mstep_stats=lambda *a: batched.missing_mstep_stats(np, *a))
    return Backend("numpy", np, LoadAwareKernels(kernels), low, nn, np.asarray, _SerialNumba, pair)


def _gpu(fname):
    try:
        import cupy

        from .gpu import launchers
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(f"{fname}: cupy arrays need the GPU backend (cupy and a CUDA GPU): "
                           f"{exc}") from exc
    from . import batched
    from .gpu import nn as gpu_nn

    low = SimpleNamespace(row_stats=launchers.row_stats,
                          missing_rows_logpdf=lambda *a: batched.missing_rows_logpdf(cupy, *a),
                          missing_estep=lambda *a: batched.missing_estep(cupy, *a),
                          missing_mstep_stats=lambda *a: batched.missing_mstep_stats(cupy, *a))
    return Backend("cupy", cupy, launchers, low, gpu_nn, device_to_host, contextlib.nullcontext)


_BACKENDS: dict = {}


def backend_of(*arrays, fname="lgm"):
    """The :class:`Backend` for ``arrays`` (arrays or None; anything that is not a cupy array
    counts as host data). A mix of numpy and cupy arrays is a TypeError naming ``fname``."""
    names = {module_name(a) for a in arrays if a is not None}
    if len(names) > 1:
        raise TypeError(f"{fname}: expected all arrays on one device, got a mix of numpy and cupy; "
                        "move them with cupy.asarray(...) or cupy.asnumpy(...)")
    return _named(names.pop() if names else "numpy", fname)


def backend_for(device):
    """The Backend of a device named ``"cpu"`` or ``"gpu"`` (for moving data there when no array
    of that device exists yet)."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"expected device 'cpu' or 'gpu', got {device!r}")
    return _named("numpy" if device == "cpu" else "cupy", f"device {device!r}")


def _named(name, fname):
    """The cached Backend for an array-module name, made on first use."""
    hit = _BACKENDS.get(name)
    if hit is None:
        hit = _BACKENDS[name] = _cpu() if name == "numpy" else _gpu(fname)
    return hit


def gpu_info():
    """One line on the GPU backend (device, cupy, how each kernel file was loaded); raises when
    the backend is unavailable (no cupy, no GPU)."""
    from .gpu import launchers

    return launchers.backend_info()
