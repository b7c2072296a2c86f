"""The E-step study — the script form of `lgm estep-bench` (same code, lgm.front.study.estep_bench),
for runs from a checkout:

    python bench/estep_bench.py                 # the full study: about an hour on 2 cores
    python bench/estep_bench.py --quick         # about 2 minutes, labelled quick
    python bench/estep_bench.py --experiments scaling --max-n 100000

Writes estep.md (tables, gap tables, the scaling table, the conclusion) and estep_<experiment>.png
into --out (a new folder if it exists). Last full results: bench/results/estep/.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lgm.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["estep-bench", *sys.argv[1:]]))
