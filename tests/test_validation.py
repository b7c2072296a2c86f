"""Bad input: every public entry point gives a TypeError/ValueError naming the argument."""

import numpy as np
import pytest

import lgm

f64 = np.zeros((2, 3))
f32 = np.zeros((2, 3), np.float32)


class FakeCupy:
    """Looks like a cupy array to the dispatcher (module name), without needing cupy."""

    __module__ = "cupy._core.core"
    dtype = np.dtype(np.float64)
    shape = (2, 3)
    ndim = 2


CALLS = {
    "diag_gaussian_logpdf": lambda a, b: lgm.diag_gaussian_logpdf(a, b, f64),
    "diag_gaussian_logpdf_grad": lambda a, b: lgm.diag_gaussian_logpdf_grad(a, b, f64),
    "bernoulli_logpmf": lambda a, b: lgm.bernoulli_logpmf(a, b),
    "kl_diag_std_normal": lambda a, b: lgm.kl_diag_std_normal(a, b),
    "kl_diag_std_normal_grad": lambda a, b: lgm.kl_diag_std_normal_grad(a, b),
    "importance_log_weights": lambda a, b: lgm.importance_log_weights(
        a, np.zeros((4, 2, 3)), b, f64, logits=np.zeros((4, 2, 3))),
}


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("bad", [np.zeros((2, 3), np.int64), np.zeros((2, 3), np.complex128),
                                 np.zeros((2, 3), bool), np.zeros((2, 3), np.float16)],
                         ids=["int", "complex", "bool", "float16"])
def test_bad_dtype(name, bad):
    with pytest.raises(TypeError, match=r"expected \w+ to be a float32 or float64 array"):
        CALLS[name](bad, f64)


@pytest.mark.parametrize("name", CALLS)
def test_mixed_dtypes_refused(name):
    with pytest.raises(TypeError, match="share one dtype"):
        CALLS[name](f32, f64)


@pytest.mark.parametrize("name", CALLS)
def test_mixed_numpy_cupy_refused(name):
    with pytest.raises(TypeError, match="mix of numpy and cupy"):
        CALLS[name](f64, FakeCupy())


@pytest.mark.parametrize("name", CALLS)
def test_shape_mismatch(name):
    with pytest.raises(ValueError, match="event size|do not broadcast"):
        CALLS[name](f64, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="do not broadcast|event size"):
        CALLS[name](f64, np.zeros((5, 3)))


@pytest.mark.parametrize("name", CALLS)
def test_empty_event_axis(name):
    with pytest.raises(ValueError, match="non-empty last axis"):
        CALLS[name](np.zeros((2, 0)), np.zeros((2, 0)))


def test_other_entry_points():
    with pytest.raises(TypeError, match="expected t to be a float32 or float64"):
        lgm.std_normal_logpdf(np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="non-empty last axis"):
        lgm.std_normal_logpdf(np.zeros((2, 0)))
    with pytest.raises(TypeError, match="expected a to be"):
        lgm.logsumexp(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="non-empty reduction"):
        lgm.logsumexp(np.zeros((2, 0)), axis=1)
    with pytest.raises(np.exceptions.AxisError):
        lgm.logsumexp(f64, axis=2)
    with pytest.raises(TypeError, match="axis"):
        lgm.logsumexp(f64, axis="rows")
    with pytest.raises(ValueError, match="wrt"):
        lgm.diag_gaussian_logpdf_grad(f64, f64, f64, wrt=("sigma",))
    with pytest.raises(ValueError, match="weights broadcastable"):
        lgm.diag_gaussian_logpdf_grad(f64, f64, f64, weights=np.ones(5))
    with pytest.raises(TypeError, match="share one dtype"):
        lgm.diag_gaussian_logpdf_grad(f64, f64, f64, weights=np.ones(2, np.float32))
    with pytest.raises(ValueError, match="either mu_x and logvar_x"):
        lgm.importance_log_weights(f64, np.zeros((4, 2, 3)), f64, f64, mu_x=f64)
    with pytest.raises(ValueError, match="not both"):
        lgm.importance_log_weights(f64, np.zeros((4, 2, 3)), f64, f64, mu_x=f64, logvar_x=f64, logits=f64)
    for fn in (lgm.elbo, lgm.iwae, lgm.importance_weights):
        with pytest.raises(ValueError, match="S >= 1"):
            fn(np.zeros((0, 3)))
        with pytest.raises(TypeError, match="expected log_w"):
            fn(np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError, match="rng"):
        lgm.reparameterize(f64, f64, rng="seed")
    with pytest.raises(ValueError, match="n_samples"):
        lgm.reparameterize(f64, f64, 0, n_samples=0)
    with pytest.raises(TypeError, match="expected mu to be a float32 or float64 array, got dtype <U1"):
        lgm.diag_gaussian_logpdf(f64, "0", f64)


def test_cupy_arrays_without_gpu_backend_raise_clearly():
    # all-"cupy" input reaches the GPU dispatcher, which either works or explains itself
    with pytest.raises((RuntimeError, NotImplementedError, TypeError, AttributeError)):
        lgm.diag_gaussian_logpdf(FakeCupy(), FakeCupy(), FakeCupy())
