"""E-step strategies side by side under equal time budgets — the script form of
`lgm estep-bench` (same code, lgm.front.demo.estep_bench), for runs from a checkout:

    python bench/estep_bench.py --experiments ppca --seeds 3          # ~2 minutes on 2 cores
    python bench/estep_bench.py --experiments mnist --seeds 2 --budget 20   # ~12 minutes

Writes estep.md (tables) and estep_<experiment>.png (held-out log-likelihood vs training time,
one curve per strategy and seed) into --out (a new folder if it exists). Last results:
bench/results/estep_ppca.md|png, bench/results/estep_mnist.md|png.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lgm.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["estep-bench", *sys.argv[1:]]))
