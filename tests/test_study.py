"""The E-step study as an instrument (#12): the shared time grid and the flattening criterion,
strategies on memory-mapped and dask X (per-point state memory-mapped beside a memory-mapped X),
held-out scoring of dask arrays block by block, and the study's pieces end to end on small
budgets."""

import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lgm.estep import (FLAT_NATS, last_doubling_gain, make_strategy, per_point_array,
                       run_strategy, time_grid)
from lgm.front.bench import cpu_name
from lgm.models.vae import mlp_vae


def test_time_grid_and_last_doubling_gain():
    assert time_grid(8.0, 4) == [1.0, 2.0, 4.0, 8.0]
    with pytest.raises(ValueError, match="budget_s"):
        time_grid(0.0, 3)
    assert last_doubling_gain([1, 2, 4], [-10.0, -9.0, -8.7]) == pytest.approx(0.3)
    # half of the last time is not on the grid: linear in log time between 1 and 3
    g = last_doubling_gain([1, 3], [0.0, 2.0])
    assert g == pytest.approx(2.0 - 2.0 * np.log(1.5) / np.log(3))
    assert np.isnan(last_doubling_gain([3], [1.0]))
    assert np.isnan(last_doubling_gain([2, 3], [1.0, 2.0]))  # 1.5 is before the grid
    assert last_doubling_gain([1, 2], [0.0, -1.0]) < FLAT_NATS  # a fall is flat


def _binary(N=300, D=20, seed=0):
    return (np.random.default_rng(seed).random((N, D)) < 0.3).astype(np.float32)


@pytest.mark.parametrize("name", ["mcmc", "meanfield", "amortized", "iwae"])
def test_strategies_on_memory_mapped_and_dask_x_match_in_memory(tmp_path, name):
    X = _binary()
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    da = pytest.importorskip("dask.array")
    Xd = da.from_array(X, chunks=(70, 20))
    params = []
    for data in (X, Xm, Xd):
        model = mlp_vae(D=20, hidden=8, latent_dim=3, seed=0)
        s = make_strategy(name, lr=1e-2, seed=0)
        s.setup(model, data)
        rng = np.random.default_rng(1)
        for _ in range(3):
            s.iteration(model, data, rng.permutation(300)[:64])
        params.append(model.params.data.copy())
        if data is Xm and name in ("mcmc", "meanfield"):
            state = s.chains if name == "mcmc" else s.q["m"]
            assert isinstance(state, np.memmap)  # the per-point state lives where X lives
            assert os.path.dirname(os.path.dirname(state.filename)) == str(tmp_path)
        del s
    np.testing.assert_array_equal(params[1], params[0])
    np.testing.assert_array_equal(params[2], params[0])


def test_per_point_state_file_is_removed_with_the_array(tmp_path):
    np.save(tmp_path / "X.npy", _binary(N=50))
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    model = mlp_vae(D=20, hidden=8, latent_dim=3)
    a = per_point_array(Xm, model, (2, 50, 3), rng=np.random.default_rng(0), chunk=16)
    b = per_point_array(_binary(N=50), model, (2, 50, 3), rng=np.random.default_rng(0), chunk=16)
    np.testing.assert_array_equal(np.asarray(a), b)  # the same draws on either path
    folder = os.path.dirname(a.filename)
    assert os.path.isdir(folder)
    del a
    gc.collect()
    assert not os.path.exists(folder)


def test_run_strategy_on_memory_mapped_x(tmp_path):
    np.save(tmp_path / "X.npy", _binary(N=2000))
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    Xte = _binary(N=50, seed=1)
    r = run_strategy("meanfield", mlp_vae(D=20, hidden=8, latent_dim=3), Xm, Xte, budget_s=0.4,
                     n_evals=3, n_samples_curve=10, n_samples_final=20,
                     strategy_kw=dict(eval_steps=5))
    assert r.grid == pytest.approx([0.1, 0.2, 0.4])
    assert len(r.heldout) == 3 and np.all(np.isfinite(r.heldout)) and np.isfinite(r.final)
    assert all(t >= g for t, g in zip(r.times, r.grid))
    assert np.all(np.diff(r.epochs) > 0) and r.epochs[-1] == pytest.approx(r.iterations / 16)  # 16 steps an epoch
    assert r.state_bytes == (6 * 3 + 1) * 2000 * 4


