-- How often a run was cleared to run again (`sluice runs clear`); a cleared run
-- keeps its task instances when the scheduler starts it again.
ALTER TABLE dag_run ADD COLUMN clear_number integer NOT NULL DEFAULT 0;
