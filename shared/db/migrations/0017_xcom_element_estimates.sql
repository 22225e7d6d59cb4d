-- The rows of xcom_element sharing (run_pk, task_id, key, map_index) are one list's
-- elements, so one large list makes each of those columns look constant to ANALYZE.
-- Deletes by that key from a generic plan (api_xcom_set's stale rows, the cascade from an
-- xcom row a fresh try's claim or a clear deletes) then estimated that every row matches
-- and scanned the whole table: 20 ms per XCom write beside a 100,000-element list. A
-- key's rows are a small share of the table: map_index is declared as distinct as the
-- rows, so such a delete reads its key's range of the primary key.
ALTER TABLE xcom_element ALTER COLUMN map_index SET (n_distinct = -1);
ANALYZE xcom_element;