def test_dask_scoring_runs_block_by_block_on_a_local_cluster():
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    from lgm.estep import ais_log_likelihood

    model = mlp_vae(D=20, hidden=8, latent_dim=3, seed=2)
    X = _binary(N=90)
    Xd = da.from_array(X, chunks=(40, 10))  # column chunks are merged inside
    # chunk k is scored as the in-memory rows with seed + 7919 k
    want_ll = np.concatenate([model.log_likelihood(X[i:i + 40], n_samples=20, seed=3 + 7919 * k)
                              for k, i in enumerate(range(0, 90, 40))])
    want_ais = np.concatenate([ais_log_likelihood(model, X[i:i + 40], n_temps=10, n_chains=2,
                                                  seed=3 + 7919 * k).log_px
                               for k, i in enumerate(range(0, 90, 40))])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        ll = model.log_likelihood(Xd, n_samples=20, seed=3)
        r = ais_log_likelihood(model, Xd, n_temps=10, n_chains=2, seed=3)
        assert isinstance(ll, da.Array) and isinstance(r.log_px, da.Array)
        np.testing.assert_array_equal(ll.compute(), want_ll)
        np.testing.assert_array_equal(r.log_px.compute(), want_ais)
    with pytest.raises(TypeError, match="dtype"):
        model.log_likelihood(Xd.astype(np.float64))
    with pytest.raises(ValueError, match="shape"):
        ais_log_likelihood(model, Xd[:, :5])


def test_compare_estep_shares_the_grid_and_checks_the_budget(tmp_path):
    from lgm.front.study import compare_estep, conclusion

    exp = compare_estep("ppca", budget_s=0.4, seeds=(0, 1), n_evals=3, out_dir=tmp_path, say=lambda *a: None)
    grids = {tuple(r.grid) for rs in exp.runs.values() for r in rs}
    assert grids == {tuple(time_grid(0.4, 3))}
    assert (tmp_path / exp.picture).stat().st_size > 10_000
    assert "Budget check" in exp.md and "gap to EM optimum" in exp.md
    assert exp.gain == pytest.approx(last_doubling_gain(
        exp.grid, np.mean([r.heldout for r in exp.runs[exp.best]], axis=0)))
    text = conclusion([exp])
    assert exp.best in text.split("ranking:")[0]
    # a curve that still rises is called so, from the numbers
    exp.gain = 3.0
    assert "still rising" in conclusion([exp])


