"""``python -m bench``: run the hop-latency benchmark (see ``bench.hops``)."""

from __future__ import annotations

import sys

from bench.hops import main

if __name__ == "__main__":
    sys.exit(main())
