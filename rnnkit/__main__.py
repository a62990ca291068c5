"""``python -m rnnkit`` is the ``rnnkit`` command (and what torchrun starts:
``torchrun --nproc_per_node=2 -m rnnkit train charlm ...``)."""

import sys

from rnnkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
