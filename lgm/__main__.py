"""``python -m lgm``: the ``lgm`` command."""

import sys

from lgm.front.cli import main

sys.exit(main())
