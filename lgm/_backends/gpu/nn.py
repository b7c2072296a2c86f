"""The layers' elementwise passes as array expressions, for any array module (numpy or cupy).
Imported by the CPU tests too: it never imports cupy unless a cupy array arrives.

The GPU backend's ``nn`` (cupy runs each expression as its own kernel), and the specification
that the fused Numba passes of ``lgm._backends.cpu.nn`` are tested against. Same names and
arguments as those.
"""

from __future__ import annotations

import numpy as np


def _xp(a):
    if type(a).__module__.split(".", 1)[0] == "cupy":
        import cupy

        return cupy
    return np


def bias_act(y2, b, relu):
    """y2 (M, N) <- act(y2 + b) in place; act = ReLU when ``relu``, else identity."""
    y2 += b
    if relu:
        _xp(y2).maximum(y2, 0, out=y2)


def act_bias_backward(dy2, y2, relu):
    """(dy2 masked by y2 > 0 when ``relu``, the bias gradient dy2.sum(0)); dy2 may be modified."""
    if relu:
        dy2 = _xp(dy2).where(y2 > 0, dy2, dy2.dtype.type(0))
    return dy2, dy2.sum(axis=0)


def relu_backward(dy, y):
    """dy masked by y > 0."""
    return _xp(dy).where(y > 0, dy, dy.dtype.type(0))


def adam_step(p, m, v, g, lr, b1, b2, eps, c1, c2):
    """One Adam update in place (Kingma & Ba 2015, Algorithm 1; bias corrections c1, c2 folded
    into the step as in the paper's Sec. 2 and PyTorch)."""
    F = p.dtype.type
    m *= F(b1)
    m += F(1 - b1) * g
    v *= F(b2)
    v += F(1 - b2) * g * g
    p -= F(lr / c1) * m / (_xp(p).sqrt(v / F(c2)) + F(eps))
