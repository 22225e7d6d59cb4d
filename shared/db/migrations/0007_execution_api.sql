-- The Execution API (Airflow's Task SDK talks to the worker over HTTP): each try of a task
-- instance gets a UUID identity (a new one whenever try_number is bumped, as Airflow 3
-- does), the task process that started it and its rendered template fields are kept, and
-- Variables and Connections get tables of their own (secret values stored as Fernet
-- tokens). The UUID default is volatile: every existing row gets its own.
ALTER TABLE task_instance
    ADD COLUMN uuid uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN hostname text,
    ADD COLUMN unixname text,
    ADD COLUMN pid integer,
    ADD COLUMN rendered_fields json,
    ADD CONSTRAINT task_instance_uuid_key UNIQUE (uuid);

CREATE TABLE variable (
    key          text PRIMARY KEY,
    val          text,
    description  text,
    is_encrypted boolean NOT NULL DEFAULT true,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE connection (
    conn_id      text PRIMARY KEY,
    conn_type    text NOT NULL,
    description  text,
    host         text,
    schema       text,
    login        text,
    password     text,
    port         integer,
    extra        text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
