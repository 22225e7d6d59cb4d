-- Named SQL blocks (`-- name: NAME`), loaded once by shared.db.queries().

-- name: upsert_dag
INSERT INTO dag (dag_id, fileloc, source_hash, serialized, is_paused, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (dag_id) DO UPDATE
   SET fileloc = EXCLUDED.fileloc, source_hash = EXCLUDED.source_hash,
       serialized = EXCLUDED.serialized, is_active = true, updated_at = now()
RETURNING (xmax = 0) AS inserted

-- name: deactivate_missing_dags
UPDATE dag SET is_active = false
 WHERE fileloc = $1 AND NOT (dag_id = any($2::text[])) AND is_active

-- name: deactivate_missing_files
UPDATE dag SET is_active = false WHERE NOT (fileloc = any($1::text[])) AND is_active

-- name: set_import_error
INSERT INTO import_error (fileloc, message) VALUES ($1, $2)
ON CONFLICT (fileloc) DO UPDATE SET message = EXCLUDED.message, created_at = now()

-- name: clear_import_error
DELETE FROM import_error WHERE fileloc = $1

-- name: clear_missing_import_errors
DELETE FROM import_error WHERE NOT (fileloc = any($1::text[]))

-- name: active_dags
SELECT dag_id, serialized, is_paused, next_interval_start, next_interval_end
  FROM dag WHERE is_active

-- name: last_scheduled_interval
SELECT data_interval_start, data_interval_end FROM dag_run
 WHERE dag_id = $1 AND run_type = 'scheduled' ORDER BY logical_date DESC LIMIT 1

-- name: lock_dag_ids
-- Transaction-scoped locks on the dag_ids one file stores: two files storing one new
-- dag_id at once cannot both win.
SELECT pg_advisory_xact_lock($1, hashtext(d)) FROM unnest($2::text[]) AS d

-- name: active_dag_owners
SELECT dag_id, fileloc FROM dag WHERE dag_id = any($1::text[]) AND is_active

-- name: dag_schedule
SELECT serialized->'schedule' FROM dag WHERE dag_id = $1

-- name: insert_run
-- No row when the DAG already has this run_id or a run of this type at this logical
-- date (both keys are per DAG); the caller says which (run_conflict) and logs it.
INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, data_interval_start,
                     data_interval_end, state, conf)
VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7)
ON CONFLICT DO NOTHING
RETURNING id

-- name: run_conflict
-- The run of DAG $1 that kept insert_run from inserting ($2 run_id, $3 logical_date,
-- $4 run_type).
SELECT id, run_id, run_type, logical_date FROM dag_run
 WHERE dag_id = $1 AND (run_id = $2 OR (logical_date = $3 AND run_type = $4))
 ORDER BY id LIMIT 1

-- name: find_runs
-- The runs with run id $1, of DAG $2 when given: more than one is an ambiguous id.
SELECT id, dag_id FROM dag_run
 WHERE run_id = $1 AND ($2::text IS NULL OR dag_id = $2)
 ORDER BY dag_id

