-- The scheduler keeps each active run's instance counts (task, state) in memory and, each
-- pass, reads only the instances whose state changed since its previous read
-- (scheduler/counts.py), so a pass costs what changed, not the run's size. A change is
-- stamped with the writing transaction's id; a read asks for every stamp at or above the
-- oldest transaction still open at its previous read (pg_snapshot_xmin), which no later
-- commit can fall below. Deleted instances bump their run's ti_epoch instead: a cache of
-- another epoch is read again whole.
-- Instances that exist already read as stamped by xid 1 (a constant default: no rewrite).
ALTER TABLE task_instance ADD COLUMN state_xid xid8 NOT NULL DEFAULT '1';
ALTER TABLE task_instance ALTER COLUMN state_xid SET DEFAULT pg_current_xact_id();
ALTER TABLE dag_run ADD COLUMN ti_epoch bigint NOT NULL DEFAULT 0;

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
