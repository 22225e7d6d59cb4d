-- Where each try's log was written: the workers that ran it (a try resumed after a
-- deferral may have run on two), each with the URL of its task-log server. The claim
-- records the worker with the try, in its own statement; the worker registers its URL
-- when it starts. `sluice tasks logs`, the API and the UI read a try's log from there
-- when the file is not on their own host.
CREATE TABLE worker (
    id          text PRIMARY KEY,
    hostname    text NOT NULL,
    log_url     text,
    started_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE task_log (
    ti_id       bigint NOT NULL REFERENCES task_instance (id) ON DELETE CASCADE,
    try_number  integer NOT NULL,
    worker_id   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ti_id, try_number, worker_id)
);
