-- Sluice schema: the truth. Migrations in migrations/ must produce exactly this.
-- JSON columns use `json` (not `jsonb`) where key order must survive.

CREATE TABLE dag (
    dag_id          text PRIMARY KEY,
    fileloc         text NOT NULL,
    source_hash     text NOT NULL,
    serialized      json NOT NULL,
    is_paused       boolean NOT NULL DEFAULT false,
    is_active       boolean NOT NULL DEFAULT true,
    next_interval_start timestamptz,
    next_interval_end   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE import_error (
    fileloc     text PRIMARY KEY,
    message     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dag_run (
    id              bigserial PRIMARY KEY,
    dag_id          text NOT NULL REFERENCES dag (dag_id) ON DELETE CASCADE,
    run_id          text NOT NULL,
    run_type        text NOT NULL CHECK (run_type IN ('manual', 'scheduled')),
    logical_date    timestamptz NOT NULL,
    data_interval_start timestamptz,
    data_interval_end   timestamptz,
    state           text NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed')),
    conf            json NOT NULL DEFAULT '{}',
    note            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    start_date      timestamptz,
    end_date        timestamptz,
    clear_number    integer NOT NULL DEFAULT 0,
    ti_epoch        bigint NOT NULL DEFAULT 0,  -- bumped when instances are deleted
    -- a run is identified by (dag_id, run_id), as in Airflow: two DAGs on one schedule
    -- have runs of the same run_id. run_id leads, so a run id alone is found by index.
    UNIQUE (run_id, dag_id),
    UNIQUE (dag_id, logical_date, run_type)
);
CREATE INDEX dag_run_active ON dag_run (dag_id, state) WHERE state IN ('queued', 'running');

CREATE TABLE task_instance (
    id              bigserial PRIMARY KEY,
    run_pk          bigint NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    task_id         text NOT NULL,
    map_index       integer NOT NULL DEFAULT -1,
    state           text CHECK (state IN ('scheduled', 'queued', 'running', 'success', 'failed',
                                          'up_for_retry', 'upstream_failed', 'skipped',
                                          'deferred', 'removed')),
    try_number      integer NOT NULL DEFAULT 0,
    max_tries       integer NOT NULL DEFAULT 0,
    queue           text NOT NULL DEFAULT 'default',
    pool            text NOT NULL DEFAULT 'default_pool',
    pool_slots      integer NOT NULL DEFAULT 1,
    priority_weight integer NOT NULL DEFAULT 1,
    label           text,
    queued_at       timestamptz,
    start_date      timestamptz,
    end_date        timestamptz,
    first_start_date timestamptz,
    next_retry_at   timestamptz,
    next_method     text,
    next_kwargs     json,
    trigger_id      bigint,
    trigger_timeout timestamptz,
    worker_id       text,
    heartbeat_at    timestamptz,
    error           text,
    -- the Execution API's identity of the current try: a new one each time try_number is
    -- bumped, as Airflow 3 gives each try a new task-instance id; the task process that
    -- started it (hostname, unixname, pid) and its rendered template fields
    uuid            uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    hostname        text,
    unixname        text,
    pid             integer,
    rendered_fields json,
    -- the transaction that last changed its state (scheduler/counts.py reads changes only)
    state_xid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (run_pk, task_id, map_index)
);
CREATE INDEX ti_unfinished ON task_instance (state)
    WHERE state IN ('scheduled', 'queued', 'running', 'up_for_retry', 'deferred');
CREATE INDEX ti_schedulable_window ON task_instance (run_pk, task_id, map_index)
    WHERE state IS NULL OR state IN ('scheduled', 'up_for_retry');

-- Where each try's log was written: the workers that ran it (a try resumed after a
-- deferral may have run on two), each with the URL of its task-log server. The claim
-- records the worker with the try, in its own statement; the worker registers its URL
-- when it starts. `sluice tasks logs`, the API and the UI read a try's log from there
-- when the file is not on their own host.
CREATE TABLE worker (
    id          text PRIMARY KEY,
    hostname    text NOT NULL,
    log_url     text,
    started_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE task_log (
    ti_id       bigint NOT NULL REFERENCES task_instance (id) ON DELETE CASCADE,
    try_number  integer NOT NULL,
    worker_id   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ti_id, try_number, worker_id)
);

CREATE TABLE xcom (
    run_pk      bigint NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    task_id     text NOT NULL,
    map_index   integer NOT NULL DEFAULT -1,
    key         text NOT NULL,
    value       json NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_pk, task_id, key, map_index)
);

