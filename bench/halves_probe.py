"""meanfield / mcmc iteration time, conv decoder, batch 128: the halves side by side (Backend.pair) against in turn.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/halves_probe.py   # on a quiet machine
"""
import sys, time, numpy as np
from lgm.estep.strategies import make_strategy
from lgm.vae import conv_vae
from lgm.front.data import embedded
from lgm._backends.cpu import policy
ds = embedded(binarize=True, dtype=np.float32, warn=lambda *a: None)
X = ds.X_train
orig = policy.pair_concurrent
for name in ("meanfield", "mcmc"):
    for mode in ("pair", "seq", "pair", "seq"):
        policy.pair_concurrent = orig if mode == "pair" else (lambda: False)
        m = conv_vae(latent_dim=16, seed=0)
        st = make_strategy(name, seed=0)
        st.setup(m, X)
        rng = np.random.default_rng(0)
        idxs = [rng.choice(len(X), 128, replace=False) for _ in range(40)]
        for i in idxs[:5]: st.iteration(m, X, i)
        t0 = time.perf_counter()
        for i in idxs[5:]: st.iteration(m, X, i)
        print(name, mode, f"{(time.perf_counter() - t0) / 35 * 1e3:.1f} ms/iteration", flush=True)
