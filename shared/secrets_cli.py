"""``sluice variables …``, ``sluice connections …`` and ``sluice rotate-fernet-key``.

The commands of Airflow 3's ``airflow variables`` / ``airflow connections`` (same
arguments, messages, connection URI and JSON, import and export files), on the
``variable`` and ``connection`` tables the Execution API serves to tasks. A variable's
value and a connection's password and extra are Fernet tokens in the tables
(``shared.secrets``), decrypted only to be printed or exported on request; nothing
here logs. ``get`` reads ``AIRFLOW_VAR_<KEY>`` / ``AIRFLOW_CONN_<ID>`` first, as
Airflow's own ``get`` and the Execution API do.

Exit codes: 1 a variable or connection that does not exist, or already does;
2 a usage error, a file or value in none of Airflow's formats, a Fernet key that
does not fit, or a database that cannot be reached. Each is one line on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import typer

from shared import secret_formats as fmt
from shared.config import write_private
from shared.db import q
from shared.secret_formats import Conn, FormatError
from shared.secrets import Secrets, SecretsError, secrets_for

NOT_FOUND, USAGE = 1, 2
CONFLICT = NOT_FOUND  # as Airflow: "already exists" fails the command like "not found"
MASK = "***"
OUTPUTS = ("table", "json", "yaml", "plain")
# key names whose values Airflow hides when it shows a connection's extra
_SENSITIVE = ("access_key", "access_token", "api_key", "apikey", "auth_header",
              "authorization", "bearer", "connection_string", "dsn", "passphrase", "passwd",
              "password", "private_key", "proxy", "proxies", "secret", "service_account",
              "service_key", "token", "keyfile_dict", "webhook_url")
# the separate fields of `connections add`, refused next to --conn-uri / --conn-json
_FIELD_FLAGS = ("conn_type", "conn_host", "conn_login", "conn_password", "conn_schema",
                "conn_port")


class Refused(Exception):
    """What the command says instead of doing it: one line, and the exit code."""

    def __init__(self, line: str, code: int = USAGE) -> None:
        super().__init__(line)
        self.code = code


def command(fn: Callable) -> Callable:
    """A command: a bad input or key is a ``Refused`` line (exit 2), the rest as it is."""
    @wraps(fn)
    async def run(*args, **kwargs) -> int:
        try:
            return await fn(*args, **kwargs) or 0
        except (FormatError, SecretsError) as exc:
            raise Refused(str(exc), USAGE) from None
    return run


async def _db(settings, fn: Callable, *args, once: bool = False) -> Any:
    """``fn(conn, *args)`` on the configured database; ``once`` for a write not to repeat."""
    from shared.reconnect import CONNECT_BUDGET_S, Database, deadline_in

    if not settings.database_url:
        raise Refused("no database configured: set SLUICE_DATABASE_URL, or start "
                      f"`sluice standalone` with SLUICE_HOME={settings.home}")
    db = Database(settings.database_url)
    try:
        call = db.run_once if once else db.run
        return await call(fn, *args, deadline=deadline_in(CONNECT_BUDGET_S))
    finally:
        await db.close()


async def _fetch(conn, name: str, *args):
    return await conn.fetch(q(name), *args)


async def _fetchrow(conn, name: str, *args):
    return await conn.fetchrow(q(name), *args)


def _out(text: str) -> None:
    typer.echo(text)


def _note(text: str) -> None:
    typer.echo(text, err=True)


# --- variables ---------------------------------------------------------------------------------
@command
async def variables_set(settings, key: str, value: str, description: str | None,
                        as_json: bool) -> None:
    """Create or replace a variable; with ``--json`` VALUE must be JSON, stored as JSON."""
    _check_key(key)
    if as_json:
        try:
            value = json.dumps(json.loads(value), indent=2)
        except ValueError as exc:
            raise Refused(f"variable {key!r}: --json was given but VALUE is not JSON "
                          f"({exc})") from None
    token = secrets_for(settings.home).encrypt(value)
    await _db(settings, _execute, "api_variable_set", key, token, description)
    _out(f"Variable {key} created")


def _check_key(key: str) -> None:
    if not key:
        raise Refused("a variable key must not be empty")


async def _execute(conn, name: str, *args) -> str:
    return await conn.execute(q(name), *args)


@command
async def variables_get(settings, key: str, as_json: bool, default: str | None) -> int:
    """Print a variable's value (``AIRFLOW_VAR_<KEY>`` first); exit 1 when there is none."""
    text = os.environ.get(f"AIRFLOW_VAR_{key.upper()}")
    if text is None:
        row = await _db(settings, _fetchrow, "api_variable_get", key)
        if row is not None:
            text = _variable_text(row, lambda: secrets_for(settings.home))
    if text is None:
        if default is not None:
            _out(default)
            return 0
        raise Refused(f"Variable {key} does not exist.", NOT_FOUND)
    if as_json:
        try:
            text = json.dumps(json.loads(text))
        except ValueError as exc:
            raise Refused(f"variable {key!r} is not JSON ({exc})", NOT_FOUND) from None
    _out(text)
    return 0


