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