def test_compare_estep_resumes_from_kept_runs(tmp_path):
    """A study stopped part-way resumes: finished runs (numbers, the half-budget AIS, final
    model) are read back instead of run again; a missing run is run; other settings run
    everything; the .json files alone suffice, except for the gap model (amortized seed 0)."""
    from lgm.front.data import embedded
    from lgm.front.study import compare_estep

    ds = embedded(binarize=True, dtype=np.float32)
    ds = ds._replace(X_train=ds.X_train[:300])
    kw = dict(seeds=(0,), n_evals=2, out_dir=tmp_path, data=ds, n_final=4, n_test=8, eval_steps=4,
              ais_kw=dict(n_chains=2, n_temps=5), n_samples_curve=4, gaps=2,
              run_dir=tmp_path / "runs", say=lambda *a: None)
    first = compare_estep("mnist-mlp", budget_s=0.3, **kw)
    assert first.kept == 0 and sorted(p.name for p in (tmp_path / "runs").glob("*.json")) == [
        f"{n}-seed0.json" for n in sorted(first.runs)]
    other = next(n for n in first.runs if n != first.best and n != "amortized")
    (tmp_path / "runs" / f"{other}-seed0.json").unlink()  # as if killed during that run
    said = []
    again = compare_estep("mnist-mlp", budget_s=0.3, **{**kw, "say": said.append})
    assert again.kept == 3 and "3 of 4 runs were kept" in again.md
    assert any(m.startswith("3 of 4 runs kept from") for m in said)
    for n, rs in first.runs.items():
        if n != other:
            assert [r.heldout for r in again.runs[n]] == [r.heldout for r in rs]
            assert again.finals[n] == first.finals[n]
    assert all(np.isfinite(r.half_final) for rs in first.runs.values() for r in rs)
    if again.best == first.best:  # the kept runs' half-budget AIS, read back
        assert again.half_finals == first.half_finals
    g0, g1 = first.gaps[0][2], again.gaps[0][2]  # the kept amortized model's gaps
    np.testing.assert_array_equal(g0.elbo_amortized, g1.elbo_amortized)
    rec = json.loads((tmp_path / "runs" / "iwae-seed0.json").read_text())
    assert rec["machine"] == cpu_name() and np.isfinite(rec["half_final"])
    assert rec["load"]["seconds"] > 0 and 0 <= rec["load"]["others"] <= 1  # what else ran meanwhile
    assert "Other processes used at most" in first.md and all(ld for _, _, ld in again.loads)
    # the numbers travel as .json: without the other models the study resumes as before ...
    for p in (tmp_path / "runs").glob("*.model.npz"):
        if p.name != "amortized-seed0.model.npz":
            p.unlink()
    # (and a run made on another CPU is named in the report)
    rec["machine"] = "Another CPU, 64 logical CPUs"
    (tmp_path / "runs" / "iwae-seed0.json").write_text(json.dumps(rec))
    third = compare_estep("mnist-mlp", budget_s=0.3, **kw)
    assert third.kept == 4 and third.finals == again.finals and third.half_finals == again.half_finals
    assert "made on 2 machines" in third.md and "Another CPU, 64 logical CPUs" in third.md
    assert "2 machines" not in again.md
    # ... but the inference gaps need the amortized model, and say so
    (tmp_path / "runs" / "amortized-seed0.model.npz").unlink()
    with pytest.raises(FileNotFoundError, match="amortized-seed0.model.npz"):
        compare_estep("mnist-mlp", budget_s=0.3, **kw)
    # a subset of the strategies: only those, kept as before; without amortized no gaps, said
    sub = compare_estep("mnist-mlp", budget_s=0.3, strategies=("mcmc", "exact"), **kw)
    assert list(sub.runs) == ["mcmc"] and sub.kept == 1 and sub.finals["mcmc"] == third.finals["mcmc"]
    assert not sub.gaps and "Inference gaps: not measured (the amortized strategy was not" in sub.md
    with pytest.raises(ValueError, match="none of exact applies to the experiment mnist-mlp"):
        compare_estep("mnist-mlp", budget_s=0.3, strategies=("exact",), **kw)
    assert compare_estep("mnist-mlp", budget_s=0.2, **kw).kept == 0  # another budget


def test_estep_bench_resume(tmp_path):
    from lgm.front.study import estep_bench

    # two of the strategies first (as a longer budget is probed on the best one) ...
    out = estep_bench(out=tmp_path / "eb", experiments=("ppca",), budget=0.2, seeds=(0,),
                      strategies=("mcmc", "exact"), say=lambda *a: None)
    md = (out / "estep.md").read_text()
    assert "were kept" not in md and "| mcmc |" in md and "| iwae |" not in md
    assert sorted(p.name for p in (out / "runs" / "ppca").glob("*.json")) == ["exact-seed0.json", "mcmc-seed0.json"]
    # ... then all of them: those two kept
    estep_bench(out=out, experiments=("ppca",), budget=0.2, seeds=(0,), resume=True, say=lambda *a: None)
    assert "2 of 5 runs were kept" in (out / "estep.md").read_text()
    # the budget named per experiment (as a study run at several budgets is written up): the
    # same 0.2 s, so every run is kept
    estep_bench(out=out, experiments=("ppca",), budget={"ppca": 0.2}, seeds=(0,), resume=True,
                say=lambda *a: None)
    assert "5 of 5 runs were kept" in (out / "estep.md").read_text()
    assert not (tmp_path / "eb-2").exists()