def _variable_text(row, secrets: Callable[[], Secrets]) -> str | None:
    return secrets().decrypt(row["val"]) if row["is_encrypted"] else row["val"]


@command
async def variables_list(settings, output: str, show_values: bool,
                         hide_sensitive: bool) -> None:
    """Keys only by default; ``--show-values`` adds values, ``--hide-sensitive`` masks them."""
    if hide_sensitive and not show_values:
        raise Refused("--hide-sensitive can only be used with --show-values")
    rows = await _db(settings, _fetch, "cli_variable_list")
    if not show_values:
        render([{"key": r["key"]} for r in rows], output)
        return
    secrets = _lazy_secrets(settings)
    render([{"key": r["key"],
             "val": MASK if hide_sensitive else _variable_text(r, secrets) or ""}
            for r in rows], output)


def _lazy_secrets(settings) -> Callable[[], Secrets]:
    """The key is read (or created) only if a value is decrypted."""
    made: list[Secrets] = []

    def get() -> Secrets:
        if not made:
            made.append(secrets_for(settings.home))
        return made[0]
    return get


@command
async def variables_delete(settings, key: str) -> None:
    """Delete a variable; exit 1 when there is none."""
    if await _db(settings, _fetchrow, "cli_variable_delete", key, once=True) is None:
        raise Refused(f"Variable {key} does not exist.", NOT_FOUND)
    _out(f"Variable {key} deleted")


@command
async def variables_import(settings, path: Path, action: str) -> int:
    """Import a ``.env`` / ``.json`` / ``.yaml`` file, all in one transaction.

    ``action`` for a key that exists: ``overwrite``, ``skip``, or ``fail`` (nothing
    is imported, exit 1).
    """
    found = fmt.single_values(path, fmt.read_secret_file(path), "variable key(s)")
    prepared, failed = {}, 0
    for key, value in found.items():
        try:
            prepared[key] = fmt.variable_from_import(value)
        except FormatError as exc:
            _out(f"Variable import failed: {key}: {exc}")
            failed += 1
    secrets = secrets_for(settings.home)
    rows = [(k, secrets.encrypt(v), d) for k, (v, d) in prepared.items()]
    skipped = await _db(settings, _import_variables, rows, action, once=True)
    _out(f"{len(prepared) - len(skipped)} of {len(found)} variables successfully updated.")
    if failed:
        _out(f"{failed} variable(s) failed to be updated.")
    if skipped:
        _out(f"The variables with these keys: {sorted(skipped)} were skipped because they "
             "already exists")
    return USAGE if failed else 0


async def _import_variables(conn, rows: list[tuple], action: str) -> list[str]:
    async with conn.transaction():
        existing = [] if action == "overwrite" else [
            r["key"] for r in await conn.fetch(q("cli_variable_keys_among"), [k for k, *_ in rows])]
        if action == "fail" and existing:
            raise Refused(f"Failed. These keys: {existing} already exists.", CONFLICT)
        await conn.executemany(q("api_variable_set"),
                               [r for r in rows if r[0] not in existing])
    return existing


