-- The api-server's statements (Airflow's REST API /api/v2 over Sluice's tables).
-- A NULL parameter is a filter not given. Patterns ($n::text[]) are ILIKE patterns
-- already wrapped in '%'; prefixes are matched with starts_with. Totals come with
-- each page (count(*) OVER ()), so a page and its total are one consistent read.

-- name: dags
-- A page of DAGs: $1 patterns, $2 prefixes, $3 paused, $4 only active, $5 tags (any),
-- $6 tags (all), $7 has import errors, $8 last run state, $9 order, $10 limit, $11 offset.
WITH found AS (
    SELECT d.dag_id, d.fileloc, d.serialized, d.is_paused, d.is_active,
           d.next_interval_start, d.next_interval_end, d.updated_at,
           EXISTS (SELECT 1 FROM import_error e WHERE e.fileloc = d.fileloc) AS has_import_errors,
           (SELECT r.state FROM dag_run r WHERE r.dag_id = d.dag_id
             ORDER BY r.logical_date DESC LIMIT 1) AS last_run_state,
           (SELECT count(*) FROM dag_run r WHERE r.dag_id = d.dag_id
               AND r.state IN ('queued', 'running'))::int AS active_runs
      FROM dag d
     WHERE ($1::text[] IS NULL OR d.dag_id ILIKE any($1::text[]))
       AND ($2::text[] IS NULL OR EXISTS (SELECT 1 FROM unnest($2::text[]) p
                                           WHERE starts_with(d.dag_id, p)))
       AND ($3::boolean IS NULL OR d.is_paused = $3)
       AND (NOT $4::boolean OR d.is_active)
       AND ($5::text[] IS NULL OR EXISTS (
             SELECT 1 FROM json_array_elements_text(d.serialized -> 'tags') t
              WHERE t = any($5::text[])))
       AND ($6::text[] IS NULL OR NOT EXISTS (
             SELECT 1 FROM unnest($6::text[]) w
              WHERE w NOT IN (SELECT json_array_elements_text(d.serialized -> 'tags'))))
)
SELECT *, count(*) OVER ()::int AS total FROM found
 WHERE ($7::boolean IS NULL OR has_import_errors = $7)
   AND ($8::text IS NULL OR last_run_state = $8)
 ORDER BY CASE WHEN $9 = 'next_dagrun' THEN next_interval_start END ASC NULLS LAST,
          CASE WHEN $9 = '-next_dagrun' THEN next_interval_start END DESC NULLS LAST,
          CASE WHEN $9 = '-dag_id' THEN dag_id END DESC,
          dag_id
 LIMIT $10 OFFSET $11

-- name: dag
SELECT d.dag_id, d.fileloc, d.serialized, d.is_paused, d.is_active,
       d.next_interval_start, d.next_interval_end, d.updated_at,
       EXISTS (SELECT 1 FROM import_error e WHERE e.fileloc = d.fileloc) AS has_import_errors,
       (SELECT count(*) FROM dag_run r WHERE r.dag_id = d.dag_id
           AND r.state IN ('queued', 'running'))::int AS active_runs
  FROM dag d WHERE d.dag_id = $1

-- name: pause_dag
UPDATE dag SET is_paused = $2 WHERE dag_id = $1 RETURNING dag_id

-- name: dag_tasks
-- The task specs of DAGs (for operator names and relatives), by dag_id.
SELECT dag_id, serialized -> 'tasks' AS tasks FROM dag WHERE dag_id = any($1::text[])

-- name: import_errors
SELECT fileloc, message, created_at FROM import_error ORDER BY fileloc