def test_cpu_load_from_two_readings():
    from lgm.front.bench import CpuReading, cpu_load

    a, b = CpuReading(0.0, 0.0, 100.0, 1.0), CpuReading(10.0, 5.0, 112.0, 1.2)
    assert cpu_load(a, b, n_cpus=2) == {"seconds": 10.0, "others": 0.35, "steal": 0.01}
    assert cpu_load(a, CpuReading(10.0, 5.0, None, None))["others"] is None  # no /proc/stat


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux's CPU accounting")
def test_cpu_load_sees_another_process_and_not_our_own_work():
    """A process spinning beside us shows as "others" (about one CPU's worth); our own spinning
    is ours, not others'."""
    import subprocess
    import sys
    import time

    from lgm.front.bench import cpu_load, cpu_reading

    n = os.cpu_count()
    a = cpu_reading()
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                    "while time.process_time() - t < 1.5: pass"], check=True)
    b = cpu_reading()
    # (the child's 1.5 CPU-seconds, less the interpreter's start, over the span)
    assert cpu_load(a, b)["others"] * n * (b.wall - a.wall) > 1.0
    t = time.process_time()
    while time.process_time() - t < 1.0:
        pass
    c = cpu_reading()
    assert c.ours - b.ours >= 0.9


def test_load_note_names_runs_that_shared_the_machine():
    from lgm.front.study import load_note

    quiet = {"seconds": 100.0, "others": 0.004, "steal": 0.0}
    busy = {"seconds": 100.0, "others": 0.31, "steal": 0.02}
    assert load_note([("mcmc", 0, None)]) == ""
    text = load_note([("mcmc", 0, quiet), ("iwae", 1, busy), ("amortized", 0, None)])
    assert "at most 31.0 %" in text and "mean 15.7 %" in text and "at most 2.0 %" in text
    assert "shared the machine: iwae seed 1: 31 %" in text and "mcmc seed 0" not in text
    assert "1 of 3 runs have no record" in text


def test_study_names_the_strategies_of_lgm_estep():
    import lgm.estep
    from lgm.front.study import STRATEGIES, given_strategies

    assert STRATEGIES == lgm.estep.STRATEGIES
    given_strategies(None, ["mnist"])
    given_strategies(["exact", "iwae"], ["ppca", "mnist"])
    with pytest.raises(ValueError, match="among exact, mcmc.*got hmc"):
        given_strategies(["hmc"], ["ppca"])


def test_budgets_one_for_all_or_per_experiment():
    from lgm.front.study import given_budgets

    assert given_budgets(None, ["ppca", "mnist"]) == {}
    assert given_budgets(30, ["ppca", "mnist"]) == {"ppca": 30, "mnist": 30}
    assert given_budgets({"mnist": 1920.0}, ["mnist-mlp", "mnist"]) == {"mnist": 1920.0}
    with pytest.raises(ValueError, match="'scaling', which is not among the experiments run"):
        given_budgets({"scaling": 10}, ["ppca"])
    for bad in (0, -1.0, float("inf"), float("nan"), True, "60"):
        with pytest.raises(ValueError, match="positive number of seconds for ppca"):
            given_budgets({"ppca": bad}, ["ppca"])