@command
async def variables_export(settings, target: str) -> None:
    """Every variable, decrypted, in Airflow's JSON export format (``-``: stdout)."""
    rows = await _db(settings, _fetch, "cli_variable_list")
    secrets = _lazy_secrets(settings)
    data = fmt.variables_export([(r["key"], _variable_text(r, secrets), r["description"])
                                 for r in rows])
    _export(target, json.dumps(data, sort_keys=True, indent=4), len(data), "Variables")


def _export(target: str, text: str, count: int, what: str) -> None:
    """Write an export: plain secrets, so the file is made 0600; ``-`` is stdout."""
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        _note(f"\n{count} {what} successfully exported.")
        return
    try:
        write_private(Path(target), text)
    except OSError as exc:
        raise Refused(f"{target}: cannot be written ({exc.strerror or exc})") from None
    _out(f"{count} {what} successfully exported to {target}.")


# --- connections -------------------------------------------------------------------------------
def _conn_of_row(row, secrets: Callable[[], Secrets]) -> Conn:
    return Conn(conn_id=row["conn_id"], conn_type=row["conn_type"],
                description=row["description"], host=row["host"], schema=row["schema"],
                login=row["login"], port=row["port"],
                password=secrets().decrypt(row["password"]) if row["password"] else None,
                extra=secrets().decrypt(row["extra"]) if row["extra"] else None)


def _row_of_conn(conn: Conn, secrets: Secrets) -> tuple:
    return (conn.conn_id, conn.conn_type, conn.description, conn.host, conn.schema, conn.login,
            secrets.encrypt(conn.password), conn.port, secrets.encrypt(conn.extra))


def from_environment(conn_id: str) -> Conn | None:
    """``AIRFLOW_CONN_<ID>``: a JSON object or a connection URI, as Airflow reads it."""
    text = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if text is None:
        return None
    if text.lstrip().startswith("{"):
        return fmt.from_json(text, conn_id)
    return fmt.from_uri(text, conn_id)


def full_details(conn: Conn) -> dict[str, Any]:
    return {"conn_id": conn.conn_id, "conn_type": conn.conn_type,
            "description": conn.description, "host": conn.host, "schema": conn.schema,
            "login": conn.login, "password": conn.password, "port": conn.port,
            "extra_dejson": conn.extra_dejson, "get_uri": fmt.get_uri(conn)}


def masked_details(conn: Conn) -> dict[str, Any]:
    shown = full_details(conn)
    shown["password"] = MASK if conn.password else conn.password
    shown["extra_dejson"] = MASK if conn.extra_dejson else conn.extra_dejson
    shown["get_uri"] = _mask_uri_credentials(fmt.get_uri(conn))
    return shown


def _mask_uri_credentials(uri: str) -> str:
    """``scheme://***:***@host…`` as Airflow masks a URI; the query (extra) is cut too."""
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}:{MASK}@{netloc.split('@', 1)[1]}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_extra(extra: dict) -> dict:
    """The extra with the values of secret-sounding keys hidden, nested ones too."""
    def hide(key: str, value: Any) -> Any:
        if any(word in key.lower() for word in _SENSITIVE):
            return MASK
        return redact_extra(value) if isinstance(value, dict) else value
    return {k: hide(str(k), v) for k, v in extra.items()}


@command
async def connections_get(settings, conn_id: str, output: str) -> None:
    """One connection with its password (``AIRFLOW_CONN_<ID>`` first); exit 1 when none."""
    conn = from_environment(conn_id)
    if conn is None:
        row = await _db(settings, _fetchrow, "cli_connection_get", conn_id)
        if row is None:
            raise Refused(f"Connection {conn_id} not found.", NOT_FOUND)
        conn = _conn_of_row(row, _lazy_secrets(settings))
    render([full_details(conn)], output)