-- name: lock_active_runs
-- Counts are read by the next statement, not here: this statement's snapshot is
-- taken before its row locks, so it can miss what the previous holder of a lock
-- committed a moment earlier (read_runs). NO KEY UPDATE: one pass per run at a time
-- (and none during a clear's FOR UPDATE), while the foreign-key checks of rows that
-- tries write meanwhile (an XCom, a history row: FOR KEY SHARE of the run) do not wait
-- for the pass.
SELECT r.id, r.dag_id, r.state, r.logical_date, r.run_id, r.conf, r.clear_number, r.start_date
  FROM dag_run r
 WHERE r.id = any($1::bigint[]) AND r.state IN ('queued', 'running')
 ORDER BY r.id
   FOR NO KEY UPDATE SKIP LOCKED

-- name: active_runs_among
SELECT id FROM dag_run WHERE id = any($1::bigint[]) AND state IN ('queued', 'running')

-- name: running_runs_per_dag
SELECT dag_id, count(*) AS n FROM dag_run
 WHERE state = 'running' AND dag_id = any($1::text[]) GROUP BY dag_id

-- name: start_run
UPDATE dag_run SET state = 'running', start_date = now() WHERE id = $1 AND state = 'queued'

-- name: insert_tis
INSERT INTO task_instance (run_pk, task_id, map_index, max_tries, queue, pool, pool_slots,
                           priority_weight)
SELECT $1, t.task_id, t.map_index, t.max_tries, t.queue, t.pool, t.pool_slots, t.priority_weight
  FROM unnest($2::text[], $3::int[], $4::int[], $5::text[], $6::text[], $7::int[], $8::int[])
       AS t(task_id, map_index, max_tries, queue, pool, pool_slots, priority_weight)
ON CONFLICT (run_pk, task_id, map_index) DO NOTHING

-- name: read_runs
-- One snapshot, taken after the runs' locks are held, of:
--   'run' rows:    per run, its ti_epoch, whether it is read whole, and the oldest
--                  transaction open now (the next read's $2);
--   'change' rows: each run's instances whose state changed at or after $2 (the oldest
--                  transaction open at the scheduler's previous read of it), or every
--                  instance when $2 is NULL (or 0) or the run's ti_epoch is no longer $3
--                  (scheduler/counts.py keeps the counts they add up to);
--   'ti' rows:     the schedulable instances, in map_index order, of each (run, task) pair
--                  in $4/$5, at most $6 of them (NULL: all), and all of those of tasks
--                  changed rows name that the pairs do not (tasks a DAG no longer has).
WITH since AS (  -- xid 0: read whole (every stamp is at least 1); so is a run whose previous
                 -- read is ahead of the server's transaction ids (it restarted and lost them)
    SELECT s.run_pk, r.ti_epoch AS epoch,
           CASE WHEN r.ti_epoch = s.epoch
                 AND s.since <= pg_snapshot_xmax(pg_current_snapshot())::text::bigint
                THEN coalesce(s.since, 0) ELSE 0 END::text::xid8 AS since
      FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS s(run_pk, since, epoch)
      JOIN dag_run r ON r.id = s.run_pk
), changes AS (
    SELECT t.run_pk, t.id, t.task_id, t.state
      FROM since s JOIN task_instance t ON t.run_pk = s.run_pk AND t.state_xid >= s.since
), given AS (
    SELECT * FROM unnest($4::bigint[], $5::text[], $6::int[]) AS p(run_pk, task_id, lim)
), pairs AS (
    SELECT run_pk, task_id, lim FROM given
     UNION ALL
    SELECT DISTINCT c.run_pk, c.task_id, NULL::int FROM changes c
     WHERE NOT EXISTS (SELECT 1 FROM given g WHERE g.run_pk = c.run_pk AND g.task_id = c.task_id)
)
SELECT 'run' AS kind, s.run_pk, NULL::text AS task_id, NULL::text AS state,
       NULL::bigint AS id, NULL::int AS map_index, NULL::int AS try_number,
       NULL::timestamptz AS next_retry_at, s.epoch, s.since = '0'::xid8 AS whole,
       pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin
  FROM since s
 UNION ALL
SELECT 'change', c.run_pk, c.task_id, c.state, c.id, NULL, NULL, NULL, NULL, NULL, NULL
  FROM changes c
 UNION ALL
SELECT 'ti', ti.run_pk, ti.task_id, ti.state, ti.id, ti.map_index, ti.try_number,
       ti.next_retry_at, NULL, NULL, NULL
  FROM pairs p
 CROSS JOIN LATERAL (
       SELECT t.id, t.run_pk, t.task_id, t.map_index, t.state, t.try_number, t.next_retry_at
         FROM task_instance t
        WHERE t.run_pk = p.run_pk AND t.task_id = p.task_id
          AND (t.state IS NULL OR t.state IN ('scheduled', 'up_for_retry'))
        ORDER BY t.map_index
        LIMIT p.lim) ti

-- name: read_busy
-- The slots queued and running instances hold, per (pool, DAG, task, run), across all
-- runs: read by a pass after its runs' locks are held, before their instances.
SELECT b.run_pk, b.task_id, count(*)::int AS n, b.pool, r.dag_id, sum(b.pool_slots)::int AS slots
  FROM task_instance b JOIN dag_run r ON r.id = b.run_pk
 WHERE b.state IN ('queued', 'running')
 GROUP BY b.pool, b.task_id, b.run_pk, r.dag_id

-- name: pools
SELECT name, slots FROM pool

-- name: end_tis
-- Instances the pass ends without running them. An EmptyOperator set straight to
-- success still counts a try, as in Airflow; skipped and upstream_failed ones do not.
UPDATE task_instance ti
   SET state = v.state, end_date = now(), start_date = coalesce(ti.start_date, now()),
       try_number = ti.try_number + (v.state = 'success')::int,
       uuid = CASE WHEN v.state = 'success' THEN gen_random_uuid() ELSE ti.uuid END
  FROM unnest($1::bigint[], $2::text[]) AS v(id, state)
 WHERE ti.id = v.id AND ti.state IS NULL

-- name: queue_tis
-- An up_for_retry instance's ended try goes to task_instance_history in this statement,
-- which starts the next one (no round trip of its own).
WITH ended AS (
    INSERT INTO task_instance_history (run_pk, task_id, map_index, try_number, uuid, state,
        max_tries, queue, pool, pool_slots, priority_weight, label, queued_at, start_date,
        end_date, error, hostname, unixname, pid)
    SELECT h.run_pk, h.task_id, h.map_index, h.try_number, h.uuid, h.state, h.max_tries,
           h.queue, h.pool, h.pool_slots, h.priority_weight, h.label, h.queued_at,
           h.start_date, h.end_date, h.error, h.hostname, h.unixname, h.pid
      FROM task_instance h
     WHERE h.id = any($1::bigint[]) AND h.state = 'up_for_retry' AND h.try_number > 0
    ON CONFLICT DO NOTHING
)
UPDATE task_instance
   SET state = 'queued', queued_at = now(),
       try_number = CASE WHEN state = 'scheduled' THEN try_number ELSE try_number + 1 END,
       uuid = CASE WHEN state = 'scheduled' THEN uuid ELSE gen_random_uuid() END,
       next_retry_at = NULL
 WHERE id = any($1::bigint[])
   AND (state IS NULL OR state IN ('scheduled', 'up_for_retry'))
RETURNING id, try_number, queue

-- name: time_out_run
-- dagrun_timeout passed: the run fails and its unfinished instances are skipped, as in
-- Airflow. A worker still running one finds it no longer its own when it finishes.
WITH skipped AS (
    UPDATE task_instance
       SET state = 'skipped', end_date = now(), worker_id = NULL, next_method = NULL,
           next_kwargs = NULL, trigger_id = NULL, trigger_timeout = NULL, next_retry_at = NULL
     WHERE run_pk = $1
       AND (state IS NULL OR state IN ('scheduled', 'queued', 'running', 'up_for_retry',
                                       'deferred'))
)
UPDATE dag_run SET state = 'failed', end_date = now(), note = 'dagrun_timeout'
 WHERE id = $1 AND state = 'running'

-- name: finish_run
UPDATE dag_run SET state = $2, end_date = now(), note = $3
 WHERE id = $1 AND state = 'running'

-- name: claim_tis
-- One statement, no explicit transaction: claim the instances still queued at the
-- delivered try, clear the XComs of fresh tries (a resumed try keeps its own; their
-- xcom_element rows go with them, ON DELETE CASCADE), and return what the task
-- needs of each instance, its run and its DAG file: all the Execution API's start
-- (api_ti_run) answers, so a slot on this worker's host ($4, user $5) starts the try
-- without that call. A rescheduled sensor's XCom keys are listed for the SDK to delete.
WITH claimed AS (
    UPDATE task_instance ti
       SET state = 'running', worker_id = $3, heartbeat_at = now(), hostname = $4, unixname = $5,
           start_date = CASE WHEN ti.next_method IS NULL OR ti.start_date IS NULL THEN now()
                             ELSE ti.start_date END,
           first_start_date = coalesce(ti.first_start_date, now()), end_date = NULL
      FROM unnest($1::bigint[], $2::int[]) AS c(id, try_number)
     WHERE ti.id = c.id AND ti.try_number = c.try_number AND ti.state = 'queued'
    RETURNING ti.id, ti.uuid, ti.run_pk, ti.task_id, ti.map_index, ti.try_number, ti.max_tries,
              ti.next_method, ti.next_kwargs, ti.start_date, ti.first_start_date
), cleared AS (
    DELETE FROM xcom x USING claimed c
     WHERE c.next_method IS NULL
       AND x.run_pk = c.run_pk AND x.task_id = c.task_id AND x.map_index = c.map_index
), logged AS (  -- who writes this try's log (table task_log), in the claim's own commit
    INSERT INTO task_log (ti_id, try_number, worker_id)
    SELECT id, try_number, $3 FROM claimed
    ON CONFLICT DO NOTHING
)
SELECT c.*, r.dag_id, r.run_id, r.run_type, r.logical_date, r.data_interval_start,
       r.data_interval_end, r.conf, r.start_date AS run_start_date, r.clear_number, d.fileloc,
       r.end_date AS run_end_date, r.created_at AS run_created_at, r.state AS run_state, r.note,
       CASE WHEN c.next_method IS NULL THEN '{}'::text[]  -- cleared by this statement
            WHEN c.next_method = '__reschedule__' THEN
            ARRAY(SELECT x.key FROM xcom x WHERE x.run_pk = c.run_pk AND x.task_id = c.task_id
                                           AND x.map_index = c.map_index ORDER BY x.key)
       END AS xcom_keys
  FROM claimed c
  JOIN dag_run r ON r.id = c.run_pk
  JOIN dag d ON d.dag_id = r.dag_id

-- name: heartbeat_tis
-- The instances still this worker's running tries; the others were taken away.
UPDATE task_instance SET heartbeat_at = now()
 WHERE id = any($1::bigint[]) AND state = 'running' AND worker_id = $2
RETURNING id

-- name: keep_try_error
-- Why a try the Task SDK reported failed or up for retry (its state call carries no text).
UPDATE task_instance SET error = $3
 WHERE id = $1 AND try_number = $2 AND state IN ('failed', 'up_for_retry')

-- name: finish_ti
-- One statement: the guarded outcome of a try, with its XComs ($8 keys, $9 values)
-- and task-map row ($10 length, $11 keys; none when $10 is NULL), written only when
-- the instance is still this worker's running try. An unmapped producer's return value
-- is also split into xcom_element rows, parsed once here, for xcom_item to read.
WITH done AS (
    UPDATE task_instance
       SET state = CASE WHEN $3 = 'retry' THEN
                          CASE WHEN try_number <= max_tries THEN 'up_for_retry' ELSE 'failed' END
                        ELSE $3 END,
           end_date = now(), error = $4, label = coalesce($5, label),
           next_retry_at = CASE WHEN $3 = 'retry' THEN now() + make_interval(secs => $6) END,
           next_method = NULL, next_kwargs = NULL, worker_id = NULL
     WHERE id = $1 AND try_number = $2 AND state = 'running' AND worker_id = $7
    RETURNING state, run_pk, task_id, map_index
), pushed AS (
    INSERT INTO xcom (run_pk, task_id, map_index, key, value)
    SELECT d.run_pk, d.task_id, d.map_index, x.k, x.v::json
      FROM done d, unnest($8::text[], $9::text[]) AS x(k, v)
    ON CONFLICT (run_pk, task_id, key, map_index) DO UPDATE SET value = EXCLUDED.value,
        created_at = now()
), mapped AS (
    INSERT INTO task_map (run_pk, task_id, map_index, length, keys)
    SELECT d.run_pk, d.task_id, d.map_index, $10, $11::json FROM done d WHERE $10::int IS NOT NULL
    ON CONFLICT (run_pk, task_id, map_index) DO UPDATE SET length = EXCLUDED.length,
        keys = EXCLUDED.keys
), replaced AS (
    -- the elements of a return value written again (none left after a fresh try's claim)
    DELETE FROM xcom_element e USING done d
     WHERE 'return_value' = any($8::text[])
       AND e.run_pk = d.run_pk AND e.task_id = d.task_id AND e.key = 'return_value'
       AND e.map_index = d.map_index
    RETURNING e.idx
), output AS MATERIALIZED (
    SELECT d.run_pk, d.task_id, d.map_index, x.v::json AS v
      FROM done d, unnest($8::text[], $9::text[]) AS x(k, v)
     WHERE $10::int IS NOT NULL AND d.map_index = -1 AND x.k = 'return_value'
       AND (SELECT count(*) FROM replaced) >= 0  -- read first: old rows out before new ones in
), elements AS (
    -- a list's or tagged tuple's elements; a dict's (key, value) pairs in insertion order
    INSERT INTO xcom_element (run_pk, task_id, key, map_index, idx, dict_key, value)
    SELECT o.run_pk, o.task_id, 'return_value', o.map_index, e.n - 1, e.dict_key, e.value
      FROM output o, LATERAL (
           SELECT NULL::text AS dict_key, a.value, a.n
             FROM json_array_elements(CASE WHEN json_typeof(o.v) = 'array' THEN o.v
                                           WHEN (o.v ->> '__sluice_type__') = 'tuple'
                                                THEN o.v -> 'items' END) WITH ORDINALITY AS a(value, n)
           UNION ALL
           SELECT p.key, p.value, p.n
             FROM json_each(CASE WHEN json_typeof(o.v) = 'object'
                                  AND (o.v ->> '__sluice_type__') IS DISTINCT FROM 'tuple'
                                 THEN o.v END) WITH ORDINALITY AS p(key, value, n)) e
)
SELECT state, run_pk FROM done

-- name: put_xcoms
-- Values of keys $4 ($5, json text) of one instance; the stale xcom_element rows of those
-- keys go (their list is replaced).
WITH stale AS (
    DELETE FROM xcom_element e
     WHERE e.run_pk = $1 AND e.task_id = $2 AND e.map_index = $3 AND e.key = any($4::text[])
)
INSERT INTO xcom (run_pk, task_id, map_index, key, value)
SELECT $1, $2, $3, k, v::json FROM unnest($4::text[], $5::text[]) AS x(k, v)
ON CONFLICT (run_pk, task_id, key, map_index) DO UPDATE SET value = EXCLUDED.value,
    created_at = now()

-- name: task_spec
SELECT serialized FROM dag WHERE dag_id = $1

-- name: hand_back_ti
UPDATE task_instance SET state = 'queued', worker_id = NULL, queued_at = now()
 WHERE id = $1 AND try_number = $2 AND state = 'running' AND worker_id = $3
RETURNING queue

-- name: get_xcom
SELECT value::text AS value FROM xcom
 WHERE run_pk = $1 AND task_id = $2 AND key = $3 AND map_index = $4

-- name: get_xcoms_all
SELECT map_index, value::text AS value FROM xcom
 WHERE run_pk = $1 AND task_id = $2 AND key = $3 ORDER BY map_index

-- name: ti_is_mapped
SELECT bool_or(map_index >= 0) AS mapped FROM task_instance WHERE run_pk = $1 AND task_id = $2

-- name: defer_ti
WITH trig AS (
    INSERT INTO trigger (classpath, kwargs, ti_id, priority)
    SELECT $4, $5::json, $1, priority_weight FROM task_instance WHERE id = $1
    RETURNING id
)
UPDATE task_instance ti
   SET state = 'deferred', next_method = $6, next_kwargs = $7::json,
       trigger_id = (SELECT id FROM trig), trigger_timeout = $8, worker_id = NULL,
       label = coalesce($9, label)
 WHERE ti.id = $1 AND ti.try_number = $2 AND ti.state = 'running' AND ti.worker_id = $3
RETURNING ti.run_pk, ti.trigger_id

-- name: delete_orphan_triggers
DELETE FROM trigger t
 WHERE NOT EXISTS (SELECT 1 FROM task_instance ti
                    WHERE ti.trigger_id = t.id AND ti.state = 'deferred')
   AND t.created_at < now() - interval '5 seconds'

-- name: register_triggerer
INSERT INTO triggerer (hostname, pid, capacity) VALUES ($1, $2, $3) RETURNING id

-- name: heartbeat_triggerer
UPDATE triggerer SET heartbeat_at = now() WHERE id = $1 RETURNING id

-- name: unregister_triggerer
WITH released AS (UPDATE trigger SET triggerer_id = NULL WHERE triggerer_id = $1)
DELETE FROM triggerer WHERE id = $1

-- name: release_dead_triggerers
DELETE FROM triggerer WHERE heartbeat_at < now() - make_interval(secs => $1)
RETURNING id

-- name: claim_triggers
WITH candidates AS (
    SELECT t.id FROM trigger t
     WHERE t.triggerer_id IS NULL
        OR NOT EXISTS (SELECT 1 FROM triggerer tr WHERE tr.id = t.triggerer_id)
     ORDER BY t.priority DESC, t.id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE trigger t SET triggerer_id = $1
  FROM candidates c WHERE t.id = c.id
RETURNING t.id

-- name: load_triggers
SELECT t.id, t.classpath, t.kwargs::text AS kwargs, ti.id AS ti_id, ti.task_id,
       ti.map_index, ti.try_number, ti.trigger_timeout, ti.next_kwargs, r.dag_id, r.run_id,
       ti.run_pk, ti.uuid AS ti_uuid, ti.max_tries
  FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id AND ti.state = 'deferred'
  JOIN dag_run r ON r.id = ti.run_pk
 WHERE t.id = any($1::bigint[])

-- name: owned_triggers
SELECT t.id FROM trigger t
  JOIN task_instance ti ON ti.trigger_id = t.id AND ti.state = 'deferred'
 WHERE t.triggerer_id = $1

-- name: resume_ti
UPDATE task_instance
   SET state = 'scheduled', next_kwargs = $3::json, next_method = coalesce($4, next_method),
       trigger_id = NULL, trigger_timeout = NULL
 WHERE id = $1 AND trigger_id = $2 AND state = 'deferred'
RETURNING run_pk

-- name: resume_fired_tis
-- A batch of first events ($1 instances, $2 their triggers, $3 next_kwargs with the
-- event): one statement for the lot; an instance that moved on matches nothing.
UPDATE task_instance ti
   SET state = 'scheduled', next_kwargs = f.next_kwargs::json, trigger_id = NULL,
       trigger_timeout = NULL
  FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS f(ti_id, trigger_id, next_kwargs)
 WHERE ti.id = f.ti_id AND ti.trigger_id = f.trigger_id AND ti.state = 'deferred'
RETURNING ti.id, ti.run_pk

-- name: delete_triggers
DELETE FROM trigger WHERE id = any($1::bigint[])

-- name: end_deferred_ti
UPDATE task_instance
   SET state = $3, end_date = now(), trigger_id = NULL, trigger_timeout = NULL,
       next_method = NULL, next_kwargs = NULL
 WHERE id = $1 AND trigger_id = $2 AND state = 'deferred'
RETURNING run_pk, task_id, map_index

-- name: retry_deferred_ti
-- A trigger's TaskFailedEvent with tries left ends the try as a failed try would: up for
-- retry after the task's delay ($3 s).
UPDATE task_instance
   SET state = 'up_for_retry', end_date = now(), trigger_id = NULL, trigger_timeout = NULL,
       next_method = NULL, next_kwargs = NULL, next_retry_at = now() + make_interval(secs => $3)
 WHERE id = $1 AND trigger_id = $2 AND state = 'deferred'
RETURNING run_pk, task_id, map_index

-- name: delete_trigger
DELETE FROM trigger WHERE id = $1

-- name: zombies
SELECT ti.id, ti.run_pk, ti.task_id, ti.try_number, ti.max_tries, r.dag_id, r.logical_date
  FROM task_instance ti JOIN dag_run r ON r.id = ti.run_pk
 WHERE ti.state = 'running' AND ti.heartbeat_at < now() - make_interval(secs => $1)
   FOR UPDATE OF ti SKIP LOCKED

-- name: fail_zombie
UPDATE task_instance
   SET state = CASE WHEN try_number <= max_tries THEN 'up_for_retry' ELSE 'failed' END,
       end_date = now(), worker_id = NULL, next_method = NULL, next_kwargs = NULL,
       error = $3, next_retry_at = now() + make_interval(secs => $4)
 WHERE id = $1 AND try_number = $2 AND state = 'running'
RETURNING run_pk

-- name: owed_queued
SELECT id, try_number, queue FROM task_instance
 WHERE state = 'queued' AND queued_at < now() - make_interval(secs => $1)

-- name: touch_queued
UPDATE task_instance SET queued_at = now() WHERE id = any($1::bigint[]) AND state = 'queued'

-- name: active_run_pks
SELECT id FROM dag_run WHERE state IN ('queued', 'running')

-- name: unclaimed_triggers_exist
SELECT EXISTS (SELECT 1 FROM trigger WHERE triggerer_id IS NULL) AS pending

-- name: run_task_maps
SELECT task_id, length FROM task_map WHERE run_pk = $1 AND map_index = -1

-- name: run_returned_counts
SELECT task_id, count(*)::int AS n FROM xcom
 WHERE run_pk = $1 AND key = 'return_value' AND map_index >= 0
 GROUP BY task_id

-- name: run_failed_unexpanded
-- Tasks whose -1 instance failed or is upstream_failed (a mapped one never expanded).
SELECT task_id FROM task_instance
 WHERE run_pk = $1 AND map_index = -1 AND state IN ('failed', 'upstream_failed')

-- name: put_task_map
INSERT INTO task_map (run_pk, task_id, map_index, length, keys) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (run_pk, task_id, map_index) DO UPDATE SET length = EXCLUDED.length, keys = EXCLUDED.keys

-- name: xcom_count
SELECT count(*)::int FROM xcom
 WHERE run_pk = $1 AND task_id = $2 AND key = $3 AND map_index >= 0

-- name: xcom_range
SELECT value::text AS value FROM xcom
 WHERE run_pk = $1 AND task_id = $2 AND key = $3 AND map_index >= 0
 ORDER BY map_index OFFSET $4 LIMIT $5

-- name: start_in_triggerer
WITH x AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::float8[]) AS x(ti_id, classpath, kwargs, next_method, next_kwargs, timeout_s)
), ti AS (
    SELECT t.id, t.priority_weight FROM task_instance t JOIN x ON x.ti_id = t.id
     WHERE t.state IS NULL OR t.state = 'up_for_retry'
       FOR UPDATE OF t
), trig AS (
    INSERT INTO trigger (classpath, kwargs, ti_id, priority)
    SELECT x.classpath, x.kwargs::json, ti.id, ti.priority_weight FROM x JOIN ti ON ti.id = x.ti_id
    RETURNING id, ti_id
), ended AS (  -- the try an up_for_retry instance ended, as in queue_tis
    INSERT INTO task_instance_history (run_pk, task_id, map_index, try_number, uuid, state,
        max_tries, queue, pool, pool_slots, priority_weight, label, queued_at, start_date,
        end_date, error, hostname, unixname, pid)
    SELECT h.run_pk, h.task_id, h.map_index, h.try_number, h.uuid, h.state, h.max_tries,
           h.queue, h.pool, h.pool_slots, h.priority_weight, h.label, h.queued_at,
           h.start_date, h.end_date, h.error, h.hostname, h.unixname, h.pid
      FROM task_instance h JOIN ti ON ti.id = h.id
     WHERE h.state = 'up_for_retry' AND h.try_number > 0
    ON CONFLICT DO NOTHING
)
UPDATE task_instance t
   SET state = 'deferred', try_number = t.try_number + 1, uuid = gen_random_uuid(),
       trigger_id = trig.id,
       next_method = x.next_method, next_kwargs = x.next_kwargs::json,
       trigger_timeout = CASE WHEN x.timeout_s IS NULL THEN NULL
                              ELSE now() + make_interval(secs => x.timeout_s) END,
       start_date = now(), queued_at = now(), next_retry_at = NULL, end_date = NULL
  FROM trig JOIN x ON x.ti_id = trig.ti_id
 WHERE t.id = trig.ti_id
RETURNING t.id

-- name: expired_deferrals
SELECT ti.id, ti.trigger_id FROM task_instance ti
 WHERE ti.state = 'deferred' AND ti.trigger_timeout < now() - make_interval(secs => $1)
   FOR UPDATE SKIP LOCKED

-- name: fail_expired_deferral
WITH gone AS (DELETE FROM trigger WHERE id = $2)
UPDATE task_instance
   SET state = 'scheduled', next_method = '__fail__',
       next_kwargs = '{"error": "Trigger timeout"}'::json, trigger_id = NULL, trigger_timeout = NULL
 WHERE id = $1 AND state = 'deferred' AND trigger_id = $2
RETURNING run_pk

-- name: fail_unstartable
WITH ended AS (  -- the try an up_for_retry instance ended, as in queue_tis
    INSERT INTO task_instance_history (run_pk, task_id, map_index, try_number, uuid, state,
        max_tries, queue, pool, pool_slots, priority_weight, label, queued_at, start_date,
        end_date, error, hostname, unixname, pid)
    SELECT h.run_pk, h.task_id, h.map_index, h.try_number, h.uuid, h.state, h.max_tries,
           h.queue, h.pool, h.pool_slots, h.priority_weight, h.label, h.queued_at,
           h.start_date, h.end_date, h.error, h.hostname, h.unixname, h.pid
      FROM task_instance h
     WHERE h.id = $1 AND h.state = 'up_for_retry' AND h.try_number > 0
    ON CONFLICT DO NOTHING
)
UPDATE task_instance
   SET state = 'failed', error = $2, try_number = try_number + 1, uuid = gen_random_uuid(),
       start_date = now(),
       end_date = now()
 WHERE id = $1 AND (state IS NULL OR state = 'up_for_retry')

-- name: task_map_length
SELECT length FROM task_map WHERE run_pk = $1 AND task_id = $2 AND map_index = -1

-- name: xcom_item
-- Element $4 of an unmapped task's list (or tagged tuple), or its $4-th (key, value) pair:
-- one primary-key read of the xcom_element rows finish_ti wrote. A value with no such
-- rows (another key, or stored before migration 0004) is parsed from its xcom row as
-- before; that subquery runs only when the first one finds nothing.
SELECT coalesce(
         (SELECT CASE WHEN e.dict_key IS NULL THEN json_build_object('value', e.value)
                      ELSE json_build_object('pair', json_build_array(e.dict_key, e.value))
                 END::text
            FROM xcom_element e
           WHERE e.run_pk = $1 AND e.task_id = $2 AND e.key = $3 AND e.map_index = -1
             AND e.idx = $4::int),
         (SELECT CASE
                   WHEN json_typeof(x.value) = 'array' THEN json_build_object('value', x.value -> $4::int)
                   WHEN (x.value ->> '__sluice_type__') = 'tuple'
                        THEN json_build_object('value', x.value -> 'items' -> $4::int)
                   ELSE (SELECT json_build_object('pair', json_build_array(p.key, p.value))
                           FROM json_each(x.value) WITH ORDINALITY AS p(key, value, n)
                          WHERE p.n = $4::int + 1)
                 END::text
            FROM xcom x
           WHERE x.run_pk = $1 AND x.task_id = $2 AND x.key = $3 AND x.map_index = -1))

-- name: expand_placeholders
-- Every placeholder ($1) becomes map_index 0 and gains 1..length-1 ($2): one statement.
WITH want AS (
    SELECT * FROM unnest($1::bigint[], $2::int[]) AS w(id, length)
), moved AS (
    UPDATE task_instance t SET map_index = 0
      FROM want w
     WHERE t.id = w.id AND t.map_index = -1 AND t.state IS NULL
    RETURNING t.run_pk, t.task_id, t.max_tries, t.queue, t.pool, t.pool_slots,
              t.priority_weight, w.length
)
INSERT INTO task_instance (run_pk, task_id, map_index, max_tries, queue, pool, pool_slots,
                           priority_weight)
SELECT m.run_pk, m.task_id, g, m.max_tries, m.queue, m.pool, m.pool_slots, m.priority_weight
  FROM moved m, generate_series(1, m.length - 1) AS g
ON CONFLICT (run_pk, task_id, map_index) DO NOTHING

-- name: group_ti_states
-- States of the in-group upstream instances a mapped group's instances depend on.
SELECT ti.task_id, ti.map_index, ti.state
  FROM task_instance ti
  JOIN unnest($2::text[], $3::int[]) AS w(task_id, map_index)
    ON ti.task_id = w.task_id AND ti.map_index = w.map_index
 WHERE ti.run_pk = $1

-- name: lock_run_for_clear
SELECT id, dag_id, run_id, state FROM dag_run WHERE id = $1 FOR UPDATE

-- name: run_instances_for_clear
SELECT id, task_id, map_index, state, try_number FROM task_instance WHERE run_pk = $1

-- name: delete_xcoms_of_tis
-- Their xcom_element rows go with them (ON DELETE CASCADE).
DELETE FROM xcom x USING task_instance t
 WHERE t.id = any($1::bigint[])
   AND x.run_pk = t.run_pk AND x.task_id = t.task_id AND x.map_index = t.map_index

-- name: delete_task_maps
DELETE FROM task_map WHERE run_pk = $1 AND task_id = any($2::text[])

-- name: delete_tis
DELETE FROM task_instance WHERE id = any($1::bigint[])

-- name: tis_to_placeholder
UPDATE task_instance SET map_index = -1 WHERE id = any($1::bigint[])

-- name: remove_tis
UPDATE task_instance SET state = 'removed', end_date = coalesce(end_date, now())
 WHERE id = any($1::bigint[])

-- name: reset_tis
-- Cleared: no state, retries renewed; the try count goes on from where it was. The try
-- each one ended goes to task_instance_history first (clearing keeps tries, as in Airflow);
-- a try cleared unfinished (running, deferred, queued) is kept as failed, ended now, as
-- Airflow's TaskInstanceHistory.record_ti keeps it.
WITH ended AS (
    INSERT INTO task_instance_history (run_pk, task_id, map_index, try_number, uuid, state,
        max_tries, queue, pool, pool_slots, priority_weight, label, queued_at, start_date,
        end_date, error, hostname, unixname, pid)
    SELECT h.run_pk, h.task_id, h.map_index, h.try_number, h.uuid,
           CASE WHEN h.state IN ('success', 'failed', 'upstream_failed', 'skipped', 'removed')
                THEN h.state ELSE 'failed' END,
           h.max_tries, h.queue, h.pool, h.pool_slots, h.priority_weight, h.label, h.queued_at,
           h.start_date, coalesce(h.end_date, now()), h.error, h.hostname, h.unixname, h.pid
      FROM task_instance h
     WHERE h.id = any($1::bigint[]) AND h.state IS NOT NULL AND h.try_number > 0
    ON CONFLICT DO NOTHING
)
UPDATE task_instance t
   SET state = NULL, max_tries = c.max_tries, label = NULL, queued_at = NULL,
       start_date = NULL, end_date = NULL, next_retry_at = NULL, next_method = NULL,
       next_kwargs = NULL, trigger_id = NULL, trigger_timeout = NULL, worker_id = NULL,
       heartbeat_at = NULL, error = NULL
  FROM unnest($1::bigint[], $2::int[]) AS c(id, max_tries)
 WHERE t.id = c.id

-- name: requeue_cleared_run
UPDATE dag_run SET state = 'queued', start_date = NULL, end_date = NULL, note = NULL,
       clear_number = clear_number + 1
 WHERE id = $1

-- ===========================================================================================
-- Execution API (worker/execution_api): the Task SDK's calls, keyed by the task-instance
-- UUID of the try ($1 in the api_ti_* blocks). Writes are guarded by "still this worker's
-- ($2) running try"; a guard that matches nothing is explained by api_ti_state_of.
-- ===========================================================================================

-- name: api_ti_state_of
-- Where an instance stands, to explain a guarded write that matched nothing.
SELECT t.id, t.state, t.worker_id, t.hostname, t.pid, t.run_pk, t.task_id, t.map_index,
       t.try_number, t.max_tries, r.dag_id, r.run_id, r.logical_date
  FROM task_instance t JOIN dag_run r ON r.id = t.run_pk
 WHERE t.uuid = $1

-- name: api_ti_run
-- PATCH {id}/run: process $3 on host $4 as user $5 starts the try at $6. A queued instance
-- becomes this worker's running one; an instance this worker already claimed is taken as
-- is (a repeated start too). A fresh start (no next_method, or a reschedule's) gets the
-- try's start date and lists the instance's XCom keys, which the SDK deletes first; a
-- resumed one keeps its start date.
WITH ti AS (
    UPDATE task_instance t
       SET state = 'running', worker_id = $2, pid = $3, hostname = $4, unixname = $5,
           heartbeat_at = now(), end_date = NULL,
           start_date = CASE WHEN t.state = 'queued' AND (t.next_method IS NULL
                                  OR t.next_method = '__reschedule__' OR t.start_date IS NULL)
                             THEN $6 ELSE t.start_date END,
           first_start_date = coalesce(t.first_start_date, $6)
     WHERE t.uuid = $1 AND (t.state = 'queued' OR (t.state = 'running' AND t.worker_id = $2))
    RETURNING t.run_pk, t.task_id, t.map_index, t.try_number, t.max_tries, t.next_method,
              t.next_kwargs, t.start_date
)
SELECT ti.*, r.dag_id, r.run_id, r.run_type, r.logical_date, r.data_interval_start,
       r.data_interval_end, r.start_date AS run_start_date, r.end_date AS run_end_date,
       r.created_at AS run_created_at, r.state AS run_state, r.conf, r.note, r.clear_number,
       CASE WHEN ti.next_method IS NULL OR ti.next_method = '__reschedule__' THEN
            ARRAY(SELECT x.key FROM xcom x
                   WHERE x.run_pk = ti.run_pk AND x.task_id = ti.task_id
                     AND x.map_index = ti.map_index ORDER BY x.key)
       END AS xcom_keys
  FROM ti JOIN dag_run r ON r.id = ti.run_pk

-- name: api_ti_finish
-- PATCH {id}/state to success, failed, skipped, removed, upstream_failed or up_for_retry
-- ($3) at $4, labelled $5; a retry waits $6 s and becomes failed when no try is left.
UPDATE task_instance
   SET state = CASE WHEN $3 = 'up_for_retry' AND try_number > max_tries THEN 'failed'
                    ELSE $3 END,
       end_date = $4, label = coalesce($5, label),
       next_retry_at = CASE WHEN $3 = 'up_for_retry' THEN coalesce($4, now()) + make_interval(secs => $6) END,
       error = coalesce($7, error), next_method = NULL, next_kwargs = NULL, worker_id = NULL
 WHERE uuid = $1 AND state = 'running' AND worker_id = $2
RETURNING run_pk, state

-- name: api_ti_retry_facts
-- What the retry delay of an instance's try is derived from: its task's spec and identity.
SELECT r.dag_id, t.task_id, r.logical_date, t.try_number,
       (SELECT s FROM json_array_elements(d.serialized -> 'tasks') AS s
         WHERE s ->> 'task_id' = t.task_id LIMIT 1) AS task_spec
  FROM task_instance t JOIN dag_run r ON r.id = t.run_pk JOIN dag d ON d.dag_id = r.dag_id
 WHERE t.uuid = $1

-- name: api_ti_defer
-- PATCH {id}/state to deferred, as the worker's defer_ti: one statement writes the trigger
-- ($3 classpath, $4 kwargs) and parks the instance with $5 next_method, $6 next_kwargs and
-- a timeout of $7 s. A reschedule (next_method '__reschedule__') counts its reschedules in
-- this try and keeps the start of the first one in next_kwargs instead.
-- The task's execution_timeout counts the whole try, deferrals included (as Airflow 2 applies
-- it; the Task SDK leaves it to the server): the trigger times out by start_date + that.
WITH ti AS (
    SELECT t.id, t.priority_weight, t.next_method, t.next_kwargs, t.start_date,
           (SELECT (s ->> 'execution_timeout_s')::float8
              FROM dag_run r JOIN dag d ON d.dag_id = r.dag_id,
                   json_array_elements(d.serialized -> 'tasks') AS s
             WHERE r.id = t.run_pk AND s ->> 'task_id' = t.task_id LIMIT 1) AS execution_timeout_s
      FROM task_instance t
     WHERE t.uuid = $1 AND t.state = 'running' AND t.worker_id = $2
       FOR UPDATE OF t
), trig AS (
    INSERT INTO trigger (classpath, kwargs, ti_id, priority)
    SELECT $3, $4::text::json, ti.id, ti.priority_weight FROM ti
    RETURNING id, ti_id
)
UPDATE task_instance t
   SET state = 'deferred', worker_id = NULL, trigger_id = trig.id, next_method = $5,
       next_kwargs = CASE WHEN $5 <> '__reschedule__' THEN $6::text::json
                          WHEN ti.next_method = '__reschedule__' THEN json_build_object(
                               'reschedule_count',
                               coalesce((ti.next_kwargs ->> 'reschedule_count')::int, 0) + 1,
                               'first_reschedule_start', ti.next_kwargs -> 'first_reschedule_start')
                          ELSE json_build_object('reschedule_count', 1,
                                                 'first_reschedule_start', to_json(ti.start_date))
                     END,
       trigger_timeout = least(now() + make_interval(secs => $7),
                               CASE WHEN $5 <> '__reschedule__' THEN ti.start_date
                                    + make_interval(secs => ti.execution_timeout_s) END),
       label = coalesce($8, t.label)
  FROM ti JOIN trig ON trig.ti_id = ti.id
 WHERE t.id = ti.id
RETURNING t.run_pk

-- name: api_ti_heartbeat
-- PUT {id}/heartbeat: still this worker's running try, started by this process ($3, $4).
UPDATE task_instance SET heartbeat_at = now()
 WHERE uuid = $1 AND state = 'running' AND worker_id = $2 AND hostname = $3 AND pid = $4
RETURNING id

-- name: api_ti_rtif
UPDATE task_instance SET rendered_fields = $2::text::json WHERE uuid = $1 RETURNING id

-- name: api_ti_rendered_map_index
UPDATE task_instance SET label = $2 WHERE uuid = $1 RETURNING id

-- name: api_ti_skip_downstream
-- PATCH {id}/skip-downstream: skip ($2 task, $3 map index) of the instance's run unless
-- running or finished, as Airflow. Index -1 names every instance of the task: a mapped
-- downstream of an unmapped branch is skipped whole, where Airflow's scheduler gets there
-- later through the branch's skipmixin XCom. No row when the instance does not exist.
WITH me AS (
    SELECT run_pk FROM task_instance WHERE uuid = $1
), skipped AS (
    UPDATE task_instance t SET state = 'skipped', start_date = now(), end_date = now()
      FROM me, unnest($2::text[], $3::int[]) AS s(task_id, map_index)
     WHERE t.run_pk = me.run_pk AND t.task_id = s.task_id
       AND (t.map_index = s.map_index OR s.map_index = -1)
       AND (t.state IS NULL OR t.state NOT IN ('running', 'success', 'failed'))
    RETURNING t.id
)
SELECT me.run_pk, (SELECT count(*) FROM skipped)::int AS skipped FROM me

-- name: api_ti_reschedule_start
-- GET task-reschedules/{id}/start_date: when the first poke of this try's reschedules began.
SELECT CASE WHEN next_method = '__reschedule__' THEN next_kwargs ->> 'first_reschedule_start'
       END AS start_date
  FROM task_instance WHERE uuid = $1

-- name: api_ti_prev_success_run
-- The latest successful run of the instance's DAG before the instance's own run.
SELECT p.data_interval_start, p.data_interval_end, p.start_date, p.end_date
  FROM task_instance t JOIN dag_run r ON r.id = t.run_pk
  JOIN dag_run p ON p.dag_id = r.dag_id AND p.logical_date < r.logical_date
 WHERE t.uuid = $1 AND p.state = 'success'
 ORDER BY p.logical_date DESC LIMIT 1

-- name: api_group_task_ids
-- The tasks of DAG $1 inside task group $2 (nested groups included).
SELECT s ->> 'task_id' AS task_id
  FROM dag d, json_array_elements(d.serialized -> 'tasks') AS s
 WHERE d.dag_id = $1
   AND (s ->> 'group_id' = $2 OR starts_with(s ->> 'group_id', $2 || '.'))

-- name: api_ti_select
-- Instances of DAG $1 matching the given filters (NULL: any): tasks $2, map index $3,
-- logical dates $4, run ids $5, states $6 (with NULL states when $7).
SELECT r.run_id, t.task_id, t.map_index, t.state
  FROM task_instance t JOIN dag_run r ON r.id = t.run_pk
 WHERE r.dag_id = $1
   AND ($2::text[] IS NULL OR t.task_id = any($2::text[]))
   AND ($3::int IS NULL OR t.map_index = $3)
   AND ($4::timestamptz[] IS NULL OR r.logical_date = any($4::timestamptz[]))
   AND ($5::text[] IS NULL OR r.run_id = any($5::text[]))
   AND ($6::text[] IS NULL OR t.state = any($6::text[]) OR ($7 AND t.state IS NULL))

-- name: api_ti_count
SELECT count(*)::int
  FROM task_instance t JOIN dag_run r ON r.id = t.run_pk
 WHERE r.dag_id = $1
   AND ($2::text[] IS NULL OR t.task_id = any($2::text[]))
   AND ($3::int IS NULL OR t.map_index = $3)
   AND ($4::timestamptz[] IS NULL OR r.logical_date = any($4::timestamptz[]))
   AND ($5::text[] IS NULL OR r.run_id = any($5::text[]))
   AND ($6::text[] IS NULL OR t.state = any($6::text[]) OR ($7 AND t.state IS NULL))

-- name: api_ti_previous
-- The latest instance of DAG $1 task $2 index $3, before logical date $4 and in state $5
-- when given.
SELECT t.task_id, r.dag_id, r.run_id, r.logical_date, t.start_date, t.end_date, t.state,
       t.try_number, t.map_index
  FROM task_instance t JOIN dag_run r ON r.id = t.run_pk
 WHERE r.dag_id = $1 AND t.task_id = $2 AND t.map_index = $3
   AND ($4::timestamptz IS NULL OR r.logical_date < $4)
   AND ($5::text IS NULL OR t.state = $5)
 ORDER BY r.logical_date DESC LIMIT 1

-- name: api_xcom_get
-- One XCom value as stored (json text): of run $2, or with $6 the latest of the DAG's runs
-- up to run $2's logical date.
SELECT x.value::text AS value
  FROM xcom x JOIN dag_run r ON r.id = x.run_pk
 WHERE r.dag_id = $1 AND x.task_id = $3 AND x.key = $4 AND x.map_index = $5
   AND (r.run_id = $2 OR ($6 AND r.logical_date <= (SELECT logical_date FROM dag_run
                                                     WHERE dag_id = $1 AND run_id = $2)))
 ORDER BY r.logical_date DESC LIMIT 1

-- name: api_xcom_element
-- Element $6 (NULL: none) of the list run $2's task $3 pushed as key $4 (map index $5),
-- the list's length and version (its xcom row's xmin: another push, another version):
-- primary-key reads of the xcom_element rows api_xcom_set wrote. No row when the run is
-- unknown; a NULL length when the value has no element rows (not a list, not mapped over,
-- an element holds a serde-encoded object, or a dict's pairs); a NULL value when $6 is
-- past the end.
SELECT (SELECT e.idx + 1 FROM xcom_element e
         WHERE e.run_pk = r.id AND e.task_id = $3 AND e.key = $4 AND e.map_index = $5
           AND e.dict_key IS NULL
         ORDER BY e.idx DESC LIMIT 1) AS length,
       (SELECT x.xmin::text FROM xcom x
         WHERE x.run_pk = r.id AND x.task_id = $3 AND x.key = $4 AND x.map_index = $5)
           AS version,
       (SELECT e.value::text FROM xcom_element e
         WHERE e.run_pk = r.id AND e.task_id = $3 AND e.key = $4 AND e.map_index = $5
           AND e.idx = $6::int AND e.dict_key IS NULL) AS value
  FROM dag_run r
 WHERE r.dag_id = $1 AND r.run_id = $2

-- name: api_xcom_values
-- The values of run $2's (mapped) task $3, key $4 in map_index order, as stored, from
-- offset $5, at most $6 (NULL: all): an ordered scan of the xcom primary key.
SELECT x.value::text AS value
  FROM xcom x
 WHERE x.run_pk = (SELECT id FROM dag_run WHERE dag_id = $1 AND run_id = $2)
   AND x.task_id = $3 AND x.key = $4
 ORDER BY x.map_index OFFSET $5 LIMIT $6

-- name: api_xcom_values_prior
-- As api_xcom_values, with those of the DAG's earlier runs too (Airflow's slice with
-- include_prior_dates): per map_index, the latest run first.
SELECT x.value::text AS value
  FROM xcom x JOIN dag_run r ON r.id = x.run_pk
 WHERE r.dag_id = $1 AND x.task_id = $3 AND x.key = $4
   AND r.logical_date <= (SELECT logical_date FROM dag_run WHERE dag_id = $1 AND run_id = $2)
 ORDER BY x.map_index, r.logical_date DESC OFFSET $5 LIMIT $6

-- name: api_xcom_count
SELECT count(*)::int
  FROM xcom x JOIN dag_run r ON r.id = x.run_pk
 WHERE r.dag_id = $1 AND r.run_id = $2 AND x.task_id = $3 AND x.key = $4

-- name: api_xcom_set
-- POST xcoms/...: the value ($8, json text as sent) of key $7, written only by the running
-- try ($1, this worker $2) of that very instance ($3 dag, $4 run, $5 task, $6 map index),
-- with its task-map row when $9 (mapped_length) is given, as finish_ti writes them (a
-- dict's keys in insertion order). Stale xcom_element rows of the key go; an unmapped
-- task's list that downstream tasks map over ($9 given) is also split into xcom_element
-- rows, parsed once here, for api_xcom_element to read one by one -- unless an element
-- may hold a serde-encoded object (the text has a "__classname__" or old-style "__type"
-- string): its class is checked when the whole list is deserialized, in every try.
WITH me AS (
    SELECT t.run_pk, t.task_id, t.map_index
      FROM task_instance t JOIN dag_run r ON r.id = t.run_pk
     WHERE t.uuid = $1 AND t.state = 'running' AND t.worker_id = $2
       AND r.dag_id = $3 AND r.run_id = $4 AND t.task_id = $5 AND t.map_index = $6
), parsed AS MATERIALIZED (
    SELECT $8::text::json AS v
), pushed AS (
    INSERT INTO xcom (run_pk, task_id, map_index, key, value)
    SELECT me.run_pk, me.task_id, me.map_index, $7, p.v FROM me, parsed p
    ON CONFLICT (run_pk, task_id, key, map_index) DO UPDATE SET value = EXCLUDED.value,
        created_at = now()
), stale AS (
    -- the key's columns as values read once from ``me``: a primary-key range, never a
    -- scan of the run's other elements (a join with ``me`` was planned as one)
    DELETE FROM xcom_element e
     WHERE e.run_pk = (SELECT run_pk FROM me) AND e.task_id = (SELECT task_id FROM me)
       AND e.key = $7 AND e.map_index = (SELECT map_index FROM me)
    RETURNING e.idx
), listed AS MATERIALIZED (
    SELECT me.run_pk, me.task_id, me.map_index, p.v
      FROM me, parsed p
     WHERE CASE WHEN $9::int IS NOT NULL AND me.map_index = -1 AND json_typeof(p.v) = 'array'
                -- on the text (jsonb refuses a \u0000 the json type keeps); an escaped "_"
                -- could spell the keys, so it counts too
                THEN $8 !~ '"__classname__"|"__type"|\\u005[fF]'
                     AND (SELECT count(*) FROM stale) >= 0  -- old rows out before new ones in
                ELSE false END
), elements AS (
    INSERT INTO xcom_element (run_pk, task_id, key, map_index, idx, dict_key, value)
    SELECT l.run_pk, l.task_id, $7, l.map_index, a.n - 1, NULL, a.value
      FROM listed l, json_array_elements(l.v) WITH ORDINALITY AS a(value, n)
), mapped AS (
    INSERT INTO task_map (run_pk, task_id, map_index, length, keys)
    SELECT me.run_pk, me.task_id, me.map_index, $9,
           CASE WHEN json_typeof(p.v) = 'object' THEN
                (SELECT json_agg(k.key ORDER BY k.n)
                   FROM json_object_keys(p.v) WITH ORDINALITY AS k(key, n)) END
      FROM me, parsed p WHERE $9::int IS NOT NULL
    ON CONFLICT (run_pk, task_id, map_index) DO UPDATE SET length = EXCLUDED.length,
        keys = EXCLUDED.keys
)
SELECT count(*)::int FROM me

-- name: api_xcom_delete
-- DELETE xcoms/...: as api_xcom_set, only by the running try of that instance.
WITH me AS (
    SELECT t.run_pk, t.task_id, t.map_index
      FROM task_instance t JOIN dag_run r ON r.id = t.run_pk
     WHERE t.uuid = $1 AND t.state = 'running' AND t.worker_id = $2
       AND r.dag_id = $3 AND r.run_id = $4 AND t.task_id = $5 AND t.map_index = $6
), gone AS (
    DELETE FROM xcom x USING me
     WHERE x.run_pk = me.run_pk AND x.task_id = me.task_id AND x.map_index = me.map_index
       AND x.key = $7
)
SELECT count(*)::int FROM me

-- name: api_variable_get
SELECT val, is_encrypted FROM variable WHERE key = $1

-- name: api_variable_set
INSERT INTO variable (key, val, description, is_encrypted) VALUES ($1, $2, $3, true)
ON CONFLICT (key) DO UPDATE SET val = EXCLUDED.val, is_encrypted = true,
    description = coalesce(EXCLUDED.description, variable.description), updated_at = now()

-- name: api_variable_delete
DELETE FROM variable WHERE key = $1

-- name: api_variable_keys
-- Keys starting with $1 (any when NULL), $2 from offset $3, with the total count.
SELECT key, count(*) OVER ()::int AS total FROM variable
 WHERE $1::text IS NULL OR starts_with(key, $1)
 ORDER BY key LIMIT $2 OFFSET $3

-- name: api_connection_get
SELECT conn_id, conn_type, host, schema, login, password, port, extra
  FROM connection WHERE conn_id = $1

-- name: api_run_detail
SELECT dag_id, run_id, run_type, logical_date, data_interval_start, data_interval_end,
       start_date AS run_start_date, end_date AS run_end_date, created_at AS run_created_at,
       state AS run_state, conf, note, clear_number
  FROM dag_run WHERE dag_id = $1 AND run_id = $2

-- name: api_run_count
SELECT count(*)::int FROM dag_run
 WHERE dag_id = $1
   AND ($2::timestamptz[] IS NULL OR logical_date = any($2::timestamptz[]))
   AND ($3::text[] IS NULL OR run_id = any($3::text[]))
   AND ($4::text[] IS NULL OR state = any($4::text[]))

-- name: api_run_previous
SELECT dag_id, run_id, run_type, logical_date, data_interval_start, data_interval_end,
       start_date AS run_start_date, end_date AS run_end_date, created_at AS run_created_at,
       state AS run_state, conf, note, clear_number
  FROM dag_run
 WHERE dag_id = $1 AND logical_date < $2 AND ($3::text IS NULL OR state = $3)
 ORDER BY logical_date DESC LIMIT 1

-- name: api_dag
SELECT dag_id, is_paused, fileloc, serialized -> 'tags' AS tags, next_interval_start
  FROM dag WHERE dag_id = $1

-- name: api_xcom_item
-- Value $5 (from 0) of a mapped task's key in map_index order, as stored: an ordered
-- scan of the xcom primary key.
SELECT x.value::text AS value
  FROM xcom x
 WHERE x.run_pk = (SELECT id FROM dag_run WHERE dag_id = $1 AND run_id = $2)
   AND x.task_id = $3 AND x.key = $4
 ORDER BY x.map_index OFFSET $5 LIMIT 1

-- name: api_xcom_item_from_end
-- As api_xcom_item, counting from the last value ($5 = 0: the last).
SELECT x.value::text AS value
  FROM xcom x
 WHERE x.run_pk = (SELECT id FROM dag_run WHERE dag_id = $1 AND run_id = $2)
   AND x.task_id = $3 AND x.key = $4
 ORDER BY x.map_index DESC OFFSET $5 LIMIT 1

-- name: cli_variable_list
-- Every variable for `sluice variables list / export`; val is a Fernet token when is_encrypted.
SELECT key, val, description, is_encrypted FROM variable ORDER BY key

-- name: cli_variable_keys_among
SELECT key FROM variable WHERE key = any($1::text[]) ORDER BY key

-- name: cli_connection_get
SELECT conn_id, conn_type, description, host, schema, login, password, port, extra
  FROM connection WHERE conn_id = $1

-- name: cli_connection_list
SELECT conn_id, conn_type, description, host, schema, login, password, port, extra
  FROM connection ORDER BY conn_id

-- name: cli_connection_add
-- A new connection; nothing (no row returned) when the id is taken.
INSERT INTO connection (conn_id, conn_type, description, host, schema, login, password, port,
                        extra)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (conn_id) DO NOTHING
RETURNING conn_id

-- name: cli_connection_put
-- A connection, replacing one of the same id whole (`connections import --overwrite`).
INSERT INTO connection (conn_id, conn_type, description, host, schema, login, password, port,
                        extra)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (conn_id) DO UPDATE SET
    conn_type = EXCLUDED.conn_type, description = EXCLUDED.description, host = EXCLUDED.host,
    schema = EXCLUDED.schema, login = EXCLUDED.login, password = EXCLUDED.password,
    port = EXCLUDED.port, extra = EXCLUDED.extra, updated_at = now()
RETURNING conn_id

-- name: cli_connection_delete
DELETE FROM connection WHERE conn_id = $1 RETURNING conn_id

-- name: cli_variable_delete
DELETE FROM variable WHERE key = $1 RETURNING key

-- name: cli_variables_to_rotate
-- Encrypted values, locked until the rotation's transaction commits.
SELECT key, val FROM variable WHERE is_encrypted AND val IS NOT NULL ORDER BY key FOR UPDATE

-- name: cli_variable_rotated
UPDATE variable SET val = $2 WHERE key = $1

-- name: cli_connections_to_rotate
SELECT conn_id, password, extra FROM connection
 WHERE password IS NOT NULL OR extra IS NOT NULL ORDER BY conn_id FOR UPDATE

-- name: cli_connection_rotated
UPDATE connection SET password = $2, extra = $3 WHERE conn_id = $1

-- name: task_log_try
-- The instance whose log is read: its current try and state (a try is live while it is
-- the current one and not ended).
SELECT ti.id, ti.try_number, ti.state
  FROM task_instance ti JOIN dag_run r ON r.id = ti.run_pk
 WHERE r.dag_id = $1 AND r.run_id = $2 AND ti.task_id = $3 AND ti.map_index = $4

-- name: task_log_locations
-- The log servers of the workers that ran this try, in the order they started it.
SELECT w.log_url FROM task_log l JOIN worker w ON w.id = l.worker_id
 WHERE l.ti_id = $1 AND l.try_number = $2 AND w.log_url IS NOT NULL
 ORDER BY l.created_at, w.log_url

-- name: metrics_ti_states
-- Unfinished task instances by state, for /metrics: the ti_unfinished partial index
-- holds exactly these rows, so the count never scans finished history.
SELECT state, count(*)::int AS n FROM task_instance
 WHERE state IN ('scheduled', 'queued', 'running', 'up_for_retry', 'deferred')
 GROUP BY state

-- name: metrics_run_states
-- Active runs by state (the dag_run_active partial index).
SELECT state, count(*)::int AS n FROM dag_run WHERE state IN ('queued', 'running') GROUP BY state

-- name: health_ping
SELECT 1

-- name: register_worker
-- A starting worker says where it serves task logs (NULL: nowhere); a worker id used
-- again (SLUICE_WORKER_ID) takes its new URL, which serves the same logs folder.
INSERT INTO worker (id, hostname, log_url) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, log_url = excluded.log_url,
                               started_at = now()

-- ===========================================================================================
-- Cross-DAG operators (worker/execution_api/dag_runs.py): a task triggers or clears a run.

-- name: api_dag_trigger_facts
-- Whether DAG $1 can take a run from a task: it is parsed now (is_active) and its file
-- imports without error (Airflow's DagModel.is_stale / has_import_errors).
SELECT d.is_active,
       EXISTS (SELECT 1 FROM import_error e WHERE e.fileloc = d.fileloc) AS has_import_errors
  FROM dag d WHERE d.dag_id = $1

-- name: api_run_set_note
UPDATE dag_run SET note = $2 WHERE id = $1

-- ==========================================================================================
-- callbacks: DAG and task callbacks owed (callback_request), run by scheduler/callbacks.py

-- name: request_dag_callback
-- A run ended ($3 the reason Airflow gives: success, task_failure, all_tasks_deadlocked,
-- timed_out) and its DAG has the callback $2. A timed-out run names the unfinished
-- instance that started last (read before time_out_run skips them, as Airflow does); the
-- other reasons pick theirs when the callback runs, once every instance has its end state.
INSERT INTO callback_request (kind, run_pk, callback, reason, ti_id)
SELECT 'dag', $1, $2, $3,
       CASE WHEN $3 = 'timed_out' THEN
           (SELECT ti.id FROM task_instance ti
             WHERE ti.run_pk = $1
               AND (ti.state IS NULL OR ti.state IN ('scheduled', 'queued', 'running',
                                                     'up_for_retry', 'deferred'))
             ORDER BY ti.start_date DESC NULLS LAST, ti.id LIMIT 1)
       END

-- name: request_task_callback
-- A try failed outside its task process ($1 the instance, $2 its try, $3 why): its task's
-- on_retry_callback when it is up for retry, else its on_failure_callback (and the
-- matching email). Nothing when the instance is no longer that try's failure.
INSERT INTO callback_request (kind, run_pk, ti_id, try_number, callback, reason)
SELECT 'task', ti.run_pk, ti.id, ti.try_number,
       CASE ti.state WHEN 'up_for_retry' THEN 'on_retry_callback' ELSE 'on_failure_callback' END,
       $3
  FROM task_instance ti
 WHERE ti.id = $1 AND ti.try_number = $2 AND ti.state IN ('failed', 'up_for_retry')

-- name: claim_callbacks
-- Up to $1 owed callbacks nobody holds (never claimed, or their lease ran out: the
-- scheduler running them died) and claimed fewer than $3 times, oldest first, leased for
-- $2 seconds. With each, what its context needs: the DAG's file, the run, and the instance (a DAG callback's own choice
-- when the request names none: the last failed or succeeded one by end date, as Airflow's
-- DagRun.update_state; for a deadlock the first unfinished one).
WITH claimed AS (
    UPDATE callback_request c
       SET attempts = attempts + 1, lease_until = now() + make_interval(secs => $2)
     WHERE c.id IN (SELECT id FROM callback_request
                     WHERE (lease_until IS NULL OR lease_until < now()) AND attempts < $3
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING c.*
)
SELECT c.id, c.kind, c.callback, c.reason, c.attempts, c.try_number AS request_try,
       d.fileloc, r.dag_id, r.run_id, r.run_type, r.logical_date, r.data_interval_start,
       r.data_interval_end, r.start_date AS run_start_date, r.end_date AS run_end_date,
       r.created_at AS run_created_at, r.state AS run_state, r.conf, r.note, r.clear_number,
       ti.uuid, ti.task_id, ti.map_index, ti.try_number, ti.max_tries, ti.state,
       ti.start_date, ti.end_date, ti.hostname, ti.queue, ti.label, ti.error
  FROM claimed c
  JOIN dag_run r ON r.id = c.run_pk
  LEFT JOIN dag d ON d.dag_id = r.dag_id
  LEFT JOIN LATERAL (
      SELECT * FROM task_instance t
       WHERE t.id = c.ti_id
          OR (c.ti_id IS NULL AND c.kind = 'dag' AND t.run_pk = c.run_pk AND (
                 (c.reason = 'task_failure' AND t.state = 'failed')
              OR (c.reason = 'success' AND t.state = 'success')
              OR (c.reason = 'all_tasks_deadlocked'
                  AND (t.state IS NULL OR t.state IN ('scheduled', 'up_for_retry')))))
       ORDER BY CASE WHEN c.reason = 'all_tasks_deadlocked' THEN NULL ELSE t.end_date END
                    DESC NULLS LAST, t.id
       LIMIT 1
  ) ti ON true
 ORDER BY c.id

-- name: callback_done
-- A claimed callback ran (or failed for good): it is owed no more.
DELETE FROM callback_request WHERE id = $1

-- name: callback_given_up
-- Callbacks claimed $1 times already whose lease ran out again (each claim's runner died
-- with it): dropped, returned to be logged.
DELETE FROM callback_request
 WHERE attempts >= $1 AND lease_until < now()
RETURNING id, kind, callback, run_pk, ti_id

-- ===========================================================================================
-- Params, pausing and pools (shared/params.py, shared/pools_cli.py, `sluice dags pause`).

-- name: dag_params
-- A DAG's param defaults and schemas, as the scheduler last stored them: what a new
-- run's conf is checked against (shared/params.py).
SELECT serialized->'params' AS params, serialized->'param_schemas' AS param_schemas
  FROM dag WHERE dag_id = $1

-- name: set_dag_paused
-- Pause ($2 true) or unpause active DAG $1; what it was before (no row: no such DAG).
UPDATE dag d SET is_paused = $2
  FROM (SELECT dag_id, is_paused FROM dag WHERE dag_id = $1 AND is_active FOR UPDATE) old
 WHERE d.dag_id = old.dag_id
RETURNING old.is_paused AS was_paused

-- name: dag_paused
SELECT is_paused FROM dag WHERE dag_id = $1 AND is_active

-- name: active_runs_of_dags
-- The queued and running runs of DAGs $1: a DAG unpaused has them scheduled again.
SELECT id FROM dag_run WHERE dag_id = any($1::text[]) AND state IN ('queued', 'running')

-- name: pool_rows
-- Pools ($1: one by name, or NULL: all) with the slots their queued and running
-- instances hold, by name.
SELECT p.name, p.slots, p.description,
       coalesce(sum(t.pool_slots) FILTER (WHERE t.state = 'running'), 0)::int AS running_slots,
       coalesce(sum(t.pool_slots) FILTER (WHERE t.state = 'queued'), 0)::int AS queued_slots
  FROM pool p LEFT JOIN task_instance t ON t.pool = p.name AND t.state IN ('queued', 'running')
 WHERE $1::text IS NULL OR p.name = $1
 GROUP BY p.name, p.slots, p.description
 ORDER BY p.name

-- name: upsert_pool
-- Create pool $1 or set its slots; a NULL description keeps the one it has. True when created.
INSERT INTO pool (name, slots, description) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET slots = EXCLUDED.slots,
                                 description = coalesce($3, pool.description)
RETURNING (xmax = 0) AS created

-- name: lock_pool
SELECT name FROM pool WHERE name = $1 FOR UPDATE

-- name: pool_holders
-- Queued and running instances in pool $1 (at most 5 named): a pool they hold is not deleted.
SELECT r.dag_id, r.run_id, t.task_id, t.map_index, t.state, count(*) OVER () AS total
  FROM task_instance t JOIN dag_run r ON r.id = t.run_pk
 WHERE t.pool = $1 AND t.state IN ('queued', 'running')
 ORDER BY r.dag_id, r.run_id, t.task_id, t.map_index
 LIMIT 5

-- name: delete_pool_row
DELETE FROM pool WHERE name = $1

-- name: known_pools
-- Which of the pools $1 exist (a DAG naming another gets Airflow's DAG warning).
SELECT name FROM pool WHERE name = any($1::text[])

-- ---------------------------------------------------------------------------
-- depends_on_past / wait_for_downstream (scheduler/past.py)

-- name: past_previous_run
-- The run before run $1 of its DAG by logical date (with catchup $2, manual runs
-- passed over, as Airflow) and, for the tasks $3, its instances and how many are
-- not success/skipped: one row per task it has (task_id NULL when it has none of
-- them); no row when there is no previous run.
WITH prev AS (
    SELECT p.id, p.logical_date
      FROM dag_run r
      JOIN LATERAL (
           SELECT p.id, p.logical_date FROM dag_run p
            WHERE p.dag_id = r.dag_id AND p.logical_date < r.logical_date
              AND NOT ($2::bool AND p.run_type = 'manual')
            ORDER BY p.logical_date DESC LIMIT 1) p ON true
     WHERE r.id = $1
)
SELECT prev.logical_date, t.task_id, count(t.id)::int AS n,
       (count(t.id) FILTER (WHERE t.state IS NULL
                             OR t.state NOT IN ('success', 'skipped')))::int AS unsettled
  FROM prev LEFT JOIN task_instance t ON t.run_pk = prev.id AND t.task_id = any($3::text[])
 GROUP BY prev.logical_date, t.task_id

-- name: past_tasks_run_before
-- Which of tasks $3 have an instance in a run of DAG $1 dated before $2.
SELECT w.task_id FROM unnest($3::text[]) AS w(task_id)
 WHERE EXISTS (SELECT 1 FROM dag_run r JOIN task_instance t ON t.run_pk = r.id
                WHERE r.dag_id = $1 AND r.logical_date < $2 AND t.task_id = w.task_id)

-- name: past_next_runs
-- Active runs of DAG $1 dated after $2, earliest first (at most $3): those a
-- run's settled past may let go on.
SELECT id FROM dag_run
 WHERE dag_id = $1 AND logical_date > $2 AND state IN ('queued', 'running')
 ORDER BY logical_date LIMIT $3

-- name: callback_connections
-- Every connection (secret columns still encrypted) for the callbacks' children: a
-- callback reads connections as a task does (smtp_default for email_on_failure).
SELECT conn_id, conn_type, host, schema, login, password, port, extra
  FROM connection ORDER BY conn_id LIMIT 1000

-- name: callback_variables
-- Every variable for the callbacks' children, as callback_connections.
SELECT key, val, is_encrypted FROM variable ORDER BY key LIMIT 1000

-- ===== assets: asset events, the asset-scheduled DAGs' queue, asset-triggered runs =====

-- name: asset_dag_conditions
-- Every active DAG's asset condition (NULL: not asset-scheduled) and the assets and aliases
-- it names, as the walk stored them.
SELECT dag_id, (serialized -> 'asset_condition')::text AS condition,
       (serialized -> 'assets')::text AS assets, (serialized -> 'asset_aliases')::text AS aliases
  FROM dag WHERE is_active ORDER BY dag_id

-- name: asset_upsert_declared
-- Assets ($1 names, $2 uris, $3 groups, $4 extras as JSON text) and aliases ($5) the DAGs
-- name: created when new; a declared asset's group and extra are the last parse's.
WITH assets AS (
    INSERT INTO asset (name, uri, "group", extra)
    SELECT n, u, g, e::json FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS x(n, u, g, e)
    ON CONFLICT (name, uri) DO UPDATE SET "group" = EXCLUDED."group", extra = EXCLUDED.extra
    RETURNING 1
)
INSERT INTO asset_alias (name) SELECT DISTINCT unnest($5::text[])
ON CONFLICT (name) DO NOTHING

-- name: asset_sync_references
-- The DAGs' schedule references are exactly ($1 dag, $2 kind, $3 name, $4 uri); a kept
-- reference keeps its created_at. Queued events of a DAG no longer asset-scheduled go.
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS w(dag_id, kind, name, uri)
), gone AS (
    DELETE FROM dag_schedule_asset s
     WHERE NOT EXISTS (SELECT 1 FROM wanted w WHERE (w.dag_id, w.kind, w.name, w.uri)
                                                  = (s.dag_id, s.kind, s.name, s.uri))
), stale AS (
    DELETE FROM asset_dag_run_queue q
     WHERE NOT EXISTS (SELECT 1 FROM wanted w WHERE w.dag_id = q.target_dag_id)
)
INSERT INTO dag_schedule_asset (dag_id, kind, name, uri)
SELECT w.dag_id, w.kind, w.name, w.uri FROM wanted w JOIN dag d ON d.dag_id = w.dag_id
ON CONFLICT DO NOTHING

-- name: asset_ti_source
-- The producing instance of try $1: the source of the asset events its success emits.
SELECT r.dag_id, t.task_id, r.run_id, t.map_index
  FROM task_instance t JOIN dag_run r ON r.id = t.run_pk WHERE t.uuid = $1

-- name: asset_resolve_refs
-- The assets names $1 and uris $2 refer to (the first by id when several share one).
SELECT DISTINCT ON (key) key, kind, name, uri FROM (
    SELECT a.name AS key, 'name' AS kind, a.name, a.uri, a.id FROM asset a WHERE a.name = any($1::text[])
    UNION ALL
    SELECT a.uri, 'uri', a.name, a.uri, a.id FROM asset a WHERE a.uri = any($2::text[])
) x ORDER BY key, id

-- name: asset_register_event
-- One asset event for asset ($1 name, $2 uri) with extra $3 (JSON text), from task $5 of
-- run $6 of DAG $4 at map index $7, emitted through aliases $8. An asset first named at run
-- time (through an alias, $9 true) is created with extra $10. Every active, unpaused DAG
-- scheduled on the asset (by key, name or uri reference) or on one of the aliases gets the
-- asset queued, as Airflow's asset_dag_run_queue, dated by its latest event: the next run
-- consumes every event up to then (Airflow keeps the first date, and an event that came
-- after it waits for another one). No row: the asset is unknown.
WITH created AS (
    INSERT INTO asset (name, uri, extra) SELECT $1, $2, coalesce($10::text, '{}')::json WHERE $9
    ON CONFLICT (name, uri) DO NOTHING RETURNING id
), target AS (
    SELECT id FROM created UNION ALL SELECT id FROM asset WHERE name = $1 AND uri = $2 LIMIT 1
), aliases AS (
    INSERT INTO asset_alias (name) SELECT DISTINCT unnest($8::text[])
    ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id
), event AS (
    INSERT INTO asset_event (asset_id, extra, source_dag_id, source_task_id, source_run_id,
                             source_map_index)
    SELECT id, $3::text::json, $4, $5, $6, $7 FROM target RETURNING id, asset_id
), resolved AS (
    INSERT INTO asset_alias_asset (alias_id, asset_id)
    SELECT aliases.id, event.asset_id FROM aliases, event ON CONFLICT DO NOTHING
), through AS (
    INSERT INTO asset_event_alias (event_id, alias_id) SELECT event.id, aliases.id FROM aliases, event
), queued AS (
    INSERT INTO asset_dag_run_queue (asset_id, target_dag_id)
    SELECT DISTINCT event.asset_id, s.dag_id
      FROM event, dag_schedule_asset s JOIN dag d ON d.dag_id = s.dag_id
     WHERE d.is_active AND NOT d.is_paused
       AND ((s.kind = 'asset' AND s.name = $1 AND s.uri = $2)
            OR (s.kind = 'name_ref' AND s.name = $1) OR (s.kind = 'uri_ref' AND s.uri = $2)
            OR (s.kind = 'alias' AND s.name = any($8::text[])))
    ON CONFLICT (asset_id, target_dag_id) DO UPDATE SET created_at = EXCLUDED.created_at
    RETURNING target_dag_id
)
SELECT event.id, (SELECT count(*) FROM queued)::int AS queued FROM event

-- name: asset_queued_dags
-- The active, unpaused DAGs with queued assets: their condition, the queued assets, and
-- whether their queued and running runs leave room under max_active_runs.
SELECT q.target_dag_id AS dag_id, (d.serialized -> 'asset_condition')::text AS condition,
       array_agg(a.name) AS names, array_agg(a.uri) AS uris,
       coalesce((d.serialized ->> 'catchup')::boolean, false) AS catchup,
       (SELECT count(*) FROM dag_run r WHERE r.dag_id = d.dag_id
           AND r.state IN ('queued', 'running'))
         < coalesce((d.serialized ->> 'max_active_runs')::int, 16) AS has_room
  FROM asset_dag_run_queue q JOIN asset a ON a.id = q.asset_id
  JOIN dag d ON d.dag_id = q.target_dag_id
 WHERE d.is_active AND NOT d.is_paused
 GROUP BY q.target_dag_id, d.dag_id

-- name: asset_alias_members
-- The assets each of aliases $1 resolved to so far.
SELECT al.name AS alias, a.name, a.uri
  FROM asset_alias al JOIN asset_alias_asset m ON m.alias_id = al.id JOIN asset a ON a.id = m.asset_id
 WHERE al.name = any($1::text[])

-- name: asset_lock_queue
-- The queue rows of DAG $1 this scheduler takes (another scheduler's are skipped).
SELECT asset_id, created_at FROM asset_dag_run_queue WHERE target_dag_id = $1
 ORDER BY created_at DESC FOR UPDATE SKIP LOCKED

-- name: asset_create_run
-- The asset-triggered run of DAG $1 ($2 run_id) due at $3, consuming every event of an asset
-- or alias the DAG is scheduled on since its last asset-triggered run (else since it was
-- first scheduled on them, $4 catchup false) up to $3; then the queue rows $5 it took go.
WITH run AS (
    INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state, conf)
    VALUES ($1, $2, 'asset_triggered', $3, 'queued', '{}')
    ON CONFLICT DO NOTHING RETURNING id
), floor AS (
    SELECT coalesce(
        (SELECT max(logical_date) FROM dag_run WHERE dag_id = $1 AND run_type = 'asset_triggered'
            AND logical_date < $3),
        CASE WHEN NOT $4 THEN (SELECT min(created_at) FROM dag_schedule_asset WHERE dag_id = $1) END,
        '-infinity'::timestamptz) AS after
), events AS (
    SELECT DISTINCT e.id FROM asset_event e JOIN asset a ON a.id = e.asset_id, floor
     WHERE e.timestamp <= $3 AND e.timestamp > floor.after
       AND EXISTS (
           SELECT 1 FROM dag_schedule_asset s
            WHERE s.dag_id = $1
              AND ((s.kind = 'asset' AND s.name = a.name AND s.uri = a.uri)
                   OR (s.kind = 'name_ref' AND s.name = a.name)
                   OR (s.kind = 'uri_ref' AND s.uri = a.uri)
                   OR (s.kind = 'alias' AND EXISTS (
                        SELECT 1 FROM asset_event_alias ea JOIN asset_alias al ON al.id = ea.alias_id
                         WHERE ea.event_id = e.id AND al.name = s.name))))
), consumed AS (
    INSERT INTO dag_run_asset_event (run_pk, event_id) SELECT run.id, events.id FROM run, events
    RETURNING event_id
), taken AS (
    DELETE FROM asset_dag_run_queue WHERE target_dag_id = $1 AND asset_id = any($5::bigint[])
       AND EXISTS (SELECT 1 FROM run)
)
SELECT run.id, (SELECT count(*) FROM consumed)::int AS consumed FROM run

-- name: asset_run_events
-- The events run ($1 dag, $2 run_id) consumed, oldest first, each with its asset and the
-- aliases it came through (the Execution API's consumed_asset_events).
SELECT a.name, a.uri, a.extra::text AS asset_extra, e.extra::text AS extra, e.source_dag_id,
       e.source_task_id, e.source_run_id, e.source_map_index, e.timestamp,
       ARRAY(SELECT al.name FROM asset_event_alias ea JOIN asset_alias al ON al.id = ea.alias_id
              WHERE ea.event_id = e.id ORDER BY al.name) AS aliases
  FROM dag_run r JOIN dag_run_asset_event c ON c.run_pk = r.id
  JOIN asset_event e ON e.id = c.event_id JOIN asset a ON a.id = e.asset_id
 WHERE r.dag_id = $1 AND r.run_id = $2
 ORDER BY e.timestamp, e.id

-- name: asset_by
-- The asset named $1 (by name) or with uri $2 (by uri): the first by id.
SELECT name, uri, "group", extra::text AS extra FROM asset
 WHERE ($1::text IS NULL OR name = $1) AND ($2::text IS NULL OR uri = $2)
 ORDER BY id LIMIT 1

-- name: asset_by_alias
SELECT a.name, a.uri, a."group", a.extra::text AS extra
  FROM asset_alias al JOIN asset_alias_asset m ON m.alias_id = al.id JOIN asset a ON a.id = m.asset_id
 WHERE al.name = $1 ORDER BY a.id

-- name: asset_events_by
-- Events of the asset ($1 name and/or $2 uri) or, $3 set, emitted through alias $3; from $4,
-- up to $5, oldest first unless $6 is false, at most $7; with the runs that consumed each.
SELECT e.id, e.timestamp, e.extra::text AS extra, e.source_dag_id, e.source_task_id,
       e.source_run_id, e.source_map_index, a.name, a.uri, a."group", a.extra::text AS asset_extra,
       (SELECT coalesce(json_agg(json_build_object(
                   'run_id', r.run_id, 'dag_id', r.dag_id, 'partition_key', NULL,
                   'logical_date', CASE WHEN r.run_type <> 'asset_triggered' THEN r.logical_date END,
                   'start_date', coalesce(r.start_date, r.created_at), 'end_date', r.end_date,
                   'state', r.state, 'data_interval_start', r.data_interval_start,
                   'data_interval_end', r.data_interval_end) ORDER BY r.id), '[]')::text
          FROM dag_run_asset_event c JOIN dag_run r ON r.id = c.run_pk
         WHERE c.event_id = e.id) AS created_dagruns
  FROM asset_event e JOIN asset a ON a.id = e.asset_id
 WHERE (($3::text IS NULL AND ($1::text IS NULL OR a.name = $1) AND ($2::text IS NULL OR a.uri = $2))
        OR ($3::text IS NOT NULL AND EXISTS (
              SELECT 1 FROM asset_event_alias ea JOIN asset_alias al ON al.id = ea.alias_id
               WHERE ea.event_id = e.id AND al.name = $3)))
   AND ($4::timestamptz IS NULL OR e.timestamp >= $4)
   AND ($5::timestamptz IS NULL OR e.timestamp <= $5)
 ORDER BY CASE WHEN $6 THEN e.timestamp END ASC, CASE WHEN NOT $6 THEN e.timestamp END DESC, e.id
 LIMIT $7

-- name: asset_inactive_of_ti
-- The assets (name, uri) the inlets and outlets of try $1's task declare that Sluice has
-- no record of (Airflow's inactive assets).
SELECT DISTINCT l -> 'asset' ->> 'name' AS name, l -> 'asset' ->> 'uri' AS uri
  FROM task_instance t JOIN dag_run r ON r.id = t.run_pk JOIN dag d ON d.dag_id = r.dag_id
 CROSS JOIN LATERAL json_array_elements(d.serialized -> 'tasks') AS s
 CROSS JOIN LATERAL (SELECT json_array_elements(coalesce(s -> 'inlets', '[]'))
                     UNION ALL SELECT json_array_elements(coalesce(s -> 'outlets', '[]'))) AS x(l)
 WHERE t.uuid = $1 AND s ->> 'task_id' = t.task_id AND l -> 'asset' IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM asset a WHERE a.name = l -> 'asset' ->> 'name'
                                          AND a.uri = l -> 'asset' ->> 'uri')

-- ---------------------------------------------------------------------------
-- Timetables: creating scheduled runs (scheduler.runs.create_due_runs)

-- name: active_run_count
-- The DAG's queued and running runs, of every type: Airflow creates no scheduled run
-- while they reach max_active_runs.
SELECT count(*) FROM dag_run WHERE dag_id = $1 AND state IN ('queued', 'running')

-- name: set_next_dagrun
-- Airflow's DagModel.next_dagrun / next_dagrun_data_interval (run_after is the interval's
-- end for every timetable Sluice runs); NULLs when the timetable schedules no more runs.
UPDATE dag SET next_interval_start = $2, next_interval_end = $3
 WHERE dag_id = $1 AND (next_interval_start, next_interval_end) IS DISTINCT FROM ($2, $3)

-- ===========================================================================================
-- Task operations (shared/clear.py): tasks clear, mark-success / mark-failed, runs cancel.
-- Each runs in the transaction that holds the run (lock_run_for_clear) and its instances.
-- ===========================================================================================

-- name: lock_run_instances
-- A run's instances, locked in id order after its run row (the scheduler's order too).
SELECT id, task_id, map_index, state, try_number FROM task_instance
 WHERE run_pk = $1 ORDER BY id FOR UPDATE

-- name: delete_triggers_of_tis
-- The triggers of instances cleared or set to a state: the triggerer drops them.
DELETE FROM trigger WHERE ti_id = any($1::bigint[])

-- name: delete_task_maps_of_tis
DELETE FROM task_map m USING task_instance t
 WHERE t.id = any($1::bigint[])
   AND m.run_pk = t.run_pk AND m.task_id = t.task_id AND m.map_index = t.map_index

-- name: set_ti_states
-- "Mark as" and "mark run failed": each instance $1 to state $2, as Airflow's
-- TaskInstance.set_state (start and end dates kept when set). A try still running is no
-- longer this worker's: its heartbeat finds that and stops it.
UPDATE task_instance t
   SET state = v.state, start_date = coalesce(t.start_date, now()),
       end_date = coalesce(t.end_date, now()), worker_id = NULL, next_method = NULL,
       next_kwargs = NULL, trigger_id = NULL, trigger_timeout = NULL, next_retry_at = NULL
  FROM unnest($1::bigint[], $2::text[]) AS v(id, state)
 WHERE t.id = v.id

-- name: reopen_run
-- A finished run whose instances were marked goes back to the scheduler, which decides
-- its state again (its instances are all there: no start needed).
UPDATE dag_run SET state = 'running', end_date = NULL, note = NULL
 WHERE id = $1 AND state IN ('success', 'failed')

-- name: count_clear
-- A clear of some instances of a run still active: counted as Airflow counts clears.
UPDATE dag_run SET clear_number = clear_number + 1 WHERE id = $1

-- name: cancel_run
-- `runs cancel`: the run ends failed, as Airflow's "mark run failed".
UPDATE dag_run SET state = 'failed', start_date = coalesce(start_date, now()), end_date = now()
 WHERE id = $1 AND state IN ('queued', 'running')

-- (end of task operations)

-- ===========================================================================================
-- sluice dags test (shared/dag_test.py): one run in one process, no daemons.
-- ===========================================================================================

-- name: dag_test_replace_run
-- `dags test --logical-date`: a manual run of the DAG at that date is replaced, as
-- `airflow dags test` replaces it (its instances, XComs and history go with it).
DELETE FROM dag_run WHERE dag_id = $1 AND logical_date = $2 AND run_type = 'manual'

-- name: dag_test_queued
SELECT id, try_number FROM task_instance WHERE run_pk = $1 AND state = 'queued' ORDER BY id

-- name: dag_test_triggers
SELECT trigger_id FROM task_instance
 WHERE run_pk = $1 AND state = 'deferred' AND trigger_id IS NOT NULL ORDER BY id

-- (end of dags test)

-- ===== assets: AssetWatcher triggers =====

-- name: asset_dag_watchers
-- The watchers of the assets the active, asset-scheduled DAGs are scheduled on.
SELECT dag_id, (serialized -> 'asset_watchers')::text AS watchers
  FROM dag WHERE is_active AND json_typeof(serialized -> 'asset_watchers') = 'array'

-- name: asset_drop_watchers
-- Watchers not among ($1 asset name, $2 uri, $3 watcher name, $4 classpath, $5 kwargs as
-- JSON text) go: one that changed goes too, and comes back as a new row (asset_add_watchers);
-- the triggerer running a gone row stops it.
DELETE FROM asset_watcher x USING asset a
 WHERE a.id = x.asset_id
   AND NOT EXISTS (SELECT 1 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                                 AS w(asset_name, asset_uri, name, classpath, kwargs)
                    WHERE (w.asset_name, w.asset_uri, w.name, w.classpath, w.kwargs)
                        = (a.name, a.uri, x.name, x.classpath, x.kwargs::text))

-- name: asset_add_watchers
INSERT INTO asset_watcher (asset_id, name, classpath, kwargs)
SELECT a.id, w.name, w.classpath, w.kwargs::json
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
       AS w(asset_name, asset_uri, name, classpath, kwargs)
  JOIN asset a ON a.name = w.asset_name AND a.uri = w.asset_uri
ON CONFLICT (asset_id, name) DO NOTHING

-- name: asset_watchers_claim
-- Triggerer $1 takes up to $2 watchers nobody runs (or whose triggerer is gone).
WITH free AS (
    SELECT x.id FROM asset_watcher x
     WHERE x.triggerer_id IS NULL
        OR NOT EXISTS (SELECT 1 FROM triggerer tr WHERE tr.id = x.triggerer_id)
     ORDER BY x.id LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE asset_watcher x SET triggerer_id = $1 FROM free WHERE x.id = free.id
RETURNING x.id

-- name: asset_watchers_owned
-- The watchers triggerer $1 runs: each with its trigger and asset.
SELECT x.id, x.name, x.classpath, x.kwargs::text AS kwargs, a.name AS asset_name,
       a.uri AS asset_uri
  FROM asset_watcher x JOIN asset a ON a.id = x.asset_id
 WHERE x.triggerer_id = $1

-- name: asset_watchers_release
UPDATE asset_watcher SET triggerer_id = NULL WHERE triggerer_id = $1

-- ---------------------------------------------------------------------------------------
-- Task state store (worker/execution_api/task_state_store.py): keyed by the instance the
-- try ($1, its uuid) belongs to; a uuid matching no instance answers nothing.

-- name: api_store_get
SELECT s.value FROM task_state_store s
JOIN task_instance ti ON (ti.run_pk, ti.task_id, ti.map_index) = (s.run_pk, s.task_id, s.map_index)
WHERE ti.uuid = $1 AND s.key = $2

-- name: api_store_set
INSERT INTO task_state_store (run_pk, task_id, map_index, key, value, expires_at)
SELECT run_pk, task_id, map_index, $2, $3, $4 FROM task_instance WHERE uuid = $1
ON CONFLICT (run_pk, task_id, map_index, key)
DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, updated_at = now()
RETURNING 1

-- name: api_store_delete
DELETE FROM task_state_store s USING task_instance ti
WHERE ti.uuid = $1 AND (ti.run_pk, ti.task_id, ti.map_index) = (s.run_pk, s.task_id, s.map_index)
  AND ($2::text IS NULL OR s.key = $2)

-- name: paused_dag_ids
-- The active DAGs paused now (the repair sweep compares them with what it scheduled by).
SELECT dag_id FROM dag WHERE is_active AND is_paused

-- name: ended_tries
-- Of these tries (their uuids), those this installation knows that ended over $2 seconds
-- ago (or, not ended, were last heartbeated then): a pod still holding one was orphaned by
-- its worker's death (worker.kubernetes deletes it). Unknown uuids are another
-- installation's and are left alone.
SELECT uuid::text FROM task_instance
 WHERE uuid = any($1::uuid[]) AND state <> 'running'
   AND COALESCE(end_date, heartbeat_at) < now() - make_interval(secs => $2)
UNION
SELECT uuid::text FROM task_instance_history
 WHERE uuid = any($1::uuid[])
   AND COALESCE(end_date, start_date) < now() - make_interval(secs => $2)