def test_scaling_study_small(tmp_path):
    from lgm.front.data import embedded
    from lgm.front.study import conclusion, scaling_study

    ds = embedded(binarize=True, dtype=np.float32)
    ds = ds._replace(X_train=ds.X_train[:500])
    rows, truth, pic = scaling_study(tmp_path, ds, Ns=[300, 1000], budget_s=0.2, n_heldout=8,
                                     teacher_epochs=1, ais_kw=dict(n_chains=2, n_temps=5),
                                     eval_steps=2, names=("meanfield", "amortized"),
                                     say=lambda *a: None)
    assert [(r.strategy, r.N) for r in rows] == [("meanfield", 300), ("amortized", 300),
                                                 ("meanfield", 1000), ("amortized", 1000)]
    assert rows[0].state_bytes_per_point == (6 * 16 + 1) * 4 and rows[1].state_bytes_per_point == 0
    assert all(np.isfinite(r.heldout) and r.seconds_per_epoch > 0 for r in rows)
    assert not any(p.name.startswith("scaling-data") for p in tmp_path.iterdir())  # removed
    assert (tmp_path / pic).exists()
    assert "N = 1,000" in conclusion([], (rows, truth))


@pytest.mark.parametrize("args,what", [(["--seeds", "0"], "--seeds"), (["--budget", "-1"], "--budget"),
                                       (["--budget", "mnist=ten"], "--budget"),
                                       (["--budget", "mnist=5,mnist=6"], "--budget"),
                                       (["--experiments", "ppca", "--budget", "mnist=5"], "--budget"),
                                       (["--max-n", "10"], "--max-n"), (["--resume"], "--resume"),
                                       (["--strategies", "hmc"], "--strategies"),
                                       (["--experiments", "mnist", "--strategies", "exact"],
                                        "--strategies: none of exact applies to the experiment mnist")])
def test_estep_bench_user_errors_are_one_line(tmp_path, args, what):
    from conftest import one_line_error, run_lgm

    rc, out, err = run_lgm("estep-bench", *args, "--out", tmp_path / "eb", cwd=tmp_path)
    assert what in one_line_error(rc, err)
    assert not (tmp_path / "eb").exists()


def test_estep_bench_help_says_each_default_once(tmp_path):
    from conftest import run_lgm

    rc, out, err = run_lgm("estep-bench", "--help", cwd=tmp_path)
    text = " ".join(out.split())
    assert rc == 0 and "(default: None)" not in text and "(default: False)" not in text, out
    assert "EXPERIMENT=SECONDS pairs for those named (default: 5 ppca, 240 mnist-mlp" in text
    assert "(default: dynamic)" in text and "(default: lgm-estep-bench)" in text


def test_vae_train_reads_a_dask_or_memory_mapped_x_by_minibatch(tmp_path):
    da = pytest.importorskip("dask.array")
    from lgm.models.vae import train

    X = _binary()
    np.save(tmp_path / "X.npy", X)
    out = []
    for data in (X, np.load(tmp_path / "X.npy", mmap_mode="r"), da.from_array(X, chunks=(100, 20))):
        m = mlp_vae(D=20, hidden=8, latent_dim=3)
        out.append((train(m, data, epochs=2, seed=0), m.params.data.copy()))
    for hist, params in out[1:]:
        assert hist == out[0][0]
        np.testing.assert_array_equal(params, out[0][1])


