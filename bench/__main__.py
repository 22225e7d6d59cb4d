"""``python -m bench [SCENARIO] [options]``: run a benchmark against the real daemons.

Scenarios: ``hops`` (the default, what ``make bench`` runs), ``triggers``,
``deferral``, ``mapping``, ``budget`` (a mapped no-op's CPU per instance by
process and stage; prints its section, never appends it), ``passes`` (one
scheduling pass over a 10,000- and a 100,000-way run), and ``all`` (hops,
deferral, triggers and mapping with their defaults, one after the other; only
``--no-write`` and ``--results`` apply to it).
``python -m bench SCENARIO --help`` lists a scenario's options.
"""

from __future__ import annotations

import sys

from bench import budget, deferral, hops, mapping, passes, triggers

SCENARIOS = {"hops": hops.main, "triggers": triggers.main, "deferral": deferral.main,
             "mapping": mapping.main, "budget": budget.main, "passes": passes.main}
OUTPUT_FLAGS = ("--no-write", "--results")


def main(argv: list[str]) -> int:
    if argv and (argv[0] in ("-h", "--help") or argv[0] == "all" and {"-h", "--help"} & {*argv}):
        print(__doc__)
        return 0
    name = argv[0] if argv and not argv[0].startswith("-") else "hops"
    rest = argv[1:] if argv and argv[0] == name else argv
    if name == "all":
        for scenario in ("hops", "deferral", "triggers", "mapping"):
            print(f"=== {scenario}", file=sys.stderr)
            SCENARIOS[scenario](_output_only(rest))
        return 0
    if name not in SCENARIOS:
        print(f"unknown scenario {name!r}: choose from {', '.join([*SCENARIOS, 'all'])}",
              file=sys.stderr)
        return 2
    return SCENARIOS[name](rest)


def _output_only(argv: list[str]) -> list[str]:
    kept = []
    for i, arg in enumerate(argv):
        if arg.startswith(OUTPUT_FLAGS) or (i and argv[i - 1] == "--results"):
            kept.append(arg)
    return kept


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
