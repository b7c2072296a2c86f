"""Input validation shared by every public entry point: one policy, the function's name in errors.

Policy (documented in README "Dtypes and broadcasting"):
- Arrays must be float32 or float64. Integer, boolean, complex and float16 arrays are refused with a
  TypeError (no silent cast: casting an int image to float is the caller's decision).
- All array arguments of one call share one dtype; mixing float32 and float64 is refused with a
  TypeError that says how to cast. Nothing is silently upcast.
- Python ``int``/``float`` scalars are "weak": they take the dtype of the array arguments.
- numpy and cupy arrays cannot be mixed in one call (TypeError with a hint).
- NaN and inf are allowed and propagate as IEEE arithmetic says (the estimators, which cannot take
  them, check for themselves).
- Masked arrays are refused (their mask would be ignored); np.matrix and other ndarray subclasses
  are read as plain arrays; non-native byte order (big-endian files) is converted to a native
  copy of the same dtype.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._backends import backend_of, module_name

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def is_dask(X):
    """Whether X is a dask collection (checked by module name: dask is not imported here)."""
    return type(X).__module__.split(".", 1)[0] == "dask"


def check_floats(fname, **arrays):
    """Validate dtypes and array modules; return (Backend, dtype, dict of arrays).

    ``None`` values are passed through. Python scalars become 0-d arrays of the common dtype.
    Written for a low per-call cost (it runs on every call, also for one-row problems).
    """
    mods = {}
    dtypes = {}
    out = {}
    scalars = False
    for name, a in arrays.items():
        if a is None:
            continue
        if type(a) is np.ndarray:
            mod = "numpy"
        elif isinstance(a, (bool, np.bool_)):
            raise TypeError(f"{fname}: expected {name} to be a real number or a float array, got {a!r}")
        elif isinstance(a, (int, float)) or (isinstance(a, numbers.Real) and not isinstance(a, np.generic)):
            scalars = True
            continue
        else:
            mod = module_name(a)
            if isinstance(a, np.ma.MaskedArray):
                raise TypeError(f"{fname}: {name} is a masked array, and lgm does not read masks; "
                                "pass its data (a.data), or a.filled(np.nan) to the estimators, "
                                "which take NaN as a missing value")
            if mod == "numpy" and type(a) is not np.ndarray:
                a = np.asarray(a)  # np.matrix and other subclasses: their data, as an ndarray
        mods[name] = mod
        dt = a.dtype
        if not dt.isnative:  # big-endian data: a native-order copy (same dtype, no upcast)
            a = a.astype(dt.newbyteorder("="))
            dt = a.dtype
        if dt.char not in "fd":  # float32, float64
            raise TypeError(
                f"{fname}: expected {name} to be a float32 or float64 array, got dtype {dt}"
                + (" (cast it explicitly, e.g. .astype(np.float32))" if dt.kind in "biuf" else "")
            )
        dtypes[name] = dt
        out[name] = a
    if len(mods) > 1 and len(set(mods.values())) > 1:
        desc = ", ".join(f"{n}: {m}" for n, m in mods.items())
        raise TypeError(
            f"{fname}: expected all arrays on one device, got a mix of numpy and cupy ({desc}); "
            "move them with cupy.asarray(...) or cupy.asnumpy(...)"
        )
    if len(dtypes) > 1 and len(set(dtypes.values())) > 1:
        desc = ", ".join(f"{n}: {d}" for n, d in dtypes.items())
        raise TypeError(
            f"{fname}: expected all arrays to share one dtype, got {desc}; lgm never upcasts "
            "silently, cast explicitly (e.g. mu.astype(x.dtype))"
        )
    first = next(iter(out.values()), None)
    be = backend_of(first, fname=fname)
    dtype = next(iter(dtypes.values()), np.dtype(np.float64))
    if scalars or len(out) != len(arrays):
        for name, a in arrays.items():
            if a is None:
                out[name] = None
            elif name not in out:
                out[name] = np.asarray(a, dtype=dtype)
        # keep the caller's argument order: kernels index operands by position
        out = {name: out[name] for name in arrays}
    return be, dtype, out


def _broadcast_shapes(shapes):
    """numpy's broadcasting rule on shape tuples, in plain Python (np.broadcast_shapes builds
    arrays and costs more than the kernels of one-row problems); None if incompatible."""
    ndim = max((len(sh) for sh in shapes), default=0)
    out = [1] * ndim
    for sh in shapes:
        off = ndim - len(sh)
        for i, n in enumerate(sh):
            cur = out[off + i]
            if n != cur:
                if cur == 1:
                    out[off + i] = n
                elif n != 1:
                    return None
    return tuple(out)


def broadcast_lead(fname, arrays):
    """Broadcast the leading shapes (all axes but the last) of ``arrays`` (a dict)."""
    lead = _broadcast_shapes([tuple(a.shape[:-1]) for a in arrays.values()])
    if lead is None:
        desc = ", ".join(f"{n}{tuple(a.shape)}" for n, a in arrays.items())
        raise ValueError(
            f"{fname}: leading shapes do not broadcast: {desc} (the last axis is the event axis; "
            "the axes before it must broadcast as in numpy)"
        )
    return lead


def event_size(fname, arrays):
    """The common last-axis length D of ``arrays``; size-1 last axes broadcast. D = 0 is an error."""
    sizes = {n: (a.shape[-1] if a.ndim else 1) for n, a in arrays.items()}
    if 0 in sizes.values():
        desc = ", ".join(f"{n}{tuple(arrays[n].shape)}" for n in arrays)
        raise ValueError(f"{fname}: expected a non-empty last axis (D >= 1), got {desc}")
    big = {d for d in sizes.values() if d != 1}
    if len(big) > 1:
        desc = ", ".join(f"{n}: {d}" for n, d in sizes.items())
        raise ValueError(f"{fname}: expected one event size (last axis) for all arguments, got {desc}")
    return big.pop() if big else 1


_RS_CACHE: dict = {}


def _ones_rs(n):
    """Row-stride table for n full-shape operands over a collapsed (R,) leading shape (shared,
    read-only)."""
    rs = _RS_CACHE.get(n)
    if rs is None:
        rs = np.ones((n, 1), dtype=np.int64)
        rs.flags.writeable = False
        rs = _RS_CACHE[n] = rs
    return rs


class RowOperands:
    """Operands prepared for a row-wise kernel: each C-contiguous (rows_i, D) plus row strides."""

    def __init__(self, fname, arrays, D=None, lead=None, xp=np):
        self.orig_shapes = {n: a.shape for n, a in arrays.items()}
        shapes = set(self.orig_shapes.values())
        if lead is None and D is None and len(shapes) == 1:
            shape = shapes.pop()
            if len(shape) >= 1 and shape[-1] > 0 and all(a.flags.c_contiguous for a in arrays.values()):
                self._same_shape(arrays, shape, xp)
                return
        self._general(fname, arrays, D, lead, xp)

    def _same_shape(self, arrays, shape, xp):
        """Fast path (the common case): every operand has the output's full shape, so the
        leading axes collapse to one and every operand's row is the output row."""
        self.D = shape[-1]
        self.lead = tuple(shape[:-1])
        self.R = math.prod(self.lead)
        self.lead_arr = np.array([max(self.R, 1)], dtype=np.int64)
        self.rows = {}
        for n, a in arrays.items():
            if not a.flags.c_contiguous:
                a = xp.ascontiguousarray(a)
            self.rows[n] = a if a.ndim == 2 else a.reshape(-1, self.D)
        self.rstride = _ones_rs(len(arrays))

    def _general(self, fname, arrays, D, lead, xp):
        # 0-d arrays are scalars broadcasting along the last axis too
        arrays = {n: (a.reshape(1) if a.ndim == 0 else a) for n, a in arrays.items()}
        self.D = event_size(fname, arrays) if D is None else D
        self.lead = broadcast_lead(fname, arrays) if lead is None else tuple(lead)
        k = max(len(self.lead), 1)
        lead = self.lead if self.lead else (1,)
        self.R = math.prod(self.lead)
        self.lead_arr = np.asarray(lead, dtype=np.int64)
        self.rows = {}
        strides = []
        for n, a in arrays.items():
            if a.shape[-1] != self.D:
                a = xp.broadcast_to(a, a.shape[:-1] + (self.D,))
            if not a.flags.c_contiguous:  # (the check is cheaper than the call, on cupy)
                # leading axes of stride 0 (np.broadcast_to views) are broadcast axes: keep one
                # slice of each and let the row-stride table repeat it, instead of copying
                zero = [st == 0 and n > 1 for st, n in zip(a.strides[:-1], a.shape[:-1])]
                if any(zero):
                    a = a[tuple(slice(0, 1) if z else slice(None) for z in zero)]
                if not a.flags.c_contiguous:
                    a = xp.ascontiguousarray(a)
            a_lead = (1,) * (k - (a.ndim - 1)) + tuple(a.shape[:-1])
            rs = [0] * k
            acc = 1
            for ax in range(k - 1, -1, -1):
                if a_lead[ax] != 1:
                    rs[ax] = acc
                acc *= a_lead[ax]
            self.rows[n] = a if (a.ndim == 2 and a.shape[1] == self.D) else a.reshape(-1, self.D)
            strides.append(rs)
        self.rstride = np.array(strides, dtype=np.int64).reshape(len(strides), k)

    def unbroadcast(self, name, g_rd):
        """Sum a full (R, D) gradient back to the original shape of operand ``name``."""
        full = g_rd.reshape(self.lead + (self.D,))
        shape = self.orig_shapes[name]
        target = (1,) * (len(full.shape) - len(shape)) + tuple(shape)
        axes = tuple(i for i, (f, t) in enumerate(zip(full.shape, target)) if t == 1 and f != 1)
        if axes:
            full = full.sum(axis=axes, keepdims=True)
        return full.reshape(shape)
