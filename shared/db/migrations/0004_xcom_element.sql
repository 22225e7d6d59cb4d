-- The elements of an unmapped task's return value that mapped tasks expand over, one
-- row each (written by finish_ti with the XCom, parsed once), so that a mapped instance
-- reads its own element by primary key (xcom_item) instead of PostgreSQL re-parsing the
-- whole list for every instance. A list or tuple element has no dict_key; a dict's
-- (key, value) pairs keep their insertion order in idx. Derived from its xcom row:
-- deleted with it (a fresh try's claim, `sluice runs clear`, a deleted run).
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
