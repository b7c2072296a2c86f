"""Layers: backward against central finite differences in float64, forward against independent
oracles (scipy.signal for convolution, the adjoint identity for the transposed convolution,
torch when installed), Numba data-movement kernels against their array-expression specs, Adam
against its spec (and torch.optim.Adam)."""

import numpy as np
import pytest
from scipy import signal

from lgm import nn, ops
from lgm import reference as ref
from lgm._backends.gpu import nn as xpnn

from conftest import central_diff

FD_TOL = 1e-6  # normwise relative error; central differences in float64 with h = 1e-5 reach ~1e-9


def _layer_and_params(make, seed=0, dtype=np.float64):
    P = nn.Params(dtype)
    layer = make(P)
    P.build(seed=seed)
    return P, layer


def _fd_check(P, layer, x, seed=1, h=1e-5):
    """Gradients of L = sum(G * layer(x)) wrt x and every parameter vs central differences."""
    rng = np.random.default_rng(seed)
    y, cache = layer.forward(x.copy())
    G = rng.standard_normal(y.shape)

    def L():
        return float((G * layer.forward(x_work.copy())[0]).sum())

    P.zero_grad()
    dx = layer.backward(G.copy(), cache)
    P.finish_grad()
    g = P.grad.copy()
    x_work = x.copy()
    fd_x = central_diff(L, x_work, h)
    fd_p = central_diff(L, P.data, h)
    err_x = np.linalg.norm(dx - fd_x) / np.linalg.norm(fd_x)
    err_p = np.linalg.norm(g - fd_p) / np.linalg.norm(fd_p) if P.size else 0.0
    return err_x, err_p


# inputs away from ReLU kinks by construction (|pre-activation| is never within h of 0 w.p. ~1)
LAYERS = {
    "linear": (lambda P: nn.Linear(P, "l", 5, 4), (6, 5)),
    "linear_relu": (lambda P: nn.Linear(P, "l", 5, 4, relu=True), (6, 5)),
    "conv_s1p0": (lambda P: nn.Conv2d(P, "c", 2, 3, 3), (2, 5, 5, 2)),
    "conv_s2p1": (lambda P: nn.Conv2d(P, "c", 2, 3, 4, 2, 1, relu=True), (2, 6, 6, 2)),
    "conv_s2p1_odd": (lambda P: nn.Conv2d(P, "c", 1, 2, 3, 2, 1), (2, 7, 5, 1)),
    "convT_s1p0": (lambda P: nn.ConvTranspose2d(P, "t", 3, 2, 3), (2, 3, 4, 3)),
    "convT_s2p1": (lambda P: nn.ConvTranspose2d(P, "t", 3, 2, 4, 2, 1, relu=True), (2, 3, 3, 3)),
    # more channels than the data-movement kernels' THIN_C: their other loop order
    "conv_wide": (lambda P: nn.Conv2d(P, "c", 6, 5, 4, 2, 1, relu=True), (2, 6, 6, 6)),
    "convT_wide": (lambda P: nn.ConvTranspose2d(P, "t", 6, 5, 4, 2, 1, relu=True), (2, 3, 3, 6)),
    "seq": (lambda P: nn.Sequential(nn.Linear(P, "a", 4, 12), nn.ReLU(), nn.Reshape((2, 2, 3)),
                                    nn.ConvTranspose2d(P, "t", 3, 2, 4, 2, 1)), (3, 4)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_backward_matches_finite_differences(name):
    make, shape = LAYERS[name]
    P, layer = _layer_and_params(make)
    x = np.random.default_rng(3).standard_normal(shape)
    err_x, err_p = _fd_check(P, layer, x)
    assert err_x < FD_TOL and err_p < FD_TOL, (err_x, err_p)


def test_backward_accumulates_into_gradients():
    P, layer = _layer_and_params(lambda P: nn.Linear(P, "l", 3, 2))
    x = np.random.default_rng(0).standard_normal((4, 3))
    dy = np.ones((4, 2))
    P.zero_grad()
    layer.backward(dy, layer.forward(x)[1])
    once = P.grad.copy()
    layer.backward(dy, layer.forward(x)[1])
    np.testing.assert_allclose(P.grad, 2 * once, rtol=1e-15)
    P.zero_grad()
    P.finish_grad()
    assert not P.grad.any()


def _conv_scipy(x, W, b, s, p):
    """Independent oracle: scipy.signal.correlate per (batch, in, out) channel, then stride."""
    B, H, Wd, C = x.shape
    k, _, _, Co = W.shape
    xp_ = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    full = np.zeros((B, H + 2 * p - k + 1, Wd + 2 * p - k + 1, Co))
    for bb in range(B):
        for c in range(C):
            for o in range(Co):
                full[bb, :, :, o] += signal.correlate(xp_[bb, :, :, c], W[:, :, c, o], mode="valid")
    return full[:, ::s, ::s] + b


@pytest.mark.parametrize("k,s,p", [(3, 1, 0), (4, 2, 1), (3, 2, 1), (5, 1, 2)])
def test_conv2d_forward_matches_scipy(k, s, p, dtype):
    P, layer = _layer_and_params(lambda P: nn.Conv2d(P, "c", 3, 4, k, s, p), dtype=dtype)
    x = np.random.default_rng(0).standard_normal((2, 9, 8, 3)).astype(dtype)
    y = layer(x)
    assert y.dtype == dtype
    ref = _conv_scipy(x.astype(np.float64), P.views["c.W"].astype(np.float64),
                      P.views["c.b"].astype(np.float64), s, p)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("k,s,p,H", [(4, 2, 1, 8), (3, 1, 0, 8), (3, 2, 1, 7)])
def test_conv_transpose_is_the_adjoint_of_conv(k, s, p, H):
    """<conv(x), y> = <x, convT(y)> with shared weights and no bias (the definition)."""
    P = nn.Params(np.float64)
    conv = nn.Conv2d(P, "c", 3, 2, k, s, p)
    P.build(seed=0)
    Q = nn.Params(np.float64)
    convT = nn.ConvTranspose2d(Q, "t", 2, 3, k, s, p)
    Q.build(seed=1)
    # Conv2d W (k, k, C_in, C_out) -> ConvTranspose2d W (C_in', k, k, C_out') with C_in' = C_out
    Q.views["t.W"][...] = P.views["c.W"].transpose(3, 0, 1, 2)
    P.views["c.b"][...] = 0
    Q.views["t.b"][...] = 0
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, H, H, 3))  # H with no stride remainder: convT maps back to H
    cx = conv(x)
    y = rng.standard_normal(cx.shape)
    ty = convT(y)
    assert ty.shape == x.shape
    np.testing.assert_allclose((cx * y).sum(), (x * ty).sum(), rtol=1e-12)