def test_dynamic_binarization_draws_fresh_bernoulli_rows():
    from lgm.models.training import DynamicBinarization, take_rows

    P = np.random.default_rng(0).uniform(0, 1, (40, 30)).astype(np.float32)
    P[0] = 0.0
    P[1] = 1.0
    X = DynamicBinarization(P, seed=3)
    a, b = take_rows(X, [0, 1, 2, 3]), take_rows(X, [0, 1, 2, 3])
    assert a.dtype == np.float32 and set(np.unique(a)) <= {0.0, 1.0}
    assert np.all(a[0] == 0) and np.all(a[1] == 1) and not np.array_equal(a[2:], b[2:])
    draws = np.stack([take_rows(X, None) for _ in range(2000)])  # each row, 2000 Bernoulli draws
    z = (draws.mean(0) - P) / np.sqrt(np.maximum(P * (1 - P), 1e-12) / 2000)
    assert np.abs(z[2:]).max() < 5.5, np.abs(z[2:]).max()  # 1140 z-scores: max ~ 3.5 expected
    again = DynamicBinarization(P, seed=3)
    np.testing.assert_array_equal(again[:4], a)  # a fixed seed draws the same images
    assert X.shape == (40, 30) and len(X) == 40 and X[5:9].shape == (4, 30)
    for bad, what in ((P[0], "2-D"), (P.astype(np.int64), "2-D float32"), (P * 2, "in \\[0, 1\\]")):
        with pytest.raises((TypeError, ValueError), match=what):
            DynamicBinarization(bad)


def test_compare_estep_dynamic_binarization(tmp_path):
    from lgm.front.data import embedded
    from lgm.front.study import compare_estep

    grey = embedded(binarize=False, dtype=np.float32)
    grey = grey._replace(X_train=grey.X_train[:300])
    kw = dict(seeds=(0,), n_evals=2, out_dir=tmp_path, n_final=4, n_test=8, eval_steps=4,
              ais_kw=dict(n_chains=2, n_temps=5), n_samples_curve=4, run_dir=tmp_path / "runs",
              budget_s=0.2, say=lambda *a: None)
    exp = compare_estep("mnist-mlp", data=grey, binarize="dynamic", **kw)
    assert "dynamically binarised" in exp.title and exp.kept == 0
    assert all(np.isfinite(r.final) and r.iterations > 0 for rs in exp.runs.values() for r in rs)
    binary = embedded(binarize=True, dtype=np.float32)
    binary = binary._replace(X_train=binary.X_train[:300])
    assert compare_estep("mnist-mlp", data=binary, **kw).kept == 0  # other settings: run again
    with pytest.raises(ValueError, match="binarize"):
        compare_estep("mnist-mlp", data=grey, binarize="yes", **kw)


def _experiment(**finals_halves):
    """A finished 960 s experiment made from numbers alone: strategy name -> (final AIS of each
    seed, AIS at half the budget of each seed), the budget check done as compare_estep does it."""
    from types import SimpleNamespace

    from lgm.front.study import Experiment

    runs = {n: [SimpleNamespace(final=f, half_final=h, epochs=[1.0, 2.0], heldout=[h, f])
                for f, h in zip(finals, halves)] for n, (finals, halves) in finals_halves.items()}
    e = Experiment("mnist", "conv", 960.0, [480.0, 960.0], runs, "AIS")
    e.best = max(e.runs, key=e.mean_final)
    e.half_finals = [r.half_final for r in e.runs[e.best]]
    e.gain = e.mean_final(e.best) - float(np.mean(e.half_finals))
    return e


