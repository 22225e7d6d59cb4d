"""Setup and teardown tasks as Airflow's docs write them (``@setup``, ``@teardown``,
``as_teardown(setups=...)``, ``on_failure_fail_dagrun``, the context manager)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, setup, task, teardown


@setup
def create_cluster():
    return "cluster-1"


@setup
def broken_setup():
    raise RuntimeError("cannot create the bucket")


@task
def run_query(cluster=None):
    return f"ran on {cluster}"


@task
def failing_query():
    raise RuntimeError("query failed")


@task
def delete_cluster(cluster=None):
    return f"deleted {cluster}"


# The Task SDK's @teardown function can be called once per file: its first call records
# the teardown trigger rule on it, and a second call raises "Trigger rule not configurable
# for teardown tasks." (Airflow's own behaviour). Reused teardowns use as_teardown().
@teardown
def drop_cluster():
    return "dropped"


@task
def broken_teardown_body():
    raise RuntimeError("cannot delete the cluster")


# one of two setups fails: the work is upstream_failed, the teardown runs (one setup
# succeeded), and the run fails (its leaf, the work, failed)
with DAG("st_one_setup_fails", schedule=None, start_date=datetime(2026, 1, 1)):
    ok, bad = create_cluster(), broken_setup()
    [ok, bad] >> run_query() >> delete_cluster().as_teardown(setups=[ok, bad])

# the only setup fails: neither the work nor the teardown runs
with DAG("st_setup_fails", schedule=None, start_date=datetime(2026, 1, 1)):
    cluster = broken_setup()
    with cluster >> drop_cluster():
        run_query()

# the work fails: the teardown still runs, the run fails
with DAG("st_work_fails", schedule=None, start_date=datetime(2026, 1, 1)):
    cluster = create_cluster()
    cluster >> failing_query() >> delete_cluster(cluster).as_teardown(setups=cluster)

# the teardown fails: ignored for the run's state, which succeeds
with DAG("st_teardown_fails", schedule=None, start_date=datetime(2026, 1, 1)):
    cluster = create_cluster()
    cluster >> run_query(cluster) >> broken_teardown_body().as_teardown(setups=cluster)

# ... unless the teardown says on_failure_fail_dagrun
with DAG("st_teardown_fails_run", schedule=None, start_date=datetime(2026, 1, 1)):
    cluster = create_cluster()
    cluster >> run_query(cluster) >> broken_teardown_body().as_teardown(
        setups=cluster, on_failure_fail_dagrun=True)
