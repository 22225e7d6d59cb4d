-- task_state_store: what a task keeps between its tries (Airflow's task state store, e.g.
-- the pod a KubernetesPodOperator reattaches to), by instance identity, not try: a retry
-- reads what the try before it wrote. JSON text as the task set it; expires_at is kept
-- as Airflow keeps it (a clean-up's business, not a read's).
CREATE TABLE task_state_store (
    run_pk      bigint NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    task_id     text NOT NULL,
    map_index   integer NOT NULL,
    key         text NOT NULL,
    value       text NOT NULL,
    expires_at  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_pk, task_id, map_index, key)
);
