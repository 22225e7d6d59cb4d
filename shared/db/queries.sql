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
-- committed a moment earlier (read_runs).
SELECT r.id, r.dag_id, r.state, r.logical_date, r.run_id, r.conf, r.clear_number, r.start_date
  FROM dag_run r
 WHERE r.id = any($1::bigint[]) AND r.state IN ('queued', 'running')
 ORDER BY r.id
   FOR UPDATE SKIP LOCKED

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
--   'count' rows: each run's instance counts per (task, state);
--   'ti' rows:    its schedulable instances in map_index order; the (run, task)
--                 pairs in $2/$3 at most $4 at a time (ti_schedulable_window), so a
--                 pass over a task of 10,000 waiting instances reads a window of
--                 them, not the whole task; other tasks whole;
--   'busy' rows:  when $5, the slots queued and running instances hold, per
--                 (pool, DAG, task, run), across all runs.
WITH counts AS (
    SELECT run_pk, task_id, state, count(*)::int AS n FROM task_instance
     WHERE run_pk = any($1::bigint[]) GROUP BY run_pk, task_id, state
), waiting AS (
    SELECT c.run_pk, c.task_id, sum(c.n)::int AS n FROM counts c
     WHERE c.state IS NULL OR c.state IN ('scheduled', 'up_for_retry')
     GROUP BY c.run_pk, c.task_id
), windowed AS (
    SELECT run_pk, task_id FROM unnest($2::bigint[], $3::text[]) AS p(run_pk, task_id)
)
SELECT 'count' AS kind, c.run_pk, c.task_id, c.state, c.n, NULL::bigint AS id,
       NULL::int AS map_index, NULL::int AS try_number, NULL::timestamptz AS next_retry_at,
       NULL::text AS pool, NULL::text AS dag_id, NULL::int AS slots
  FROM counts c
 UNION ALL
SELECT 'ti', ti.run_pk, ti.task_id, ti.state, NULL, ti.id, ti.map_index, ti.try_number,
       ti.next_retry_at, NULL, NULL, NULL
  FROM waiting w
 CROSS JOIN LATERAL (
       SELECT t.id, t.run_pk, t.task_id, t.map_index, t.state, t.try_number, t.next_retry_at
         FROM task_instance t
        WHERE t.run_pk = w.run_pk AND t.task_id = w.task_id
          AND (t.state IS NULL OR t.state IN ('scheduled', 'up_for_retry'))
        ORDER BY t.map_index
        LIMIT CASE WHEN EXISTS (SELECT 1 FROM windowed x
                                 WHERE x.run_pk = w.run_pk AND x.task_id = w.task_id)
                   THEN least(w.n, $4::int) ELSE w.n END) ti
 UNION ALL
SELECT 'busy', b.run_pk, b.task_id, NULL, count(*)::int, NULL, NULL, NULL, NULL,
       b.pool, r.dag_id, sum(b.pool_slots)::int
  FROM task_instance b JOIN dag_run r ON r.id = b.run_pk
 WHERE $5::bool AND b.state IN ('queued', 'running')
 GROUP BY b.pool, b.task_id, b.run_pk, r.dag_id

-- name: pools
SELECT name, slots FROM pool

-- name: end_tis
-- Instances the pass ends without running them. An EmptyOperator set straight to
-- success still counts a try, as in Airflow; skipped and upstream_failed ones do not.
UPDATE task_instance ti
   SET state = v.state, end_date = now(), start_date = coalesce(ti.start_date, now()),
       try_number = ti.try_number + (v.state = 'success')::int
  FROM unnest($1::bigint[], $2::text[]) AS v(id, state)
 WHERE ti.id = v.id AND ti.state IS NULL

-- name: queue_tis
UPDATE task_instance
   SET state = 'queued', queued_at = now(),
       try_number = CASE WHEN state = 'scheduled' THEN try_number ELSE try_number + 1 END,
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
-- xcom_element rows go with them, ON DELETE CASCADE), and return what the runner
-- needs of each instance, its run and its DAG file.
WITH claimed AS (
    UPDATE task_instance ti
       SET state = 'running', worker_id = $3, heartbeat_at = now(),
           start_date = CASE WHEN ti.next_method IS NULL OR ti.start_date IS NULL THEN now()
                             ELSE ti.start_date END,
           first_start_date = coalesce(ti.first_start_date, now()), end_date = NULL
      FROM unnest($1::bigint[], $2::int[]) AS c(id, try_number)
     WHERE ti.id = c.id AND ti.try_number = c.try_number AND ti.state = 'queued'
    RETURNING ti.id, ti.run_pk, ti.task_id, ti.map_index, ti.try_number, ti.max_tries,
              ti.next_method, ti.next_kwargs, ti.start_date, ti.first_start_date
), cleared AS (
    DELETE FROM xcom x USING claimed c
     WHERE c.next_method IS NULL
       AND x.run_pk = c.run_pk AND x.task_id = c.task_id AND x.map_index = c.map_index
)
SELECT c.*, r.dag_id, r.run_id, r.run_type, r.logical_date, r.data_interval_start,
       r.data_interval_end, r.conf, r.start_date AS run_start_date, r.clear_number, d.fileloc
  FROM claimed c
  JOIN dag_run r ON r.id = c.run_pk
  JOIN dag d ON d.dag_id = r.dag_id

-- name: heartbeat_tis
-- The instances still this worker's running tries; the others were taken away.
UPDATE task_instance SET heartbeat_at = now()
 WHERE id = any($1::bigint[]) AND state = 'running' AND worker_id = $2
RETURNING id

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
       ti.run_pk
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
)
UPDATE task_instance t
   SET state = 'deferred', try_number = t.try_number + 1, trigger_id = trig.id,
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
UPDATE task_instance
   SET state = 'failed', error = $2, try_number = try_number + 1, start_date = now(),
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
-- Cleared: no state, retries renewed; the try count goes on from where it was.
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
