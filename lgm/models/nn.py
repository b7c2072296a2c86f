"""Layers with hand-written gradients, a flat parameter store and Adam (no autograd framework).

Every layer is a pair, llm.c style: ``forward(x) -> (y, cache)`` and ``backward(dy, cache) -> dx``.
``backward`` *accumulates* the parameter gradients (``grad += ...``) into buffers that
:meth:`Params.zero_grad` sets to zero; a layer remembers that its buffer is still zero and then
writes the first product straight into it (``matmul(..., out=g)``), so accumulation costs nothing
in the usual one-backward-per-step case.

Images are NHWC (batch, height, width, channels): with channels last, im2col is a set of strided
slice copies and each convolution is one GEMM whose output is already in layout. Convolutions use
im2col + GEMM (BLAS on the CPU, cuBLAS through CuPy on the GPU) — measured against direct Numba
loops, see README ("Neural models").

The same code runs on numpy (CPU) and cupy (GPU) arrays: the array module is taken from the
input. Parameters live in one contiguous buffer per model (:class:`Params`), each layer's weights
are views into it, so Adam and zero_grad are one fused pass over one vector.

Weight layouts (and how they map to PyTorch, which the tests use as an oracle):
Linear W (in, out) = torch ``weight.T``; Conv2d W (kh, kw, C_in, C_out) = torch
``weight.permute(2, 3, 1, 0)``; ConvTranspose2d W (C_in, kh, kw, C_out) = torch
``weight.permute(0, 2, 3, 1)``.
"""

from __future__ import annotations

import math

import numpy as np

from ..ops import backend_of, col2im as _ops_col2im, im2col as _ops_im2col

__all__ = ["Params", "Linear", "Conv2d", "ConvTranspose2d", "ReLU", "Reshape", "ConstantLogvar",
           "Sequential", "Adam"]


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"expected dtype float32 or float64, got {dtype}")
    return dtype


