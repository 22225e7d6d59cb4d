-- A run is identified by (dag_id, run_id), as in Airflow: with run_id unique across
-- all DAGs, a second DAG on the same schedule as another got none of its scheduled
-- runs (same `scheduled__<date>` id). The new key is looser than the old one, so
-- every existing row satisfies it. run_id leads: a run id alone is found by index.
ALTER TABLE dag_run
    DROP CONSTRAINT dag_run_run_id_key,
    ADD CONSTRAINT dag_run_run_id_dag_id_key UNIQUE (run_id, dag_id);
