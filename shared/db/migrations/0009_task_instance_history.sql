-- task_instance_history: the ended tries of an instance before its current one.

-- Every ended try of an instance but its current one, as Airflow's task_instance_history:
-- a row is written by the statement that starts the next try (queue_tis,
-- start_in_triggerer, fail_unstartable: the try an up_for_retry instance ended), and by
-- clearing (reset_tis), which keeps them. Keyed by the instance's identity, not its id,
-- so the tries of an instance a clear drops stay with their run.
CREATE TABLE task_instance_history (
    run_pk          bigint NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    task_id         text NOT NULL,
    map_index       integer NOT NULL,
    try_number      integer NOT NULL,
    uuid            uuid NOT NULL,
    state           text,
    max_tries       integer NOT NULL,
    queue           text NOT NULL,
    pool            text NOT NULL,
    pool_slots      integer NOT NULL,
    priority_weight integer NOT NULL,
    label           text,
    queued_at       timestamptz,
    start_date      timestamptz,
    end_date        timestamptz,
    error           text,
    hostname        text,
    unixname        text,
    pid             integer,
    PRIMARY KEY (run_pk, task_id, map_index, try_number)
);