class Params:
    """A flat parameter vector and its gradient; layers hold named views into both.

    Built in two phases: layers :meth:`declare` their shapes and initialisers, then :meth:`build`
    allocates the buffers (numpy, or cupy with ``xp=cupy``) and fills them from ``seed``.

    Parameters
    ----------
    dtype : float32 or float64.

    Attributes
    ----------
    data, grad : arrays of shape (size,) — every parameter, and its gradient, in one buffer.
    views, grads : dict name -> array of the declared shape, views into data and grad.
    """

    def __init__(self, dtype=np.float32):
        self.dtype = _check_dtype(dtype)
        self._specs = []  # (name, shape, init)
        self.data = None
        self.grad = None
        self.views = {}
        self.grads = {}
        self._fresh = set()  # names whose gradient buffer is still zero since zero_grad
        self._frozen = False

    def declare(self, name, shape, init):
        if self.data is not None:
            raise RuntimeError("Params: declare() after build()")
        if any(n == name for n, _, _ in self._specs):
            raise ValueError(f"Params: parameter {name!r} declared twice")
        self._specs.append((name, tuple(int(s) for s in shape), init))

    @property
    def names(self):
        return [n for n, _, _ in self._specs]

    @property
    def size(self):
        return sum(math.prod(s) for _, s, _ in self._specs)

    def build(self, seed=0, xp=np):
        rng = np.random.default_rng(seed)
        host = np.empty(self.size, self.dtype)
        off = 0
        for name, shape, init in self._specs:
            n = math.prod(shape)
            host[off:off + n] = init(rng, shape).astype(self.dtype, copy=False).ravel()
            off += n
        self.data = xp.asarray(host)
        self.grad = xp.zeros_like(self.data)
        self._make_views()
        return self

    def _make_views(self):
        off = 0
        for name, shape, _ in self._specs:
            n = math.prod(shape)
            self.views[name] = self.data[off:off + n].reshape(shape)
            self.grads[name] = self.grad[off:off + n].reshape(shape)
            off += n
        self._fresh = set(self.views)

    def share_data(self, data):
        """View ``data``, the buffer of another Params of the same declarations, as these
        parameters, with a gradient buffer of its own: a twin that computes gradients of the
        same weights beside the original (the two halves of a minibatch, lgm.models.vae)."""
        if data.shape != (self.size,) or data.dtype != self.dtype:
            raise ValueError(f"Params.share_data: expected a buffer of shape ({self.size},) and "
                             f"dtype {self.dtype}, got {data.shape} {data.dtype}")
        self.data = data
        self.grad = backend_of(data).xp.zeros_like(data)
        self._make_views()
        return self

    def touched(self):
        """The names whose gradient received something since :meth:`zero_grad`."""
        return [n for n in self.views if n not in self._fresh]

    def zero_grad(self):
        """Start a new gradient. Lazy: every buffer is marked fresh, and the first accumulation
        into it overwrites; :meth:`finish_grad` zero-fills any buffer that received nothing."""
        self._fresh = set(self.views)

    def finish_grad(self):
        """Zero the gradients of parameters that no backward touched since zero_grad."""
        for name in self._fresh:
            self.grads[name].fill(0)
        self._fresh = set()

    @property
    def is_frozen(self):
        """Whether backward passes skip the parameter gradients now (inside :meth:`frozen`)."""
        return self._frozen

    def frozen(self, on=True):
        """Context in which backward passes skip the parameter gradients (they only carry the
        input gradient through), e.g. for gradients in the latent variables. Nested, it never
        unfreezes: ``frozen(False)`` inside ``frozen()`` stays frozen."""
        P = self

        class _Frozen:
            def __enter__(self):
                self.old, P._frozen = P._frozen, P._frozen or on

            def __exit__(self, *exc):
                P._frozen = self.old
                return False

        return _Frozen()

    def accumulate(self, name, value=None, matmul=None):
        """grads[name] += value, or += a @ b for ``matmul=(a, b)`` (written in place while the
        buffer is still zero, so no temporary). Nothing inside :meth:`frozen`."""
        if self._frozen:
            return
        g = self.grads[name]
        xp = backend_of(g).xp
        if matmul is not None:
            a, b = matmul
            g = g.reshape(a.shape[0], b.shape[1])  # a view: the buffers are contiguous
        if name in self._fresh:
            self._fresh.discard(name)
            if matmul is not None:
                xp.matmul(a, b, out=g)
            else:
                g[...] = value
        elif matmul is not None:
            g += a @ b
        else:
            g += value

    @property
    def backend(self):
        """The :class:`lgm.ops.Backend` of the parameters' device."""
        return backend_of(self.data)

    def state(self):
        """Named host copies of the parameters (for .npz files)."""
        to_host = self.backend.to_host
        return {n: to_host(v) for n, v in self.views.items()}

    def load_state(self, state):
        for name, shape, _ in self._specs:
            if name not in state:
                raise ValueError(f"Params: parameter {name!r} missing from the saved state")
            v = np.asarray(state[name])
            if v.shape != shape:
                raise ValueError(f"Params: expected {name!r} of shape {shape}, got {v.shape}")
            if v.dtype != self.dtype:
                raise TypeError(f"Params: expected {name!r} of dtype {self.dtype}, got {v.dtype}")
            self.views[name][...] = self.backend.xp.asarray(v)

    def to(self, xp):
        """Move the buffers to numpy or cupy (views are rebuilt)."""
        self.data = xp.asarray(self.backend.to_host(self.data) if xp is np else self.data)
        self.grad = xp.zeros_like(self.data)
        self._make_views()
        return self


# --- initialisers (PyTorch's defaults, so both start from the same distribution) ---------------
def _uniform(bound):
    return lambda rng, shape: rng.uniform(-bound, bound, shape)


class Layer:
    """Base: ``forward(x) -> (y, cache)``, ``backward(dy, cache) -> dx``."""

    params: Params = None

    def _scratch(self, key, shape, dtype, xp):
        """A buffer for a temporary consumed within one forward or backward call, kept between
        calls (numpy only; cupy has its memory pool). Fresh multi-megabyte numpy arrays cost
        page faults on first touch: ~10 % of a conv-VAE training step on 2 cores, measured."""
        if xp is not np:
            return xp.empty(shape, dtype)
        bufs = self.__dict__.setdefault("_bufs", {})
        buf = bufs.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = bufs[key] = np.empty(shape, dtype)
        return buf

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy, cache, need_dx=True):
        """Accumulate parameter gradients; return d loss / d x (None when not need_dx)."""
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)[0]