-- name: runs
-- A page of runs: $1 dag_id (NULL: every DAG), $2 states, $3 run types, $4 run id
-- patterns, $5 dag id patterns, $6..$9 logical_date >=, >, <=, <, $10..$13 start_date,
-- $14..$17 end_date, $18 order, $19 limit, $20 offset.
SELECT r.id, r.dag_id, r.run_id, r.run_type, r.logical_date, r.data_interval_start,
       r.data_interval_end, r.state, r.conf, r.note, r.created_at, r.start_date, r.end_date,
       count(*) OVER ()::int AS total
  FROM dag_run r
 WHERE ($1::text IS NULL OR r.dag_id = $1)
   AND ($2::text[] IS NULL OR r.state = any($2::text[]))
   AND ($3::text[] IS NULL OR r.run_type = any($3::text[]))
   AND ($4::text[] IS NULL OR r.run_id ILIKE any($4::text[]))
   AND ($5::text[] IS NULL OR r.dag_id ILIKE any($5::text[]))
   AND ($6::timestamptz IS NULL OR r.logical_date >= $6)
   AND ($7::timestamptz IS NULL OR r.logical_date > $7)
   AND ($8::timestamptz IS NULL OR r.logical_date <= $8)
   AND ($9::timestamptz IS NULL OR r.logical_date < $9)
   AND ($10::timestamptz IS NULL OR r.start_date >= $10)
   AND ($11::timestamptz IS NULL OR r.start_date > $11)
   AND ($12::timestamptz IS NULL OR r.start_date <= $12)
   AND ($13::timestamptz IS NULL OR r.start_date < $13)
   AND ($14::timestamptz IS NULL OR r.end_date >= $14)
   AND ($15::timestamptz IS NULL OR r.end_date > $15)
   AND ($16::timestamptz IS NULL OR r.end_date <= $16)
   AND ($17::timestamptz IS NULL OR r.end_date < $17)
 ORDER BY CASE WHEN $18 = 'logical_date' THEN r.logical_date END ASC,
          CASE WHEN $18 = '-logical_date' THEN r.logical_date END DESC,
          CASE WHEN $18 = 'start_date' THEN r.start_date END ASC,
          CASE WHEN $18 = '-start_date' THEN r.start_date END DESC,
          CASE WHEN $18 = 'end_date' THEN r.end_date END ASC,
          CASE WHEN $18 = '-end_date' THEN r.end_date END DESC,
          CASE WHEN $18 = 'run_id' THEN r.run_id END ASC,
          CASE WHEN $18 = '-run_id' THEN r.run_id END DESC,
          CASE WHEN $18 = 'state' THEN r.state END ASC,
          CASE WHEN $18 = '-state' THEN r.state END DESC,
          CASE WHEN $18 = '-id' THEN r.id END DESC,
          r.id
 LIMIT $19 OFFSET $20

-- name: run
SELECT r.id, r.dag_id, r.run_id, r.run_type, r.logical_date, r.data_interval_start,
       r.data_interval_end, r.state, r.conf, r.note, r.created_at, r.start_date, r.end_date
  FROM dag_run r WHERE r.dag_id = $1 AND r.run_id = $2

-- name: run_at
SELECT r.id, r.dag_id, r.run_id, r.run_type, r.logical_date, r.data_interval_start,
       r.data_interval_end, r.state, r.conf, r.note, r.created_at, r.start_date, r.end_date
  FROM dag_run r WHERE r.id = $1

-- name: run_note
UPDATE dag_run SET note = $2 WHERE id = $1