-- One row per element of an unmapped task's return value that mapped tasks expand over
-- (finish_ti parses it once; xcom_item reads one by primary key). A dict's pairs keep
-- their insertion order in idx, with dict_key set. Deleted with its xcom row.
CREATE TABLE xcom_element (
    run_pk      bigint NOT NULL,
    task_id     text NOT NULL,
    key         text NOT NULL,
    map_index   integer NOT NULL,
    idx         integer NOT NULL,
    dict_key    text,
    value       json NOT NULL,
    PRIMARY KEY (run_pk, task_id, key, map_index, idx),
    FOREIGN KEY (run_pk, task_id, key, map_index)
        REFERENCES xcom (run_pk, task_id, key, map_index) ON DELETE CASCADE
);
-- one list's rows share the key's columns: deletes by key must not be planned as scans
-- (migration 0017)
ALTER TABLE xcom_element ALTER COLUMN map_index SET (n_distinct = -1);

CREATE TABLE task_map (
    run_pk      bigint NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    task_id     text NOT NULL,
    map_index   integer NOT NULL DEFAULT -1,
    length      integer NOT NULL CHECK (length >= 0),
    keys        json,
    PRIMARY KEY (run_pk, task_id, map_index)
);

CREATE TABLE triggerer (
    id          bigserial PRIMARY KEY,
    hostname    text NOT NULL,
    pid         integer NOT NULL,
    capacity    integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trigger (
    id          bigserial PRIMARY KEY,
    classpath   text NOT NULL,
    kwargs      json NOT NULL,
    ti_id       bigint REFERENCES task_instance (id) ON DELETE CASCADE,
    priority    integer NOT NULL DEFAULT 1,
    triggerer_id bigint REFERENCES triggerer (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trigger_unclaimed ON trigger (priority DESC, id) WHERE triggerer_id IS NULL;

CREATE TABLE pool (
    name        text PRIMARY KEY,
    slots       integer NOT NULL CHECK (slots >= 0),
    description text
);
INSERT INTO pool (name, slots, description) VALUES ('default_pool', 128, 'Default pool');

-- Airflow Variables and Connections, served to tasks by the Execution API. Secret values
-- (a variable's val, a connection's password and extra) are Fernet tokens, never plain.
CREATE TABLE variable (
    key          text PRIMARY KEY,
    val          text,
    description  text,
    is_encrypted boolean NOT NULL DEFAULT true,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE connection (
    conn_id      text PRIMARY KEY,
    conn_type    text NOT NULL,
    description  text,
    host         text,
    schema       text,
    login        text,
    password     text,
    port         integer,
    extra        text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

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
-- which tries a Kubernetes-mode worker's orphan sweep finds ended (worker.kubernetes)
CREATE INDEX task_instance_history_uuid ON task_instance_history (uuid);

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

-- assets: Airflow's assets, aliases, asset events and the queue of asset-scheduled DAGs.

-- Assets and aliases the DAGs name (schedule, inlets, outlets), kept in sync by the
-- scheduler, and the assets a task first names at run time through an alias.
CREATE TABLE asset (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    uri         text NOT NULL,
    "group"     text NOT NULL DEFAULT 'asset',
    extra       json NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, uri)
);

CREATE TABLE asset_alias (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE
);

-- The assets an alias resolved to: an event emitted through the alias names the asset.
CREATE TABLE asset_alias_asset (
    alias_id    bigint NOT NULL REFERENCES asset_alias (id) ON DELETE CASCADE,
    asset_id    bigint NOT NULL REFERENCES asset (id) ON DELETE CASCADE,
    PRIMARY KEY (alias_id, asset_id)
);

-- An asset was updated: by a task's success (source_*), with the extra it set.
CREATE TABLE asset_event (
    id              bigserial PRIMARY KEY,
    asset_id        bigint NOT NULL REFERENCES asset (id) ON DELETE CASCADE,
    extra           json NOT NULL DEFAULT '{}',
    source_dag_id   text,
    source_task_id  text,
    source_run_id   text,
    source_map_index integer,
    timestamp       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX asset_event_by_asset ON asset_event (asset_id, timestamp);

-- The aliases an event was emitted through.
CREATE TABLE asset_event_alias (
    event_id    bigint NOT NULL REFERENCES asset_event (id) ON DELETE CASCADE,
    alias_id    bigint NOT NULL REFERENCES asset_alias (id) ON DELETE CASCADE,
    PRIMARY KEY (event_id, alias_id)
);
CREATE INDEX asset_event_alias_by_alias ON asset_event_alias (alias_id);

-- What each asset-scheduled DAG's condition names: kind 'asset' (name, uri), 'alias'
-- (name), 'name_ref' (name) or 'uri_ref' (uri). created_at is when the DAG began to be
-- scheduled on it (a first run's events start there, as Airflow's without catchup).
CREATE TABLE dag_schedule_asset (
    dag_id      text NOT NULL REFERENCES dag (dag_id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('asset', 'alias', 'name_ref', 'uri_ref')),
    name        text NOT NULL DEFAULT '',
    uri         text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dag_id, kind, name, uri)
);
CREATE INDEX dag_schedule_asset_by_name ON dag_schedule_asset (name);

-- Airflow's asset_dag_run_queue: an asset with events a DAG has not consumed yet.
CREATE TABLE asset_dag_run_queue (
    asset_id        bigint NOT NULL REFERENCES asset (id) ON DELETE CASCADE,
    target_dag_id   text NOT NULL REFERENCES dag (dag_id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (asset_id, target_dag_id)
);

-- The events an asset-triggered run consumed (its triggering_asset_events).
CREATE TABLE dag_run_asset_event (
    run_pk      bigint NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    event_id    bigint NOT NULL REFERENCES asset_event (id) ON DELETE CASCADE,
    PRIMARY KEY (run_pk, event_id)
);
CREATE INDEX dag_run_asset_event_by_event ON dag_run_asset_event (event_id);

ALTER TABLE dag_run DROP CONSTRAINT dag_run_run_type_check;
ALTER TABLE dag_run ADD CONSTRAINT dag_run_run_type_check
    CHECK (run_type IN ('manual', 'scheduled', 'asset_triggered'));

-- assets: each AssetWatcher of an asset an active DAG is scheduled on (kept in sync by the
-- scheduler): its trigger, run by the triggerer that claimed it (triggerer_id) for as long
-- as the row lives; each event it fires is an event of the asset.
CREATE TABLE asset_watcher (
    id          bigserial PRIMARY KEY,
    asset_id    bigint NOT NULL REFERENCES asset (id) ON DELETE CASCADE,
    name        text NOT NULL,
    classpath   text NOT NULL,
    kwargs      json NOT NULL,
    triggerer_id bigint REFERENCES triggerer (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (asset_id, name)
);

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

-- Instance state changes, for the scheduler's counts (scheduler/counts.py): each change is
-- stamped with its transaction's id; a delete bumps the run's ti_epoch.
CREATE FUNCTION ti_state_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.state_xid := pg_current_xact_id();
    RETURN NEW;
END $$;
CREATE TRIGGER ti_state_changed BEFORE UPDATE OF state ON task_instance
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION ti_state_changed();

CREATE FUNCTION ti_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE dag_run SET ti_epoch = ti_epoch + 1 WHERE id IN (SELECT DISTINCT run_pk FROM gone);
    RETURN NULL;
END $$;
CREATE TRIGGER ti_deleted AFTER DELETE ON task_instance
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION ti_deleted();

CREATE INDEX ti_state_changes ON task_instance (run_pk, state_xid);
