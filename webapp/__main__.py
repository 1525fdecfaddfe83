"""`python -m webapp ...`: the same as the `webapp` command (webapp.cli)."""

from __future__ import annotations

import sys

from webapp.cli import main

if __name__ == "__main__":
    sys.exit(main())