-- name: mark_run
-- A run marked by hand (Airflow's "mark success / failed / queued"), in one statement:
-- marked success, its unfinished instances succeed; marked failed, its running ones
-- fail and the other unfinished ones are skipped; queued, the scheduler takes it up
-- again. A worker running a try that is no longer 'running' stops it at its next
-- heartbeat, and its late result meets finish_ti's guard.
WITH tis AS (
    UPDATE task_instance
       SET state = CASE WHEN $2 = 'success' THEN 'success'
                        WHEN state = 'running' THEN 'failed' ELSE 'skipped' END,
           end_date = now(), start_date = coalesce(start_date, now()), worker_id = NULL,
           next_method = NULL, next_kwargs = NULL, trigger_id = NULL, next_retry_at = NULL
     WHERE run_pk = $1 AND $2 IN ('success', 'failed')
       AND (state IS NULL OR state IN ('scheduled', 'queued', 'running', 'up_for_retry',
                                       'deferred', CASE WHEN $2 = 'success' THEN 'failed' END,
                                       CASE WHEN $2 = 'success' THEN 'upstream_failed' END))
    RETURNING id
)
UPDATE dag_run
   SET state = $2,
       end_date = CASE WHEN $2 = 'queued' THEN NULL ELSE now() END,
       start_date = CASE WHEN $2 = 'queued' THEN start_date ELSE coalesce(start_date, now()) END
 WHERE id = $1 AND (SELECT count(*) FROM tis) >= 0
RETURNING id

-- name: tis
-- A page of task instances: $1 dag_id, $2 run_id (NULL: any), $3 task_id, $4 mapped only,
-- $5 states (the text 'none' for no state), $6 map indexes, $7 pools, $8 queues,
-- $9 try numbers, $10 task id patterns, $11 order, $12 limit, $13 offset.
SELECT ti.id, ti.uuid, ti.task_id, ti.map_index, ti.state, ti.try_number, ti.max_tries,
       ti.queue, ti.pool, ti.pool_slots, ti.priority_weight, ti.label, ti.queued_at,
       ti.start_date, ti.end_date, ti.hostname, ti.unixname, ti.pid, ti.rendered_fields,
       ti.trigger_id, t.classpath AS trigger_classpath, t.kwargs::text AS trigger_kwargs,
       t.created_at AS trigger_created_at, t.triggerer_id,
       r.id AS run_pk, r.dag_id, r.run_id, r.run_type, r.logical_date, r.data_interval_end,
       r.created_at AS run_created_at,
       count(*) OVER ()::int AS total
  FROM task_instance ti
  JOIN dag_run r ON r.id = ti.run_pk
  LEFT JOIN trigger t ON t.id = ti.trigger_id
 WHERE ($1::text IS NULL OR r.dag_id = $1)
   AND ($2::text IS NULL OR r.run_id = $2)
   AND ($3::text IS NULL OR ti.task_id = $3)
   AND (NOT $4::boolean OR ti.map_index >= 0)
   AND ($5::text[] IS NULL OR coalesce(ti.state, 'none') = any($5::text[]))
   AND ($6::int[] IS NULL OR ti.map_index = any($6::int[]))
   AND ($7::text[] IS NULL OR ti.pool = any($7::text[]))
   AND ($8::text[] IS NULL OR ti.queue = any($8::text[]))
   AND ($9::int[] IS NULL OR ti.try_number = any($9::int[]))
   AND ($10::text[] IS NULL OR ti.task_id ILIKE any($10::text[]))
 ORDER BY CASE WHEN $11 = 'start_date' THEN ti.start_date END ASC,
          CASE WHEN $11 = '-start_date' THEN ti.start_date END DESC,
          CASE WHEN $11 = 'end_date' THEN ti.end_date END ASC,
          CASE WHEN $11 = '-end_date' THEN ti.end_date END DESC,
          CASE WHEN $11 = 'state' THEN ti.state END ASC,
          CASE WHEN $11 = '-state' THEN ti.state END DESC,
          CASE WHEN $11 = 'task_id' THEN ti.task_id END ASC,
          CASE WHEN $11 = '-task_id' THEN ti.task_id END DESC,
          CASE WHEN $11 = '-map_index' THEN ti.map_index END DESC,
          CASE WHEN $11 = '-map_index' THEN ti.task_id END DESC,
          r.id, ti.task_id, ti.map_index
 LIMIT $12 OFFSET $13

-- name: mapped_task_exists
-- Whether the run has instances of the task, and whether any is mapped.
SELECT count(*)::int AS n, coalesce(max(ti.map_index), -1) >= 0 AS mapped
  FROM task_instance ti JOIN dag_run r ON r.id = ti.run_pk
 WHERE r.dag_id = $1 AND r.run_id = $2 AND ti.task_id = $3

-- name: mark_tis
-- Instances ($2 ids of run $1) marked by hand; returns the ids that changed.
UPDATE task_instance
   SET state = $3, end_date = now(), start_date = coalesce(start_date, now()),
       worker_id = NULL, next_method = NULL, next_kwargs = NULL, trigger_id = NULL,
       next_retry_at = NULL
 WHERE run_pk = $1 AND id = any($2::bigint[]) AND state IS DISTINCT FROM $3
RETURNING id

-- name: reopen_run
-- A finished run with an instance marked back to an unfinished path runs again.
UPDATE dag_run SET state = 'running', end_date = NULL
 WHERE id = $1 AND state IN ('success', 'failed')

-- name: xcoms
-- A page of XCom entries: $1 dag_id, $2 run_id, $3 task_id (NULL: any), $4 key,
-- $5 map index, $6 limit, $7 offset.
SELECT x.key, x.value::text AS value, x.created_at, x.task_id, x.map_index,
       r.dag_id, r.run_id, r.logical_date, r.run_type, r.data_interval_end,
       r.created_at AS run_created_at, count(*) OVER ()::int AS total
  FROM xcom x JOIN dag_run r ON r.id = x.run_pk
 WHERE ($1::text IS NULL OR r.dag_id = $1)
   AND ($2::text IS NULL OR r.run_id = $2)
   AND ($3::text IS NULL OR x.task_id = $3)
   AND ($4::text IS NULL OR x.key = $4)
   AND ($5::int IS NULL OR x.map_index = $5)
 ORDER BY r.dag_id, x.task_id, r.run_id, x.map_index, x.key
 LIMIT $6 OFFSET $7

-- name: variables
SELECT key, val, description, is_encrypted, count(*) OVER ()::int AS total
  FROM variable
 WHERE ($1::text[] IS NULL OR key ILIKE any($1::text[]))
   AND ($2::text[] IS NULL OR EXISTS (SELECT 1 FROM unnest($2::text[]) p
                                       WHERE starts_with(key, p)))
 ORDER BY CASE WHEN $3 = '-key' THEN key END DESC, key
 LIMIT $4 OFFSET $5

-- name: variable
SELECT key, val, description, is_encrypted FROM variable WHERE key = $1

-- name: add_variable
-- A new variable; no row when the key is taken.
INSERT INTO variable (key, val, description, is_encrypted) VALUES ($1, $2, $3, true)
ON CONFLICT (key) DO NOTHING
RETURNING key

-- name: put_variable
-- A variable's value and description replaced (PATCH): no row when there is none.
UPDATE variable SET val = $2, description = $3, is_encrypted = true, updated_at = now()
 WHERE key = $1
RETURNING key

-- name: connections
SELECT conn_id, conn_type, description, host, schema, login, password, port, extra,
       count(*) OVER ()::int AS total
  FROM connection
 WHERE ($1::text[] IS NULL OR conn_id ILIKE any($1::text[]))
   AND ($2::text[] IS NULL OR EXISTS (SELECT 1 FROM unnest($2::text[]) p
                                       WHERE starts_with(conn_id, p)))
 ORDER BY CASE WHEN $3 = '-connection_id' THEN conn_id END DESC, conn_id
 LIMIT $4 OFFSET $5

-- name: pools
-- Pools with their slots in use by state, from the unfinished instances (ti_unfinished).
WITH used AS (
    SELECT pool, state, sum(pool_slots)::int AS slots FROM task_instance
     WHERE state IN ('scheduled', 'queued', 'running', 'deferred')
       AND ($1::text IS NULL OR pool = $1)
     GROUP BY pool, state
)
SELECT p.name, p.slots, p.description,
       coalesce(sum(u.slots) FILTER (WHERE u.state = 'running'), 0)::int AS running_slots,
       coalesce(sum(u.slots) FILTER (WHERE u.state = 'queued'), 0)::int AS queued_slots,
       coalesce(sum(u.slots) FILTER (WHERE u.state = 'scheduled'), 0)::int AS scheduled_slots,
       coalesce(sum(u.slots) FILTER (WHERE u.state = 'deferred'), 0)::int AS deferred_slots,
       count(*) OVER ()::int AS total
  FROM pool p LEFT JOIN used u ON u.pool = p.name
 WHERE ($1::text IS NULL OR p.name = $1)
   AND ($2::text[] IS NULL OR p.name ILIKE any($2::text[]))
 GROUP BY p.name, p.slots, p.description
 ORDER BY CASE WHEN $3 = '-name' THEN p.name END DESC, p.name
 LIMIT $4 OFFSET $5

-- name: add_pool
INSERT INTO pool (name, slots, description) VALUES ($1, $2, $3)
ON CONFLICT (name) DO NOTHING
RETURNING name

-- name: put_pool
UPDATE pool SET name = $2, slots = $3, description = $4 WHERE name = $1 RETURNING name

-- name: delete_pool
DELETE FROM pool WHERE name = $1 RETURNING name

-- name: health
-- The newest heartbeats: a worker's running instance or registered triggerer shows
-- the daemons alive; the scheduler's last parse shows it working.
SELECT (SELECT max(heartbeat_at) FROM triggerer) AS triggerer_heartbeat,
       (SELECT max(updated_at) FROM dag) AS last_parse

-- name: dag_exists
-- $2: only an active one (a DAG still in its file)
SELECT 1 FROM dag WHERE dag_id = $1 AND (is_active OR NOT $2)

-- name: tis_to_mark
-- Instances of run $1 of tasks $2; of task $4 only map index $3 (when given).
SELECT id, task_id FROM task_instance
 WHERE run_pk = $1 AND task_id = any($2::text[])
   AND ($3::int IS NULL OR task_id <> $4 OR map_index = $3)

-- name: ti_tries
-- The ended tries of instance ($3, $4) of run $2 of DAG $1 before its current one
-- (task_instance_history), in ti_history's row shape, oldest first. A try that ended in a
-- state not final (up_for_retry, or cut short by a clear) reads as failed, as in Airflow.
SELECT h.task_id, h.map_index, h.try_number,
       CASE WHEN h.state IN ('success', 'failed', 'skipped', 'upstream_failed', 'removed')
            THEN h.state ELSE 'failed' END AS state, h.max_tries, h.queue, h.pool,
       h.pool_slots, h.priority_weight, h.label, h.queued_at, h.start_date, h.end_date,
       h.hostname, h.unixname, h.pid, r.dag_id, r.run_id
  FROM task_instance_history h JOIN dag_run r ON r.id = h.run_pk
 WHERE r.dag_id = $1 AND r.run_id = $2 AND h.task_id = $3 AND h.map_index = $4
 ORDER BY h.try_number
