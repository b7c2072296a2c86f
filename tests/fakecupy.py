"""A strict stand-in for cupy on the CPU, so that lgm's GPU dispatch (the code that runs when a
cupy array arrives) is exercised on machines without a GPU.

It keeps cupy's rules that host code can break, and nothing else:
- arrays are a separate type whose ``type(a).__module__`` is "cupy" (what lgm dispatches on);
- no implicit conversion to numpy (``np.asarray(a)`` raises, as cupy's ``__array__`` does);
  ``a.get()`` / ``cupy.asnumpy(a)`` copy to the host, ``float(a)`` / ``bool(a)`` of a 0-d array
  work;
- a numpy array mixed into an operation, a function call or an index raises TypeError (numpy
  scalars and Python numbers are fine);
- reductions give 0-d arrays, not numpy scalars.
The GPU launchers are replaced by their CPU counterparts (``FakeGPU``): lgm._backends.batched runs
on this module for the batched cuBLAS/cuSOLVER twins (so that code runs under the same strict
rules), the CPU composition for the fused importance-bound kernel, and the Numba twin (same name
and arguments) for every other CUDA kernel. What this cannot check: the CUDA source itself,
cupy's own numerics, and device memory (those need tests/test_gpu.py on a GPU).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import numpy.lib.mixins


def _refuse(x):
    raise TypeError(f"Unsupported type {type(x)} (fake cupy: a numpy array mixed into a device "
                    "operation; move it with cupy.asarray first)")


def _unwrap(x):
    """Device arrays -> their numpy payload; numpy arrays refused; containers recursed."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        _refuse(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic) and not isinstance(x, (np.dtype,)):
        return ndarray(np.asarray(x))  # cupy reductions give 0-d arrays
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


class ndarray(numpy.lib.mixins.NDArrayOperatorsMixin):
    __module__ = "cupy"

    def __init__(self, a):
        self._a = a

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs)))

    def __array_function__(self, func, types_, args, kwargs):
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def get(self):
        return self._a.copy()

    def __getattr__(self, name):
        if name.startswith("__"):  # no __array_interface__ & co.: numpy must not see the data
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *a, **k: _wrap(attr(*_unwrap(a), **_unwrap(k)))
        return _wrap(attr)

    def __getitem__(self, idx):
        return _wrap(self._a[_unwrap(idx)])

    def __setitem__(self, idx, value):
        self._a[_unwrap(idx)] = _unwrap(value)

    def __len__(self):
        return len(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __repr__(self):
        return f"fakecupy.{self._a!r}"


_CREATE = {"asarray", "array", "ascontiguousarray"}  # host data allowed (a copy to the device)
_TYPES = (type, np.dtype)


class _Namespace(types.ModuleType):
    def __init__(self, name, np_ns):
        super().__init__(name)
        self._np = np_ns

    def __getattr__(self, name):
        attr = getattr(self._np, name)
        if isinstance(attr, _TYPES) or not callable(attr):
            return attr
        if name in _CREATE:
            def create(a, *args, **kwargs):
                a = a._a if isinstance(a, ndarray) else a
                return ndarray(np.array(getattr(np, name)(a, *args, **kwargs)))
            return create
        return lambda *a, **k: _wrap(attr(*_unwrap(a), **_unwrap(k)))


cupy = _Namespace("cupy", np)
cupy.linalg = _Namespace("cupy.linalg", np.linalg)
cupy.ndarray = ndarray
cupy.asnumpy = lambda a: a.get() if isinstance(a, ndarray) else np.asarray(a)


class FakeGPU(types.ModuleType):
    """The CUDA launchers (lgm._backends.gpu.launchers), on the CPU under the strict rules."""

    def __init__(self):
        super().__init__("lgm._backends.gpu.launchers")

    def __getattr__(self, name):
        """Every other launcher: its CPU twin (same name and arguments) on the payloads."""
        from lgm._backends.cpu import kernels

        twin = getattr(kernels, name)
        # the index tables (lead, row strides) are host arrays by design: only they may be numpy
        return lambda *args: twin(*(a._a if isinstance(a, ndarray) else a for a in args))

    @staticmethod
    def backend_info():
        return "no GPU: the CPU stand-in of tests/fakecupy.py (a dry run)"

    @staticmethod
    def row_stats(quad_n, flags_n, x_nd, mean_d, inv_psi_d):
        from lgm._backends.cpu import lowrank

        lowrank.row_stats(*_unwrap((quad_n, flags_n, x_nd, mean_d, inv_psi_d)))

    @staticmethod
    def importance_bounds_fits(D, dtype, arrays):
        from lgm._backends.gpu import launch as _launch

        _unwrap(arrays)
        vw = _launch.vector_width(np.dtype(dtype).itemsize, D, [0])
        return vw if _launch.bounds_fits(D, vw) else 0

    @staticmethod
    def importance_bounds(lw_sb, elbo_b, iwae_b, x_bd, dec1_sbd, dec2_sbd, t_sbl, mt_bl, lt_bl, gaussian, vw):
        """What the fused CUDA kernel computes, by the CPU composition (for dry runs of the
        dispatch and of the GPU tests' expectations)."""
        import lgm

        x, d1, d2, t, mt, lt = _unwrap((x_bd, dec1_sbd, dec2_sbd, t_sbl, mt_bl, lt_bl))
        kw = dict(mu_x=d1, logvar_x=d2) if gaussian else dict(logits=d1)
        out = lgm.importance_bounds(x, t, mt, lt, **kw)
        for dev, host in zip((lw_sb, elbo_b, iwae_b), out):
            dev._a[...] = host


def _checked(fn):
    """A batched twin run on the fake cupy, refusing host arrays among its arguments."""
    def run(*args):
        _unwrap(args)  # every argument is a device array
        fn(cupy, *args)
    return run


def fake_backend():
    """The GPU Backend as lgm builds it, with the launchers replaced by FakeGPU: the batched
    missing-value twins and the layers' array expressions run on the fake cupy."""
    import contextlib
    from types import SimpleNamespace

    from lgm._backends import Backend, batched, device_to_host
    from lgm._backends.gpu import nn as gpu_nn

    gpu = FakeGPU()
    low = SimpleNamespace(row_stats=gpu.row_stats,
                          missing_rows_logpdf=_checked(batched.missing_rows_logpdf),
                          missing_estep=_checked(batched.missing_estep),
                          missing_mstep_stats=_checked(batched.missing_mstep_stats))
    return Backend("cupy", cupy, gpu, low, gpu_nn, device_to_host, contextlib.nullcontext)


def install(monkeypatch):
    """Route lgm's cupy dispatch to this module for one test; returns the fake cupy."""
    from lgm import _backends

    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(_backends._BACKENDS, "cupy", fake_backend())
    return cupy