@command
async def connections_list(settings, output: str, show_values: bool,
                           hide_sensitive: bool) -> None:
    """Ids and types by default; ``--show-values`` everything, ``--hide-sensitive`` masked."""
    if hide_sensitive and not show_values:
        raise Refused("--hide-sensitive can only be used with --show-values")
    rows = await _db(settings, _fetch, "cli_connection_list")
    if not show_values:
        render([{"conn_id": r["conn_id"], "conn_type": r["conn_type"]} for r in rows], output)
        return
    secrets = _lazy_secrets(settings)
    show = masked_details if hide_sensitive else full_details
    render([show(_conn_of_row(r, secrets)) for r in rows], output)


def connection_to_add(conn_id: str, *, uri: str | None, json_text: str | None,
                      extra: str | None, description: str | None, **fields: str | None) -> Conn:
    """The connection ``connections add`` describes, checked as Airflow checks it.

    ``fields``: the separate ``conn_type``, ``conn_host``, ``conn_login``,
    ``conn_password``, ``conn_schema``, ``conn_port`` options.
    """
    try:
        fmt.validate_conn_id(conn_id)
    except FormatError as exc:
        raise Refused(f"Could not create connection. {exc}") from None
    if not fields.get("conn_type") and not (json_text or uri):
        raise Refused("Must supply either conn-uri or conn-json if not supplying conn-type")
    if json_text and uri:
        raise Refused("Cannot supply both conn-uri and conn-json")
    if uri or json_text:
        invalid = [f for f in _FIELD_FLAGS if fields.get(f) is not None]
        if json_text and extra:
            invalid.append("--conn-extra")
        if invalid:
            raise Refused("The following args are not compatible with the "
                          f"--conn-{'uri' if uri else 'json'} flag: {invalid!r}")
    if uri:
        conn = fmt.from_uri(uri, conn_id, description)
    elif json_text:
        conn = fmt.from_json(json_text, conn_id)
        if not conn.conn_type:
            raise Refused("conn-json is invalid; must supply conn-type")
        conn.description = conn.description or description
        return conn
    else:
        conn = Conn(conn_id=conn_id, conn_type=fields["conn_type"], description=description,
                    host=fields.get("conn_host"), login=fields.get("conn_login"),
                    password=fields.get("conn_password"), schema=fields.get("conn_schema"),
                    port=fields.get("conn_port"))
    if extra is not None:
        fmt.validate_extra(extra, conn_id)
        conn.extra = extra or None
    return conn


@command
async def connections_add(settings, conn_id: str, **options) -> None:
    """Add a connection from a URI, JSON or separate fields; exit 1 if the id is taken."""
    conn = connection_to_add(conn_id, **options)
    row = _row_of_conn(conn, secrets_for(settings.home))
    if await _db(settings, _fetchrow, "cli_connection_add", *row, once=True) is None:
        raise Refused(f"A connection with `conn_id`={conn_id} already exists.", CONFLICT)
    _out(f"Successfully added `conn_id`={conn_id}")
    render([{"conn_id": conn.conn_id, "conn_type": conn.conn_type, "host": conn.host,
             "login": conn.login, "port": conn.port,
             "extra": redact_extra(conn.extra_dejson)}], "table")


@command
async def connections_delete(settings, conn_id: str) -> None:
    """Delete a connection; exit 1 when there is none."""
    if await _db(settings, _fetchrow, "cli_connection_delete", conn_id, once=True) is None:
        raise Refused(f"Did not find a connection with `conn_id`={conn_id}", NOT_FOUND)
    _out(f"Successfully deleted connection with `conn_id`={conn_id}")


@command
async def connections_import(settings, path: Path, overwrite: bool) -> None:
    """Import a file's connections in one transaction; an existing id is kept unless
    ``overwrite``. A bad connection id is said and left out; a bad value refuses the file."""
    conns: dict[str, Conn] = {}
    for conn_id, value in fmt.connections_from_file(path).items():
        try:
            fmt.validate_conn_id(conn_id)
        except FormatError as exc:
            _out(f"Could not import connection. {exc}")
            continue
        conn = fmt.connection_from_value(conn_id, value)
        if not conn.conn_type:
            raise Refused(f"{path}: connection {conn_id!r} has no conn_type")
        conns[conn_id] = conn
    secrets = secrets_for(settings.home)
    rows = [_row_of_conn(c, secrets) for c in conns.values()]
    written = await _db(settings, _import_connections, rows, overwrite, once=True)
    for conn_id in conns:
        _out(f"Imported connection {conn_id}" if conn_id in written
             else f"Could not import connection {conn_id}: connection already exists.")


