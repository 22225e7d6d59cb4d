-- The scheduler reads only schedulable instances of a run on each pass.
CREATE INDEX ti_schedulable ON task_instance (run_pk)
    WHERE state IS NULL OR state IN ('scheduled', 'up_for_retry');
