"""The ``lgm`` command.

    lgm bench [--quick] [--threads 1,2] [--dtypes float32,float64] [--no-compile] [--out FILE]
        Kernel benchmarks against numpy/scipy/torch in one run (tables as Markdown).
    lgm info
        Versions, CPU vector width, GPU backend availability.
"""

from __future__ import annotations

import argparse
import sys

from .io import write_atomic


def _csv(kind, value, choices=None):
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind}")
    if choices is not None:
        bad = [v for v in items if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"expected {kind} among {choices}, got {bad}")
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
    from lgm import bench

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
    import numba
    import numpy as np

    from lgm._config import VECTOR_WIDTH_INFO

    print(f"numpy {np.__version__}, numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads)")
    print(f"CPU vectors: {VECTOR_WIDTH_INFO}")
    try:
        from lgm import _gpu

        print("GPU: " + _gpu.backend_info())
    except Exception as exc:  # noqa: BLE001 - report whatever stops the GPU backend
        print(f"GPU: unavailable ({exc})")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="lgm", description="latent Gaussian models: kernels and benchmarks")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="kernel benchmarks against numpy/scipy/torch, in one run")
    b.add_argument("--quick", action="store_true", help="small sizes (a smoke run, ~1 minute)")
    b.add_argument("--threads", type=_threads, default=[1, 2], help="comma-separated, e.g. 1,2")
    b.add_argument("--dtypes", type=lambda v: _csv("dtypes", v, ("float32", "float64")),
                   default=["float32", "float64"])
    b.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to warm up)")
    b.add_argument("--out", help="also write the tables (Markdown) to this file, atomically")
    b.set_defaults(fn=cmd_bench)
    i = sub.add_parser("info", help="versions, vector width, GPU backend")
    i.set_defaults(fn=cmd_info)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
