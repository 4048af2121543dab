"""``python -m nndct_lite``: the ``nndct-lite`` command line (see nndct_lite/cli.py)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
