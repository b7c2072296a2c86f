"""The row kernels are callable from a user's own @njit code; vector-width policy."""

import numba as nb
import numpy as np
import pytest

from lgm import reference as ref
from lgm._config import features_for
from lgm.ops import (bernoulli_logpmf_row, diag_gaussian_logpdf_row, kl_diag_std_normal_row,
                     std_normal_logpdf_row)


@nb.njit
def user_loop(x, mu, lv):
    out = np.empty(x.shape[0], x.dtype)
    for i in range(x.shape[0]):
        out[i] = diag_gaussian_logpdf_row(x[i], mu[i], lv[i]) + std_normal_logpdf_row(mu[i])
    return out


@nb.njit
def user_bern_kl(x, l, mu, lv):
    return bernoulli_logpmf_row(x, l) - kl_diag_std_normal_row(mu, lv)


def test_called_from_user_njit(dtype, rng):
    x, mu, lv = rng.standard_normal((3, 6, 9)).astype(dtype)
    got = user_loop(x, mu, lv)
    assert got.dtype == dtype
    want = ref.diag_gaussian_logpdf(*(a.astype(float) for a in (x, mu, lv))) + ref.std_normal_logpdf(mu.astype(float))
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-13)
    b = user_bern_kl((x[0] > 0).astype(dtype), x[1], mu[0], lv[0])
    w = ref.bernoulli_logpmf((x[0] > 0).astype(float), x[1].astype(float)) - ref.kl_diag_std_normal(mu[0].astype(float), lv[0].astype(float))
    np.testing.assert_allclose(b, w, rtol=1e-5 if dtype == np.float32 else 1e-13)


def test_vector_width_policy():
    avx2 = "+sse4.2,+avx,+avx2,+fma,-avx512f"
    avx512 = "+sse4.2,+avx,+avx2,+fma,+avx512f,+avx512dq"
    assert features_for(avx2, "auto") is None  # never assumes AVX-512
    assert features_for(avx2, "512") is None
    assert features_for(avx512, "256") is None
    assert features_for(avx512, "auto") == avx512 + ",-prefer-256-bit,+evex512"
    with pytest.raises(ValueError, match="LGM_VECTOR_WIDTH"):
        features_for(avx2, "1024")