async def _import_connections(conn, rows: list[tuple], overwrite: bool) -> set[str]:
    name = "cli_connection_put" if overwrite else "cli_connection_add"
    written = set()
    async with conn.transaction():
        for row in rows:
            if await conn.fetchval(q(name), *row) is not None:
                written.add(row[0])
    return written


EXPORT_FORMATS = (".json", ".yaml", ".env")


def export_format(target: str, file_format: str | None, serialization: str | None) -> str:
    """The export's format, by Airflow's rules: ``--file-format``, else the file's extension."""
    chosen = f".{file_format.lower()}" if file_format else None
    if target == "-":
        kind = chosen or ".json"
    elif chosen:
        kind = chosen
    else:
        kind = Path(target).suffix.lower()
        if kind not in EXPORT_FORMATS:
            raise Refused("Unsupported file format. The file must have the extension "
                          f"{', '.join(EXPORT_FORMATS)}.")
    if serialization and kind != ".env":
        raise Refused("Option `--serialization-format` may only be used with file type `env`.")
    return kind


@command
async def connections_export(settings, target: str, file_format: str | None,
                             serialization: str | None) -> None:
    """Every connection, decrypted, as ``.json`` / ``.yaml`` / ``.env`` (``-``: stdout)."""
    kind = export_format(target, file_format, serialization)
    rows = await _db(settings, _fetch, "cli_connection_list")
    secrets = _lazy_secrets(settings)
    conns = [_conn_of_row(r, secrets) for r in rows]
    _export(target, fmt.format_connections(conns, kind, serialization or "uri"), len(conns),
            "Connections")


# --- the key -----------------------------------------------------------------------------------
@command
async def rotate_fernet_key(settings) -> None:
    """Encrypt every stored secret again with the first configured key, in one transaction.

    Set ``SLUICE_FERNET_KEY`` (or the key file) to ``NEW,OLD``, run this, then drop
    ``OLD``: as Airflow's ``rotate-fernet-key``.
    """
    secrets = secrets_for(settings.home)
    variables, connections = await _db(settings, _rotate, secrets)
    _out(f"Encrypted {variables} variable(s) and {connections} connection(s) again with the "
         "first Fernet key.")


async def _rotate(conn, secrets: Secrets) -> tuple[int, int]:
    async with conn.transaction():
        variables = await conn.fetch(q("cli_variables_to_rotate"))
        await conn.executemany(q("cli_variable_rotated"),
                               [(r["key"], secrets.rotate(r["val"])) for r in variables])
        connections = await conn.fetch(q("cli_connections_to_rotate"))
        await conn.executemany(q("cli_connection_rotated"), [
            (r["conn_id"], secrets.rotate(r["password"]), secrets.rotate(r["extra"]))
            for r in connections])
    return len(variables), len(connections)


# --- output ------------------------------------------------------------------------------------
def render(rows: list[dict[str, Any]], output: str) -> None:
    """Rows as Airflow's CLI prints them: ``table``, ``json``, ``yaml`` or ``plain``."""
    if output == "json":
        _out(json.dumps(rows))
    elif output == "yaml":
        _out(fmt.yaml_dump(rows).rstrip("\n"))
    elif not rows:
        _out("No data found")
    elif output == "plain" or not sys.stdout.isatty():  # a table is for a terminal: no folds
        _out(_plain(rows))
    else:
        _table(rows)


def _cell(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict) else str(value)


def _plain(rows: list[dict[str, Any]]) -> str:
    """Columns two spaces apart, for pipes."""
    lines = [list(rows[0])] + [[_cell(v) for v in r.values()] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.box import ASCII_DOUBLE_HEAD
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(box=ASCII_DOUBLE_HEAD, show_edge=False, pad_edge=False)
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:  # Text: a value's brackets are not rich markup
        table.add_row(*(Text(_cell(v)) for v in row.values()))
    console.print(table)
