-- The web UI's reads: named blocks, loaded once by apiserver.ui.sql.
-- The UI writes nothing itself: its actions go through the REST API's routes.

-- name: ui_dags
-- Every active DAG with its ten latest runs (newest first), for the DAG list.
SELECT d.dag_id, d.fileloc, d.is_paused, d.next_interval_start, d.next_interval_end,
       d.serialized -> 'tags' AS tags, d.serialized -> 'schedule' AS schedule,
       d.serialized ->> 'description' AS description,
       coalesce(r.recent, '[]'::json) AS recent
  FROM dag d
  LEFT JOIN LATERAL (
       SELECT json_agg(json_build_object('run_pk', x.id, 'run_id', x.run_id, 'state', x.state,
                                         'logical_date', x.logical_date) ORDER BY x.logical_date DESC,
                       x.id DESC) AS recent
         FROM (SELECT id, run_id, state, logical_date FROM dag_run
                WHERE dag_id = d.dag_id ORDER BY logical_date DESC, id DESC LIMIT 10) x) r ON true
 WHERE d.is_active
 ORDER BY d.dag_id

-- name: ui_import_errors
SELECT fileloc, message, created_at FROM import_error ORDER BY fileloc

-- name: ui_dag
SELECT dag_id, fileloc, is_paused, is_active, next_interval_start, next_interval_end, serialized
  FROM dag WHERE dag_id = $1

-- name: ui_runs
-- A DAG's latest $2 runs, newest first (the unique (dag_id, logical_date, run_type) index).
SELECT id AS run_pk, run_id, run_type, state, logical_date, start_date, end_date, conf, note
  FROM dag_run WHERE dag_id = $1
 ORDER BY logical_date DESC, id DESC LIMIT $2

-- name: ui_run
SELECT id AS run_pk, run_id, run_type, state, logical_date, start_date, end_date, conf, note
  FROM dag_run WHERE dag_id = $1 AND run_id = $2

-- name: ui_grid_cells
-- The grid in one aggregate: per (run, task, state) the instance count, whether any is
-- mapped, the highest try and the time span. A 10,000-instance mapped task is one row
-- per state, read in (run_pk, task_id, map_index) index order.
SELECT run_pk, task_id, state, count(*)::int AS n, bool_or(map_index >= 0) AS mapped,
       max(try_number) AS try_number, min(start_date) AS start_date, max(end_date) AS end_date,
       min(label) FILTER (WHERE map_index < 0) AS label
  FROM task_instance
 WHERE run_pk = any($1::bigint[])
 GROUP BY run_pk, task_id, state

-- name: ui_mapped_instances
-- One page of a task's instances in map_index order, optionally of one state.
SELECT map_index, state, label, try_number, max_tries, start_date, end_date
  FROM task_instance
 WHERE run_pk = $1 AND task_id = $2 AND ($3::text IS NULL OR state IS NOT DISTINCT FROM
       nullif($3::text, 'none'))
 ORDER BY map_index
 LIMIT $4 OFFSET $5

-- name: ui_instance
-- One instance with its run and the trigger it waits on (kwargs left out: they may hold secrets).
SELECT ti.id, ti.run_pk, ti.task_id, ti.map_index, ti.state, ti.try_number, ti.max_tries,
       ti.label, ti.queue, ti.pool, ti.pool_slots, ti.priority_weight, ti.queued_at,
       ti.start_date, ti.end_date, ti.next_retry_at, ti.next_method, ti.trigger_timeout,
       ti.worker_id, ti.hostname, ti.pid, ti.error, ti.rendered_fields,
       ti.next_kwargs IS NOT NULL AS has_next_kwargs,
       t.id AS trigger_id, t.classpath AS trigger_classpath, t.created_at AS trigger_created_at,
       tr.hostname AS triggerer_hostname, tr.pid AS triggerer_pid
  FROM task_instance ti
  JOIN dag_run r ON r.id = ti.run_pk
  LEFT JOIN trigger t ON t.id = ti.trigger_id
  LEFT JOIN triggerer tr ON tr.id = t.triggerer_id
 WHERE r.dag_id = $1 AND r.run_id = $2 AND ti.task_id = $3 AND ti.map_index = $4

-- name: ui_instance_tries
-- The tries an instance ended before its current one (task_instance_history), oldest first.
SELECT try_number, state, start_date, end_date, hostname, error FROM task_instance_history
 WHERE run_pk = $1 AND task_id = $2 AND map_index = $3
 ORDER BY try_number

-- name: ui_instance_xcoms
-- An instance's XComs, each value cut to $3 characters of its JSON text.
SELECT key, left(value::text, $3) AS value, length(value::text) AS size, created_at
  FROM xcom WHERE run_pk = $1 AND task_id = $2 AND map_index = $4
 ORDER BY key

-- name: ui_runs_by_pk
-- What the live event stream names: a run's DAG, id and state, once per batch of events.
SELECT id AS run_pk, dag_id, run_id, state FROM dag_run WHERE id = any($1::bigint[])
