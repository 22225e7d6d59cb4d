"""``python -m bench.profiled OUT MODULE [ARGS...]``: run ``python -m MODULE`` under cProfile
with a CPU clock (``time.process_time``: on a busy machine a wall clock charges other
processes' time to whatever call was preempted), writing the stats to OUT on exit."""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, module, *rest = sys.argv[1:]
    sys.argv = [module, *rest]
    profile = cProfile.Profile(time.process_time)
    try:
        profile.runcall(runpy.run_module, module, run_name="__main__", alter_sys=True)
    finally:
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
