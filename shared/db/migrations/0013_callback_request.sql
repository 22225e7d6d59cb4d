-- callbacks: DAG and task callbacks owed to users, run by the scheduler in a child of its
-- parse server (scheduler/callbacks.py).

-- One row per callback owed: a DAG's on_success/on_failure_callback when a run ended, a
-- task's on_failure/on_retry_callback (and email_on_failure/email_on_retry) when a try
-- failed outside its task process (heartbeat timeout, a slot killed or lost). Written in
-- the transaction that ends the run or the try, so a scheduler restart loses none; a
-- scheduler claims a row for lease_until, runs it and deletes it. attempts counts claims:
-- a row whose runner died with it is tried again, a few times at most.
CREATE TABLE callback_request (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('dag', 'task')),
    run_pk      bigint NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    ti_id       bigint REFERENCES task_instance (id) ON DELETE CASCADE,
    try_number  integer,
    callback    text NOT NULL CHECK (callback IN ('on_success_callback', 'on_failure_callback',
                                                  'on_retry_callback')),
    reason      text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    lease_until timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