class Linear(Layer):
    """y = x W + b (then ReLU, fused, with ``relu=True``); PyTorch's default initialisation.

    Parameters
    ----------
    params : Params; name : str — the parameters are ``name.W`` (n_in, n_out) and ``name.b``
        (n_out,).
    n_in, n_out : int; relu : bool.

    forward: x (N, n_in) -> y (N, n_out); backward: dy (N, n_out) -> dx (N, n_in).
    """

    def __init__(self, params, name, n_in, n_out, relu=False):
        self.params, self.name, self.n_in, self.n_out = params, name, n_in, n_out
        self.relu = relu
        bound = 1.0 / math.sqrt(n_in)
        params.declare(name + ".W", (n_in, n_out), _uniform(bound))
        params.declare(name + ".b", (n_out,), _uniform(bound))

    def forward(self, x):  # x: (N, n_in) -> y: (N, n_out)
        p = self.params.views
        y = x @ p[self.name + ".W"]
        backend_of(y).nn.bias_act(y, p[self.name + ".b"], self.relu)
        return y, (x, y if self.relu else None)

    def backward(self, dy, cache, need_dx=True):  # dy: (N, n_out)
        x, y = cache
        P = self.params
        dy, db = backend_of(dy).nn.act_bias_backward(dy, y, self.relu)
        P.accumulate(self.name + ".W", matmul=(x.T, dy))
        P.accumulate(self.name + ".b", db)
        return dy @ P.views[self.name + ".W"].T if need_dx else None


class ReLU(Layer):
    """max(x, 0), any shape.

    Parameters
    ----------
    inplace : bool — overwrite x (safe after Linear/Conv layers, whose caches hold their inputs,
        not their outputs).
    """

    def __init__(self, inplace=False):
        self.inplace = inplace

    def forward(self, x):
        y = backend_of(x).xp.maximum(x, 0, out=x if self.inplace else None)
        return y, y

    def backward(self, dy, y, need_dx=True):
        return backend_of(dy).nn.relu_backward(dy, y)


class Reshape(Layer):
    """Reshape the non-batch axes, e.g. (N, 3136) <-> (N, 7, 7, 64).

    Parameters
    ----------
    shape : tuple of int — the output's shape after the batch axis.
    """

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape((x.shape[0],) + self.shape), x.shape

    def backward(self, dy, in_shape, need_dx=True):
        return dy.reshape(in_shape)


