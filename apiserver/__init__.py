"""``sluice api-server``: the optional fourth process — Airflow's REST API and the web UI.

It reads PostgreSQL (the only truth) and follows Sluice's event stream for live
updates; it never schedules or runs anything itself.
"""
