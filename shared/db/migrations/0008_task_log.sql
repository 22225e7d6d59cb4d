-- Where each try's log was written: the log server of each worker that ran it (a try
-- resumed after a deferral may have run on two workers). `sluice tasks logs`, the API and
-- the UI read a try's log from there when the file is not on their own host.
CREATE TABLE task_log (
    ti_id       bigint NOT NULL REFERENCES task_instance (id) ON DELETE CASCADE,
    try_number  integer NOT NULL,
    log_url     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ti_id, try_number, log_url)
);