def _out_size(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def im2col(x, k, s, p, Ho, Wo):
    """(B, H, W, C) -> (B, Ho, Wo, k, k, C) patches with zero padding ``p`` (the fused kernels of
    :func:`lgm.ops.im2col`; specification: :func:`lgm.reference.im2col`)."""
    cols = _ops_im2col(x, k, s, p)
    if cols.shape[1:3] != (Ho, Wo):
        raise ValueError(f"im2col: expected output {Ho}x{Wo}, got {cols.shape[1:3]}")
    return cols


class _Conv(Layer):
    """What Conv2d and ConvTranspose2d share: sizes, parameters (PyTorch's uniform(±1/sqrt(fan_in))
    initialisation), the input-channel check."""

    def __init__(self, params, name, c_in, c_out, k, stride, padding, relu, w_shape, fan_in):
        self.params, self.name, self.relu = params, name, relu
        self.c_in, self.c_out, self.k, self.s, self.p = c_in, c_out, k, stride, padding
        bound = 1.0 / math.sqrt(fan_in)
        params.declare(name + ".W", w_shape, _uniform(bound))
        params.declare(name + ".b", (c_out,), _uniform(bound))

    def _check_channels(self, x):
        B, H, W, C = x.shape
        if C != self.c_in:
            raise ValueError(f"{self.name}: expected {self.c_in} input channels, got {C}")
        return B, H, W, C


class Conv2d(_Conv):
    """2-D convolution (cross-correlation, as PyTorch), NHWC.

    Parameters
    ----------
    params : Params; name : str — parameters ``name.W`` (k, k, c_in, c_out), ``name.b`` (c_out,).
    c_in, c_out : int — channels; k : int — square kernel size; stride, padding : int;
    relu : bool — ReLU fused into the bias pass.

    forward: x (B, H, W, c_in) -> y (B, Ho, Wo, c_out), Ho = (H + 2 padding - k) // stride + 1,
    as cols (B·Ho·Wo, k·k·c_in) @ W (k·k·c_in, c_out).
    """

    def __init__(self, params, name, c_in, c_out, k, stride=1, padding=0, relu=False):
        super().__init__(params, name, c_in, c_out, k, stride, padding, relu,
                         w_shape=(k, k, c_in, c_out), fan_in=c_in * k * k)

    def forward(self, x):  # x: (B, H, W, C_in)
        B, H, W, C = self._check_channels(x)
        Ho, Wo = _out_size(H, self.k, self.s, self.p), _out_size(W, self.k, self.s, self.p)
        cols = im2col(x, self.k, self.s, self.p, Ho, Wo).reshape(B * Ho * Wo, -1)
        p = self.params.views
        y = cols @ p[self.name + ".W"].reshape(-1, self.c_out)  # (B·Ho·Wo, C_out)
        backend_of(y).nn.bias_act(y, p[self.name + ".b"], self.relu)
        return y.reshape(B, Ho, Wo, self.c_out), (cols, x.shape, y if self.relu else None)

    def backward(self, dy, cache, need_dx=True):
        cols, (B, H, W, C), y = cache
        Ho, Wo = dy.shape[1:3]
        P, n = self.params, self.name
        dy2, db = backend_of(dy).nn.act_bias_backward(dy.reshape(-1, self.c_out), y, self.relu)
        P.accumulate(n + ".W", matmul=(cols.T, dy2))
        P.accumulate(n + ".b", db)
        if not need_dx:
            return None
        xp = backend_of(dy2).xp
        dcols = self._scratch("dcols", (dy2.shape[0], self.k * self.k * C), dy2.dtype, xp)
        xp.matmul(dy2, P.views[n + ".W"].reshape(-1, self.c_out).T, out=dcols)
        return _ops_col2im(dcols.reshape(B, Ho, Wo, self.k, self.k, C), H, W, self.s, self.p)


class ConvTranspose2d(_Conv):
    """Transposed convolution (the adjoint of Conv2d in its input), NHWC, as PyTorch's
    ConvTranspose2d.

    Parameters
    ----------
    params : Params; name : str — parameters ``name.W`` (c_in, k, k, c_out), ``name.b`` (c_out,).
    c_in, c_out, k, stride, padding, relu : as :class:`Conv2d`.

    forward: x (B, H, W, c_in) -> y (B, Ho, Wo, c_out), Ho = (H - 1) stride - 2 padding + k, as
    x (B·H·W, c_in) @ W (c_in, k·k·c_out), then col2im.
    """

    def __init__(self, params, name, c_in, c_out, k, stride=1, padding=0, relu=False):
        # torch: the fan-in of a ConvTranspose2d weight (C_in, C_out, k, k) is C_out k k
        super().__init__(params, name, c_in, c_out, k, stride, padding, relu,
                         w_shape=(c_in, k, k, c_out), fan_in=c_out * k * k)

    def forward(self, x):  # x: (B, H, W, C_in)
        B, H, W, C = self._check_channels(x)
        k, s, p = self.k, self.s, self.p
        Ho, Wo = (H - 1) * s - 2 * p + k, (W - 1) * s - 2 * p + k
        x2 = x.reshape(B * H * W, C)
        xp = backend_of(x).xp
        cols = self._scratch("cols", (B * H * W, k * k * self.c_out), x.dtype, xp)  # B·H·W, k·k·C_out
        xp.matmul(x2, self.params.views[self.name + ".W"].reshape(C, -1), out=cols)
        y = _ops_col2im(cols.reshape(B, H, W, k, k, self.c_out), Ho, Wo, s, p)
        backend_of(y).nn.bias_act(y.reshape(-1, self.c_out), self.params.views[self.name + ".b"], self.relu)
        return y, (x2, y if self.relu else None)

    def backward(self, dy, cache, need_dx=True):
        x2, y = cache
        B, Ho, Wo, Co = dy.shape
        P, n, k = self.params, self.name, self.k
        dy2, db = backend_of(dy).nn.act_bias_backward(dy.reshape(-1, Co), None if y is None else y.reshape(-1, Co),
                                                    self.relu)
        dy = dy2.reshape(B, Ho, Wo, Co)
        H, W = (Ho + 2 * self.p - k) // self.s + 1, (Wo + 2 * self.p - k) // self.s + 1
        xp = backend_of(dy).xp
        buf = self._scratch("dcols", (B, H, W, k, k, Co), dy.dtype, xp)
        dcols = _ops_im2col(dy, k, self.s, self.p, out=buf).reshape(B * H * W, -1)  # B·H·W, k·k·C_out
        P.accumulate(n + ".W", matmul=(x2.T, dcols))
        P.accumulate(n + ".b", db)
        if not need_dx:
            return None
        dx = dcols @ P.views[n + ".W"].reshape(self.c_in, -1).T
        return dx.reshape(B, H, W, self.c_in)


class ConstantLogvar(Layer):
    """Decoder output with a learned log-variance that does not depend on the input.

    Parameters
    ----------
    params : Params; name : str — the parameter ``name``, shape (D,) or (1,).
    D : int; shared : bool — one log-variance for all features (PPCA) or one per feature
        (factor analysis); init : float — its initial value.

    forward: means (N, D) -> (N, 2 D), [mean, log-variance] per feature (channels last).
    """

    def __init__(self, params, name, D, shared=False, init=0.0):
        self.params, self.name, self.D, self.shared = params, name, D, shared
        params.declare(name, (1,) if shared else (D,), lambda rng, shape: np.full(shape, init))

    def forward(self, mu):
        xp = backend_of(mu).xp
        y = xp.empty(mu.shape + (2,), mu.dtype)
        y[..., 0] = mu
        y[..., 1] = self.params.views[self.name]
        return y.reshape(mu.shape[0], -1), mu.shape

    def backward(self, dy, shape, need_dx=True):
        dy = dy.reshape(shape + (2,))
        g = dy[..., 1].sum(axis=0)
        self.params.accumulate(self.name, g.sum(keepdims=True) if self.shared else g)
        return backend_of(dy).xp.ascontiguousarray(dy[..., 0]) if need_dx else None


class Sequential(Layer):
    """Layers applied in order; the cache is the list of the layers' caches.

    Parameters
    ----------
    *layers : Layer.
    """

    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x):
        caches = []
        for layer in self.layers:
            x, c = layer.forward(x)
            caches.append(c)
        return x, caches

    def backward(self, dy, caches, need_dx=True):
        n = len(self.layers)
        for i in range(n - 1, -1, -1):
            dy = self.layers[i].backward(dy, caches[i], need_dx=need_dx or i > 0)
        return dy