# C = 1 and 3: the kernels' padded-row order (C <= THIN_C); C = 8: the per-patch one
@pytest.mark.parametrize("C", [1, 3, 8])
@pytest.mark.parametrize("k,s,p,H,W", [(4, 2, 1, 6, 6), (3, 1, 1, 5, 4), (3, 2, 0, 7, 7),
                                       (2, 3, 2, 5, 6), (5, 2, 2, 9, 4)])
def test_im2col_col2im_kernels_match_slices(k, s, p, H, W, C, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, H, W, C)).astype(dtype)
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    np.testing.assert_array_equal(nn.im2col(x, k, s, p, Ho, Wo), ref.im2col(x, k, s, p, Ho, Wo))
    cols = rng.standard_normal((2, Ho, Wo, k, k, C)).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(ops.col2im(cols, H, W, s, p), ref.col2im(cols, H, W, s, p),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("c_img,c_hid", [(2, 3), (6, 5)])  # few channels (THIN_C) and more
def test_layers_match_torch_autograd(c_img, c_hid):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    P = nn.Params(np.float64)
    conv = nn.Conv2d(P, "c", c_img, c_hid, 4, 2, 1, relu=True)
    convT = nn.ConvTranspose2d(P, "t", c_hid, c_img, 4, 2, 1)
    lin = nn.Linear(P, "l", 5, 4)
    P.build(seed=0)
    x = rng.standard_normal((2, 6, 6, c_img))
    xl = rng.standard_normal((3, 5))
    h, c1 = conv.forward(x)
    y, c2 = convT.forward(h)
    z, c3 = lin.forward(xl)
    Gy, Gz = rng.standard_normal(y.shape), rng.standard_normal(z.shape)
    P.zero_grad()
    dx = conv.backward(convT.backward(Gy.copy(), c2), c1)
    dxl = lin.backward(Gz.copy(), c3)

    T = lambda a: torch.tensor(a, requires_grad=True)  # noqa: E731
    wc, bc = T(P.views["c.W"].transpose(3, 2, 0, 1).copy()), T(P.views["c.b"].copy())
    wt, bt = T(P.views["t.W"].transpose(0, 3, 1, 2).copy()), T(P.views["t.b"].copy())
    wl, bl = T(P.views["l.W"].T.copy()), T(P.views["l.b"].copy())
    xt, xlt = T(x.transpose(0, 3, 1, 2).copy()), T(xl)
    ht = torch.relu(torch.nn.functional.conv2d(xt, wc, bc, stride=2, padding=1))
    yt = torch.nn.functional.conv_transpose2d(ht, wt, bt, stride=2, padding=1)
    zt = torch.nn.functional.linear(xlt, wl, bl)
    loss = (yt * torch.tensor(Gy.transpose(0, 3, 1, 2))).sum() + (zt * torch.tensor(Gz)).sum()
    loss.backward()
    np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dxl, xlt.grad.numpy(), rtol=1e-12)
    for name, t, perm in (("c.W", wc, (2, 3, 1, 0)), ("t.W", wt, (0, 2, 3, 1)), ("l.W", wl, (1, 0))):
        np.testing.assert_allclose(P.grads[name], t.grad.numpy().transpose(perm), rtol=1e-10,
                                   atol=1e-12)
    for name, t in (("c.b", bc), ("t.b", bt), ("l.b", bl)):
        np.testing.assert_allclose(P.grads[name], t.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("N", [1, 2, 7, 8, 33])  # below THIN_N the column-wise loops
@pytest.mark.parametrize("relu", [False, True])
def test_bias_act_passes_match_spec(N, relu, dtype):
    from lgm._backends.cpu import nn as cpunn

    rng = np.random.default_rng(N)
    y = rng.standard_normal((301, N)).astype(dtype)
    b = rng.standard_normal(N).astype(dtype)
    got, want = y.copy(), y.copy()
    cpunn.bias_act(got, b, relu)
    xpnn.bias_act(want, b, relu)
    np.testing.assert_array_equal(got, want)  # one add and a max: exact
    dy = rng.standard_normal((301, N)).astype(dtype)
    # with ReLU and N > 1 the Fortran-ordered y takes the row-wise loop
    for y2 in (got, np.asfortranarray(got)):
        g_dy, g_db = cpunn.act_bias_backward(dy.copy(), y2, relu)
        w_dy, w_db = xpnn.act_bias_backward(dy.copy(), y2, relu)
        np.testing.assert_array_equal(g_dy, w_dy)
        assert g_db.dtype == dtype
        # lgm sums in float64 and rounds once; the spec sums in the working dtype
        tol = 1e-5 if dtype == np.float32 else 1e-12
        mask = (y2 > 0) if relu else True
        np.testing.assert_allclose(g_db, dy.astype(np.float64).sum(0, where=mask), rtol=tol,
                                   atol=tol)
        np.testing.assert_allclose(g_db, w_db, rtol=tol, atol=tol)


def test_adam_kernel_matches_spec(dtype):
    rng = np.random.default_rng(0)
    P = nn.Params(dtype)
    P.declare("w", (1000,), lambda r, s: r.standard_normal(s))
    P.build()
    want = P.data.copy()
    m, v = np.zeros_like(want), np.zeros_like(want)
    opt = nn.Adam(P, lr=1e-2)
    for t in range(1, 6):
        g = rng.standard_normal(1000).astype(dtype)
        P.zero_grad()
        P.accumulate("w", g)
        opt.step()
        xpnn.adam_step(want, m, v, g, 1e-2, 0.9, 0.999, 1e-8, 1 - 0.9 ** t, 1 - 0.999 ** t)
    assert P.data.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(P.data, want, rtol=tol, atol=tol)


def test_adam_flushes_subnormal_moments(dtype):
    """Once a parameter's gradient stops, Adam's moments decay (x 0.9 and x 0.999 per step)
    into the subnormal range, where Intel cores take a microcode assist per operation (the MLP
    VAE's step went from 3.2 to 5.3 ms). The CPU kernel stores 0 there instead, and the
    parameters come out bit-identical to the same kernel without the flush (tiny = 0). With an
    eps small enough for a subnormal v to show beside it, the kernel does not flush."""
    from lgm._backends.cpu.nn import _adam

    n, steps, lr = 1000, 12_000, 1e-2
    # gradients this small let v = 1e-3 g^2 reach the subnormals too; parameters small enough
    # that the first steps (lr g / eps: 1e-9, 1e-144) move every one of them
    small, scale = (1e-15, 1e-6) if dtype == np.float32 else (1e-150, 1e-140)
    tiny = np.finfo(dtype).tiny
    sub = lambda a: int(np.sum((a != 0) & (np.abs(a) < tiny)))  # noqa: E731
    for eps, flushes in ((1e-8, True), (1e-30 if dtype == np.float32 else 1e-200, False)):
        rng = np.random.default_rng(0)
        P = nn.Params(dtype)
        P.declare("w", (n,), lambda r, s: r.standard_normal(s) * scale)
        P.build()
        opt = nn.Adam(P, lr=lr, eps=eps)
        p0 = P.data.copy()
        p_ref, m_ref, v_ref = P.data.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
        for t in range(1, steps + 1):
            g = np.zeros(n, dtype)
            if t == 1:
                g[:] = rng.standard_normal(n) * small
            elif t % 997 == 0:  # a kick now and then for a tenth of them, as rare pixels get
                g[: n // 10] = rng.standard_normal(n // 10) * small
            P.zero_grad()
            P.accumulate("w", g)
            opt.step()
            _adam(p_ref, m_ref, v_ref, g, lr, 0.9, 0.999, eps, 1 - 0.9 ** t, 1 - 0.999 ** t, 0.0)
        assert sub(m_ref) > 0 and sub(v_ref) > 0  # without the flush they are there
        assert (sub(opt.m) + sub(opt.v) == 0) == flushes
        assert np.all(P.data != p0)  # every parameter moved
        np.testing.assert_array_equal(P.data, p_ref)


def test_adam_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    P = nn.Params(np.float64)
    P.declare("w", (50,), lambda r, s: r.standard_normal(s))
    P.build()
    wt = torch.tensor(P.data.copy(), requires_grad=True)
    opt, topt = nn.Adam(P, lr=3e-3), torch.optim.Adam([wt], lr=3e-3)
    for _ in range(5):
        g = rng.standard_normal(50)
        P.zero_grad()
        P.accumulate("w", g)
        opt.step()
        wt.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(P.data, wt.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_params_errors():
    P = nn.Params(np.float32)
    P.declare("a", (2,), lambda r, s: np.zeros(s))
    with pytest.raises(ValueError, match="declared twice"):
        P.declare("a", (3,), lambda r, s: np.zeros(s))
    P.build()
    with pytest.raises(RuntimeError, match="after build"):
        P.declare("b", (1,), lambda r, s: np.zeros(s))
    with pytest.raises(ValueError, match="shape"):
        P.load_state({"a": np.zeros(3, np.float32)})
    with pytest.raises(TypeError, match="dtype"):
        P.load_state({"a": np.zeros(2, np.float64)})
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Params(np.int32)
    conv = nn.Conv2d(nn.Params(), "c", 3, 4, 3)
    conv.params.build()
    with pytest.raises(ValueError, match="input channels"):
        conv.forward(np.zeros((1, 5, 5, 2), np.float32))


def test_im2col_col2im_bad_input():
    from lgm import ops

    x = np.zeros((1, 5, 5, 2), np.float32)
    with pytest.raises(ValueError, match="shape \\(B, H, W, C\\)"):
        ops.im2col(x[0], 3)
    with pytest.raises(ValueError, match="positive int"):
        ops.im2col(x, 0)
    with pytest.raises(ValueError, match="does not fit"):
        ops.im2col(x, 9)
    with pytest.raises(TypeError):
        ops.im2col(x.astype(np.int32), 3)
    with pytest.raises(ValueError, match="cols of shape"):
        ops.col2im(np.zeros((1, 2, 2, 3, 2, 1), np.float32), 4, 4)


def test_scratch_buffers_do_not_leak_between_calls():
    """Layers keep transient buffers between calls: an interleaved forward must not change the
    gradient computed from an earlier cache."""
    P = nn.Params(np.float64)
    net = nn.Sequential(nn.Conv2d(P, "c", 2, 3, 4, 2, 1, relu=True), nn.ConvTranspose2d(P, "t", 3, 2, 4, 2, 1))
    P.build(seed=0)
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 2, 8, 8, 2))
    G = rng.standard_normal((2, 8, 8, 2))
    y1, c1 = net.forward(x1.copy())
    P.zero_grad()
    dx_ref = net.backward(G.copy(), c1)
    g_ref = P.grad.copy()
    y1, c1 = net.forward(x1.copy())
    net.forward(x2.copy())  # reuses the layers' scratch buffers
    P.zero_grad()
    dx = net.backward(G.copy(), c1)
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_array_equal(P.grad, g_ref)
    from lgm import ops

    with pytest.raises(ValueError, match="expected out"):
        ops.im2col(x1, 4, 2, 1, out=np.empty((1, 2, 3), np.float64))
