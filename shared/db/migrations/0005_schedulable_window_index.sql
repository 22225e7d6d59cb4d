-- The scheduler reads the schedulable instances of a run per task, in map_index
-- order and a window at a time; this index serves that (and run_pk lookups).
DROP INDEX IF EXISTS ti_schedulable;
CREATE INDEX ti_schedulable_window ON task_instance (run_pk, task_id, map_index)
    WHERE state IS NULL OR state IN ('scheduled', 'up_for_retry');