class Adam:
    """Adam (Kingma & Ba 2015, Algorithm 1) on a :class:`Params` flat vector, one fused pass.

    Bias corrections are folded into the step size as in the paper's final paragraph of Sec. 2
    (and PyTorch): ``p -= lr * m_hat / (sqrt(v_hat) + eps)``. The update is the backend's
    ``nn.adam_step`` (one fused Numba pass on the CPU).

    Parameters
    ----------
    params : Params; lr : float; betas : (float, float); eps : float.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps = params, float(lr), betas, float(eps)
        xp = params.backend.xp
        self.m = xp.zeros_like(params.data)
        self.v = xp.zeros_like(params.data)
        self.t = 0

    def step(self):
        self.params.finish_grad()
        self.t += 1
        b1, b2 = self.betas
        P = self.params
        P.backend.nn.adam_step(P.data, self.m, self.v, P.grad, self.lr, b1, b2, self.eps,
                               1.0 - b1 ** self.t, 1.0 - b2 ** self.t)

    def state(self):
        to_host = self.params.backend.to_host
        return {"m": to_host(self.m), "v": to_host(self.v), "t": np.int64(self.t)}

    def load_state(self, st):
        xp = self.params.backend.xp
        for k in ("m", "v"):
            a = np.asarray(st[k])
            if a.shape != self.m.shape or a.dtype != self.m.dtype:
                raise ValueError(f"Adam: expected {k} of shape {self.m.shape} and dtype "
                                 f"{self.m.dtype}, got {a.shape} {a.dtype}")
        self.m[...] = xp.asarray(st["m"])
        self.v[...] = xp.asarray(st["v"])
        self.t = int(st["t"])
