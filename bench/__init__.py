"""Benchmarks of Sluice against its real daemons (``python -m bench``, ``make bench``).

Scenarios live in modules of their own (``bench.hops``); each starts the
scheduler, triggerer and worker as processes, measures from the database's
own timestamps, and appends its figures to ``bench/results.md``.
"""
