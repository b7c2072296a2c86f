"""The ``lgm`` command.

    lgm demo [--quick] [--out DIR]
        The main job: PPCA/FA, a VAE and the E-step strategies on the embedded MNIST-5k; writes
        DIR/report.md and PNG pictures (never over an earlier report).
    lgm estep-bench [--experiments ppca,mnist,mnist-mlp,scaling] [--strategies mcmc,...] [--quick] [--budget S|EXP=S,...] [--seeds N] [--out DIR]
        The E-step study: strategies on a shared time grid over seeds, AIS scores, inference
        gaps, what scales with N, and a conclusion from the numbers (estep.md + pictures).
    lgm fit DATA --model {ppca,fa,vae-mlp,vae-conv} [--strategy ...] [--out model.npz]
    lgm score DATA --model-file model.npz [--samples S] [--out scores.csv]
        Fit a model to your own data (.npy, .npz, .csv, MNIST IDX) and score data with it.
    lgm bench [--quick] [--threads 1,2] [--dtypes float32,float64] [--no-compile] [--out FILE]
        Kernel benchmarks against numpy/scipy/torch in one run (tables as Markdown).
    lgm info
        Versions, CPU vector width, GPU backend availability.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lgm.io import write_atomic


def _csv(kind, value, choices=None):
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind}")
    if choices is not None:
        bad = [v for v in items if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"expected {kind} among {', '.join(choices)}, got {', '.join(bad)}")
    return items


def _threads(value):
    items = _csv("thread counts", value)
    try:
        out = [int(t) for t in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2, got {value!r}") from None
    if any(t < 1 for t in out):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2, got {value!r}")
    return out


def cmd_bench(args):
    from lgm.front import bench

    threads = args.threads
    print(f"lgm bench: {'quick sizes' if args.quick else 'full sizes'}, threads {threads}, "
          f"dtypes {args.dtypes}; each line is one case as it finishes", flush=True)
    rows, env = bench.run(quick=args.quick, threads=threads, dtypes=args.dtypes,
                          compile_=not args.no_compile,
                          progress=lambda line: print("  " + line, flush=True))
    text = bench.table(rows, env)
    print()
    print(text)
    if args.out:
        write_atomic(args.out, text + "\n")
        print(f"\nwrote {args.out}")
    return 0


def cmd_info(args):
    from lgm.ops import device_info

    for line in device_info():
        print(line)
    return 0


def cmd_demo(args):
    from lgm.front.demo import demo

    demo(out=args.out, quick=args.quick, command=args.command_line, created=args.created)
    return 0


def _budget(value, experiments):
    """--budget: S (seconds for every experiment) or EXP=S[,EXP=S] (for those named; the others
    their default), checked as estep_bench checks it; UsageError naming the option."""
    from lgm.front.fitting import UsageError
    from lgm.front.study import given_budgets

    if value is None:
        return None
    try:
        if "=" not in value:
            budget = float(value)
        else:
            budget = {}
            for item in value.split(","):
                e, sep, b = item.partition("=")
                if not sep or e.strip() in budget:
                    raise ValueError
                budget[e.strip()] = float(b)
    except ValueError:
        raise UsageError(f"--budget: expected seconds (e.g. 960) or EXPERIMENT=SECONDS pairs "
                         f"(e.g. mnist=1920,mnist-mlp=240), got {value!r}") from None
    try:
        given_budgets(budget, experiments)
    except ValueError as exc:
        raise UsageError(f"--budget: {exc}") from None
    return budget


def cmd_estep_bench(args):
    from lgm.front.fitting import UsageError
    from lgm.front.study import estep_bench, given_strategies

    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds: expected a positive int, got {args.seeds}")
    budget = _budget(args.budget, args.experiments)
    if args.max_n is not None and args.max_n < 1000:
        raise UsageError(f"--max-n: expected at least 1000, got {args.max_n}")
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    try:
        given_strategies(args.strategies, args.experiments)
    except ValueError as exc:
        raise UsageError(f"--strategies: {exc}") from None
    estep_bench(out=args.out, experiments=args.experiments, budget=budget,
                seeds=tuple(range(seeds)), quick=args.quick, max_n=args.max_n,
                command=args.command_line, created=args.created, resume=args.resume,
                binarize=args.binarize, strategies=args.strategies)
    return 0


def _bar(desc):
    """A progress bar (lgm.front.progress; a no-op without tqdm) that appears with the first step
    of iterative work only (a closed-form fit, or an input error, shows none), and the callback
    that advances it."""
    from lgm.front.progress import progress_bar

    state = {"bar": None, "steps": 0}

    def progress(n, loss):
        if state["bar"] is None:
            state["bar"] = progress_bar(desc=desc, unit="step")
        state["bar"].update(n)
        state["steps"] += n
        if state["steps"] % 20 == 0:
            state["bar"].set_postfix_str(f"loss {loss:.2f}")

    class _Closer:
        def close(self):
            if state["bar"] is not None:
                state["bar"].close()

    return _Closer(), progress


def cmd_fit(args):
    from lgm.front import fitting

    shape = None
    if args.image_shape:
        try:
            shape = tuple(int(v) for v in args.image_shape.split(","))
        except ValueError:
            raise fitting.UsageError(f"--image-shape: expected H,W,C, got {args.image_shape!r}") from None
    bar, progress = _bar("fit")
    try:
        fitting.fit(args.data, model=args.model, out=args.out, components=args.components,
                    strategy=args.strategy, likelihood=args.likelihood, epochs=args.epochs,
                    steps=args.steps,
                    image_shape=shape, scale=args.scale, binarize=args.binarize, key=args.key,
                    seed=args.seed, force=args.force, progress=progress)
    finally:
        bar.close()
    return 0


def cmd_score(args):
    from lgm.front import fitting

    fitting.score(args.data, args.model_file, n_samples=args.samples, key=args.key, out=args.out,
                  seed=args.seed, force=args.force)
    return 0


def _command_line(argv):
    """The command as the user typed it (for reports)."""
    import shlex

    return "lgm " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, where it has one: not "(default: None)" for
    options whose help says what they default to, nor "(default: False)" for flags."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (what was wrong, and where the help is) instead
    of the usage block above it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser():
    fmt = _Help
    p = _Parser(prog="lgm", description="latent Gaussian models: kernels and benchmarks",
                formatter_class=fmt)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    b = sub.add_parser("bench", help="kernel benchmarks against numpy/scipy/torch, in one run",
                       formatter_class=fmt)
    b.add_argument("--quick", action="store_true",
                   help="small sizes only (about 3 minutes on 2 cores, torch.compile included)")
    b.add_argument("--threads", type=_threads, default=[1, 2], help="comma-separated, e.g. 1,2")
    b.add_argument("--dtypes", type=lambda v: _csv("dtypes", v, ("float32", "float64")),
                   default=["float32", "float64"], help="comma-separated: float32, float64")
    b.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to warm up)")
    b.add_argument("--out", help="also write the tables (Markdown) to this file, atomically")
    b.set_defaults(fn=cmd_bench)
    i = sub.add_parser("info", help="versions, vector width, GPU backend", formatter_class=fmt)
    i.set_defaults(fn=cmd_info)
    d = sub.add_parser("demo", help="the main job on the embedded MNIST-5k: models, E-step "
                                    "comparison, report with pictures", formatter_class=fmt)
    d.add_argument("--quick", action="store_true", help="about 1 minute instead of about 2")
    d.add_argument("--out", default="lgm-report", help="report folder (a new one if it exists)")
    d.set_defaults(fn=cmd_demo)
    e = sub.add_parser("estep-bench", help="the E-step study: strategies under equal time "
                                           "budgets, AIS scores, inference gaps, what scales "
                                           "(about two hours on 2 cores; --quick about 2 minutes)",
                       formatter_class=fmt)
    from lgm.front.study import BINARIZE, BUDGETS, EXPERIMENTS, STRATEGIES  # the defaults, named once (a few ms of imports)

    exps = EXPERIMENTS
    e.add_argument("--experiments", type=lambda v: _csv("experiments", v, exps),
                   default=list(exps), help="comma-separated: " + ", ".join(exps))
    b = {k: [f"{v:g}" for v in full_quick] for k, full_quick in BUDGETS.items()}
    e.add_argument("--budget", metavar="S|EXP=S,...", help=(
        "training seconds per strategy and seed: one number for every experiment, or "
        "EXPERIMENT=SECONDS pairs for those named (default: "
        f"{b['ppca'][0]} ppca, {b['mnist-mlp'][0]} mnist-mlp, {b['scaling'][0]} per scaling run, "
        f"{b['mnist'][0]} mnist (conv); --quick: "
        + ", ".join(b[k][1] for k in exps) + ")"))
    e.add_argument("--strategies", type=lambda v: _csv("strategies", v, STRATEGIES),
                   help="comma-separated, run only these: " + ", ".join(STRATEGIES) + " (default: "
                        "all that apply; exact only to ppca). Runs made so into a study's folder are "
                        "kept for a later --resume with all of them")
    e.add_argument("--seeds", type=int, help="repeated runs (the bands): default 5, --quick 2")
    e.add_argument("--quick", action="store_true", help="a few minutes: short budgets, small "
                                                        "evaluations, N up to 10^4; labelled quick")
    e.add_argument("--max-n", type=int, help="scaling: the largest N (default 10^6, --quick 10^4)")
    e.add_argument("--out", default="lgm-estep-bench", help="report folder (a new one if it "
                                                             "exists, unless --resume)")
    e.add_argument("--binarize", choices=("static", "dynamic"), default=BINARIZE,
                   help="the MNIST experiments' training images: binarised once at 0.5 (static) "
                        "or drawn anew as Bernoulli(grey level) at every read (dynamic, as Burda "
                        "et al. 2016; less overfitting of the 4000 images)")
    e.add_argument("--resume", action="store_true",
                   help="continue the study in the folder --out: every finished run is kept "
                        "there (runs/), and only the missing ones (or those made with other "
                        "settings) run; the scaling experiment runs again")
    e.set_defaults(fn=cmd_estep_bench)
    f = sub.add_parser("fit", help="fit a model to a data file (.npy, .npz, .csv, MNIST IDX)",
                       formatter_class=fmt)
    f.add_argument("data", help="the data: .npy, .npz, .csv (empty, nan or NA cells are missing "
                                "values) or an MNIST IDX file; one row per sample")
    f.add_argument("--model", default="ppca", choices=("ppca", "fa", "vae-mlp", "vae-conv"),
                   help="ppca / fa: linear-Gaussian (exact); vae-*: neural decoder")
    f.add_argument("--strategy", help="exact (ppca, fa); amortized, iwae, mcmc or meanfield (VAE; "
                                      "default amortized)")
    f.add_argument("--components", type=int, default=16, help="latent dimensions")
    f.add_argument("--likelihood", default="bernoulli", choices=("bernoulli", "gaussian"),
                   help="the VAE's decoder: Bernoulli (data in [0, 1]) or Gaussian")
    f.add_argument("--steps", type=int, default=5000,
                   help="VAE: optimisation steps (minibatches of 128), rounded up to whole epochs")
    f.add_argument("--epochs", type=int, help="VAE: epochs instead of --steps")
    f.add_argument("--image-shape", help="H,W,C for --model vae-conv (default: square, 1 channel)")
    f.add_argument("--scale", type=float, help="divide the data by this (e.g. 255)")
    f.add_argument("--binarize", action="store_true", help="threshold at 0.5 (after --scale)")
    f.add_argument("--key", help="array name inside an .npz with several")
    f.add_argument("--seed", type=int, default=0, help="initialisation and minibatch order")
    f.add_argument("--out", default="model.npz", help="the model file to write (.npz)")
    f.add_argument("--force", action="store_true", help="replace an existing --out file")
    f.set_defaults(fn=cmd_fit)
    s = sub.add_parser("score", help="log-likelihood of each row of a data file under a saved model",
                       formatter_class=fmt)
    s.add_argument("data", help="the data to score (formats as for fit)")
    s.add_argument("--model-file", required=True, help="a model written by `lgm fit`")
    s.add_argument("--samples", type=int, default=1000, help="importance samples S (VAE)")
    s.add_argument("--key", help="array name inside an .npz with several")
    s.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    s.add_argument("--out", help="write per-row scores (CSV)")
    s.add_argument("--force", action="store_true", help="replace an existing --out file")
    s.set_defaults(fn=cmd_score)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    args.command_line = _command_line(argv)
    from lgm.front.fitting import UsageError

    created = []  # output folders this command made (an interrupt removes them if still empty)
    args.created = created
    try:
        return args.fn(args)
    except UsageError as exc:
        print(f"lgm {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the user named cannot be read or written
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        print(f"lgm {args.cmd}: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # training diverged (lgm.vae.train says how and where)
        print(f"lgm {args.cmd}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nlgm {args.cmd}: interrupted; " + _after_interrupt(args, created), file=sys.stderr)
        return 130


def _after_interrupt(args, created):
    """What an interrupted command leaves: folders it made are removed while still empty (and
    said so), partial reports are named; files are only ever written whole (atomically)."""
    if args.cmd == "estep-bench":
        study = Path(created[0]) if created else Path(args.out)
        runs = study / "runs"
        if runs.is_dir() and any(runs.iterdir()):
            return (f"the finished runs are kept in {runs}; `lgm estep-bench --resume --out "
                    f"{study}` (with the same options) continues the study")
        if created and runs.is_dir():
            runs.rmdir()  # no run finished: the folder is empty again, removed below
    kept, removed = [], []
    for d in created:
        d = Path(d)
        try:
            d.rmdir()  # only succeeds on an empty folder
            removed.append(str(d))
        except OSError:
            if d.exists():
                kept.append(str(d))
    if kept:
        return f"the partial results are in {', '.join(kept)}"
    if removed:
        return f"nothing was written (removed the empty folder {', '.join(removed)})"
    return "nothing was written"


if __name__ == "__main__":
    sys.exit(main())