def test_budget_check_gives_the_gains_error_and_the_ranking_at_half_the_budget():
    """A budget that has not flattened says how uncertain the gain is (paired by seed) and
    whether the strategies ranked the same at half the budget."""
    from lgm.front.study import conclusion

    def experiment(a, b):
        return _experiment(a=a, b=b)

    a = ([-87.0, -88.0, -87.6], [-87.5, -88.7, -88.2])  # gains 0.5, 0.7, 0.6
    e = experiment(a, ([-89.0, -89.5, -89.2], [-89.2, -89.9, -89.3]))
    assert e.ranking == ["a", "b"] and e.half_ranking == ["a", "b"]
    assert e.gain == pytest.approx(0.6) and not e.flattened
    assert e.gain_se == pytest.approx(0.1 / np.sqrt(3))
    assert "ranking was the same at half the budget (a > b)" in e.budget_note()
    assert "0.60 ± 0.06 nats over the last doubling" in conclusion([e])
    # b led at half the budget: the table then ranks speed
    e = experiment(a, ([-89.0, -89.5, -89.2], [-87.0, -87.5, -87.2]))
    assert e.half_ranking == ["b", "a"]
    assert e.budget_note().endswith("at half the budget the ranking was b > a")
    # without half-budget scores for every run, no ranking is claimed
    e.runs["b"][0].half_final = float("nan")
    assert e.half_ranking is None and e.budget_note().startswith("this ranks speed")
    # a flattened curve needs no note, and the conclusion does not call it rising
    e = experiment(([-87.0, -88.0], [-87.1, -88.2]), ([-89.0, -89.5], [-89.2, -89.9]))
    assert e.flattened and e.budget_note() == "" and "still rising" not in conclusion([e])
    # a diverged run (NaN score) ranks last, wherever its name falls
    e = experiment(([-87.0, float("nan")], [-87.1, -88.2]), ([-89.0, -89.5], [-89.2, -89.9]))
    assert e.ranking == ["b", "a"]
    # one seed: no standard error
    e = experiment(([-87.0], [-88.0]), ([-89.0], [-89.2]))
    assert e.gain_se != e.gain_se and "±" not in conclusion([e]).split("still rising")[1].split(")")[0]
    # one strategy (`--strategies mcmc`): no ranking is claimed
    e = _experiment(mcmc=a)
    assert e.budget_note() == "the scores are not converged"
    text = conclusion([e])
    assert "mcmc alone (no other strategy was run)" in text and "ranking" not in text


def test_iwae_against_the_vae_is_called_an_ordering_only_beyond_the_seed_noise():
    """The conclusion's IWAE-vs-VAE sentence: a difference inside the seed spread (|Welch t| < 2)
    orders nothing; a clear one is named with its t."""
    from lgm.front.study import conclusion

    def experiment(iwae, amortized):  # flat curves: the budget check says nothing here
        return conclusion([_experiment(iwae=(iwae, iwae), amortized=(amortized, amortized))])

    # +0.08 nats with sd 0.1 and 0.5 (the 2026-12-04 MLP study): t = 0.3, no ordering
    text = experiment([-97.0, -97.1, -97.2, -96.9, -97.15], [-96.5, -97.6, -97.2, -96.8, -97.6])
    assert "within the seed spread (Welch's t = 0.3" in text and "same ordering" not in text
    text = experiment([-96.0, -96.2, -96.1], [-97.0, -97.3, -97.1])
    assert "the same ordering as Burda et al. (Welch's t = " in text
    text = experiment([-98.0, -98.2, -98.1], [-97.0, -97.3, -97.1])
    assert "not the ordering of Burda et al. (Welch's t = -" in text
    assert "not the ordering of Burda et al. (one seed)" in experiment([-98.0], [-97.0])


def test_log_axis_labels_a_short_range():
    """An epoch axis spanning about a decade (1.5 to 20 epochs) gets labelled ticks at 2, 5, 10
    and 20 inside the drawn range, not matplotlib's single '10' of a log axis; a wide range keeps
    matplotlib's decades."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lgm.front.report import _log_axis

    fig, (a, b) = plt.subplots(1, 2)
    a.plot([1.5, 20.0], [0.0, 1.0])
    _log_axis(a)
    lo, hi = a.get_xlim()
    shown = [t for t in a.get_xticks() if lo <= t <= hi]
    assert shown == [2.0, 5.0, 10.0, 20.0]
    assert [a.xaxis.get_major_formatter()(t) for t in shown] == ["2", "5", "10", "20"]
    b.plot([1.0, 1e6], [0.0, 1.0])
    _log_axis(b)
    lo, hi = b.get_xlim()
    assert {1e2, 1e4}.issubset(set(b.get_xticks())) and 2e3 not in set(b.get_xticks())
    plt.close(fig)
