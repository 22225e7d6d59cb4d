"""``sluice``: the command line (daemons, standalone, DAGs and runs).

Exit codes (DESIGN.md): 0 done, 1 the run failed, 3 ``--wait`` gave up, 2 a
usage error, an unknown DAG or run, or a service that cannot be reached, said
in one line (``_run``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import anyio
import typer
from typer.core import TyperCommand

from shared.config import load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Sluice: an event-driven Airflow 3 core: Airflow's DAG files and Task SDK, "
                       "Sluice's daemons.")
dags_app = typer.Typer(no_args_is_help=True, help="List, trigger and test DAGs.")
runs_app = typer.Typer(no_args_is_help=True, help="Inspect DAG runs.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(dags_app, name="dags")
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")

DagsFolder = Annotated[Path | None, typer.Option("--dags-folder", help="Folder of DAG files.")]
# A run is named as in Airflow (`dags state DAG_ID RUN_ID`); the run id alone while only
# one DAG has a run of that id.
FirstRunArg = Annotated[str, typer.Argument(
    metavar="[DAG_ID] RUN_ID", show_default=False,
    help="The run's DAG, then its run id; or the run id alone while only one DAG has a run "
         "of that id.")]
SecondRunArg = Annotated[str | None, typer.Argument(show_default=False, hidden=True)]


class RunCommand(TyperCommand):
    """A command on one run: its usage line reads ``[OPTIONS] [DAG_ID] RUN_ID``."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [self.options_metavar, "[DAG_ID] RUN_ID"]


def _run_ref(first: str, second: str | None) -> tuple[str | None, str]:
    """``(dag_id, run_id)`` of ``[DAG_ID] RUN_ID``."""
    return (None, first) if second is None else (first, second)


def _run(settings, fn, *args):
    """``anyio.run(fn, *args)``; a service that cannot be reached is one line and exit 2."""
    from shared.reconnect import one_line

    try:
        return anyio.run(fn, *args)
    except Exception as exc:  # noqa: BLE001 - anything else is re-raised as it is
        line = one_line(exc, settings.database_url, settings.redis_url)
        if line is None:
            raise
        typer.echo(line, err=True)
        raise typer.Exit(2) from None


def _daemon(module: str, **overrides) -> None:
    from shared.logging import configure_logging

    configure_logging()
    settings = load_settings(**overrides)
    mod = __import__(f"{module}.daemon", fromlist=["run"])
    _run(settings, mod.run, settings)


@app.command()
def scheduler(dags_folder: DagsFolder = None) -> None:
    """Run the scheduler daemon."""
    _daemon("scheduler", dags_folder=dags_folder)


@app.command()
def triggerer(dags_folder: DagsFolder = None,
              capacity: Annotated[int | None, typer.Option(min=1)] = None) -> None:
    """Run the triggerer daemon."""
    _daemon("triggerer", dags_folder=dags_folder, triggerer_capacity=capacity)


@app.command()
def worker(dags_folder: DagsFolder = None,
           queues: Annotated[str | None, typer.Option(help="Comma-separated queue names.")] = None,
           concurrency: Annotated[int | None, typer.Option(min=1)] = None,
           executor: Annotated[str | None, typer.Option(
               help="local (task slots) or kubernetes (a pod per try).")] = None) -> None:
    """Run a worker daemon."""
    _daemon("worker", dags_folder=dags_folder, worker_queues=queues,
            worker_concurrency=concurrency, worker_executor=executor)


@app.command()
def standalone(dags_folder: DagsFolder = None) -> None:
    """Embedded PostgreSQL + Valkey (unless URLs are configured) and all three daemons."""
    from shared.logging import configure_logging
    from shared.standalone import serve

    configure_logging()
    settings = load_settings(dags_folder=dags_folder)
    raise typer.Exit(_run(settings, serve, settings))


@app.command("api-server")
def api_server(
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8080].")] = None,
) -> None:
    """Serve Airflow's REST API (/api/v2) and the web UI; every route but health needs a login."""
    from apiserver.auth import AuthError
    from apiserver.config import load_api_settings
    from apiserver.server import serve
    from shared.logging import configure_logging

    configure_logging()
    settings = load_api_settings(api_host=host, api_port=port)
    try:
        raise typer.Exit(_run(settings, serve, settings))
    except AuthError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (idempotent, safe to run concurrently)."""
    from shared.db import migrate

    settings = load_settings()
    applied = _run(settings, _with_conn, settings, migrate)  # idempotent: retried through restarts
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


async def _with_conn(settings, fn, *args):
    """``fn(conn, *args)`` (safe to repeat), reconnecting through a restart of the database."""
    from shared.reconnect import CONNECT_BUDGET_S, Database, deadline_in

    db_url, _ = settings.require_urls()
    db = Database(db_url)
    try:
        return await db.run(fn, *args, deadline=deadline_in(CONNECT_BUDGET_S))
    finally:
        await db.close()


@dags_app.command("list")
def dags_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """DAGs known to the scheduler, and files that failed to import."""
    async def fetch(conn):
        dags = await conn.fetch("SELECT dag_id, fileloc, is_paused, serialized->'schedule' AS schedule"
                                " FROM dag WHERE is_active ORDER BY dag_id")
        errors = await conn.fetch("SELECT fileloc, message FROM import_error ORDER BY fileloc")
        return dags, errors

    settings = load_settings()
    dags, errors = _run(settings, _with_conn, settings, fetch)
    if as_json:
        typer.echo(json.dumps({
            "dags": [{"dag_id": d["dag_id"], "fileloc": d["fileloc"], "is_paused": d["is_paused"],
                      "schedule": d["schedule"]} for d in dags],
            "import_errors": [{"fileloc": e["fileloc"], "message": e["message"]} for e in errors]}))
        return
    from shared.schedules import schedule_text
    from shared.tables import print_notes, print_table

    print_table(("dag_id", "schedule", "paused", "fileloc"),
                [[d["dag_id"], schedule_text(d["schedule"]),
                  str(d["is_paused"]), d["fileloc"]] for d in dags], whole=("dag_id",))
    print_notes("import error", [(e["fileloc"], e["message"]) for e in errors])


@dags_app.command("trigger")
def dags_trigger(
    dag_id: str,
    conf: Annotated[str | None, typer.Option(help="Run configuration as a JSON object.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to finish.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 3600.0,
) -> None:
    """Create a manual run; with --wait, exit 0 on success and 1 on failure."""
    from shared.runs_cli import trigger

    try:
        conf_obj = json.loads(conf) if conf else {}
    except ValueError as exc:
        raise typer.BadParameter(f"--conf is not valid JSON: {exc}") from None
    if not isinstance(conf_obj, dict):
        raise typer.BadParameter("--conf must be a JSON object")
    raise typer.Exit(_trigger(load_settings(), trigger, dag_id, conf_obj, wait, as_json, timeout))


@dags_app.command("test")
def dags_test(
    dag_id: str,
    conf: Annotated[str | None, typer.Option(help="Run configuration as a JSON object.")] = None,
    logical_date: Annotated[str | None, typer.Option(
        "--logical-date", help="The run's logical date (ISO 8601; default: now). A manual run "
                               "of the DAG at that date is replaced.")] = None,
    mark_success_pattern: Annotated[str | None, typer.Option(
        "--mark-success-pattern", help="Mark the tasks whose id this regex matches success "
                                       "instead of running them.")] = None,
) -> None:
    """Run the DAG once in this process, no daemons: each task's output on the terminal,
    breakpoint() works in a task; exit 0 on success, 1 on failure."""
    import re

    from shared.dag_test import DagTestError, parse_logical_date, test_dag

    conf_obj = _conf_object(conf)
    try:
        when = parse_logical_date(logical_date)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--logical-date") from None
    try:
        pattern = re.compile(mark_success_pattern) if mark_success_pattern is not None else None
    except re.error as exc:
        raise typer.BadParameter(f"not a regular expression: {exc}",
                                 param_hint="--mark-success-pattern") from None
    from shared.reconnect import one_line

    settings = load_settings()
    try:
        code = test_dag(settings, dag_id, conf_obj, when, pattern)
    except DagTestError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - a database that cannot serve: one line, exit 2
        line = one_line(exc, settings.database_url, None)
        if line is None:
            raise
        typer.echo(line, err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def _conf_object(conf: str | None) -> dict:
    """``--conf`` as a JSON object, or the usage error that says why not."""
    try:
        conf_obj = json.loads(conf) if conf else {}
    except ValueError as exc:
        raise typer.BadParameter(f"--conf is not valid JSON: {exc}") from None
    if not isinstance(conf_obj, dict):
        raise typer.BadParameter("--conf must be a JSON object")
    return conf_obj


def _trigger(settings, trigger, dag_id: str, conf: dict, *args) -> int:
    """``trigger``; a paused DAG is said first (its run waits queued, as in Airflow), and a
    conf its params refuse is one line and exit 2."""
    from shared.params import ParamsError
    from shared.pools_cli import is_paused

    if _run(settings, is_paused, settings, dag_id):
        typer.echo(f"DAG {dag_id!r} is paused: its run stays queued until "
                   f"`sluice dags unpause {dag_id}`", err=True)
    try:
        return _run(settings, trigger, settings, dag_id, conf, *args)
    except ParamsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@dags_app.command("pause")
def dags_pause(dag_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Pause a DAG: no new runs start (scheduled or triggered) until it is unpaused."""
    _admin("set_paused", dag_id, True, as_json)


@dags_app.command("unpause")
def dags_unpause(dag_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Unpause a DAG: its queued runs start and its schedule resumes."""
    _admin("set_paused", dag_id, False, as_json)


def _admin(name: str, *args) -> None:
    """Run ``shared.pools_cli.<name>``; a refusal is one line and its exit code."""
    from functools import partial

    from shared import pools_cli

    settings = load_settings()
    try:
        code = _run(settings, partial(getattr(pools_cli, name), settings, *args))
    except pools_cli.Refused as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exc.code) from None
    raise typer.Exit(code or 0)


# --- pools: Airflow's `pools` commands -----------------------------------------------------
pools_app = typer.Typer(no_args_is_help=True, help="Manage pools (slots shared by tasks).")
app.add_typer(pools_app, name="pools")


@pools_app.command("set")
def pools_set(
    name: str, slots: int,
    text: Annotated[str | None, typer.Argument(
        metavar="DESCRIPTION", show_default=False,
        help="The pool's description (as in `airflow pools set NAME SLOTS DESCRIPTION`).")] = None,
    description: Annotated[str | None, typer.Option(help="The pool's description.")] = None,
    include_deferred: Annotated[bool, typer.Option(
        "--include-deferred", help="Not supported: deferred tasks never hold pool slots.")]
    = False,
) -> None:
    """Create a pool or set its slots (and description)."""
    if include_deferred:
        typer.echo(f"pool {name!r}: --include-deferred is not supported by Sluice (deferred "
                   "task instances never hold pool slots)", err=True)
        raise typer.Exit(2)
    if text is not None and description is not None and text != description:
        raise typer.BadParameter("give the description once (DESCRIPTION or --description)")
    _admin("pools_set", name, slots, description if description is not None else text)


@pools_app.command("get")
def pools_get(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One pool, with the slots its queued and running tasks hold; exit 2 if none."""
    _admin("pools_get", name, as_json)


@pools_app.command("list")
def pools_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every pool, with the slots its queued and running tasks hold."""
    _admin("pools_list", as_json)


@pools_app.command("delete")
def pools_delete(name: str) -> None:
    """Delete a pool no queued or running task holds (default_pool cannot be deleted)."""
    _admin("pools_delete", name)


@runs_app.command("list")
def runs_list(dag_id: Annotated[str | None, typer.Option("--dag-id")] = None,
              limit: int = 50, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Most recent runs first."""
    from shared.runs_cli import list_runs

    settings = load_settings()
    _run(settings, list_runs, settings, dag_id, limit, as_json)


@runs_app.command("clear", cls=RunCommand)
def runs_clear(
    first: FirstRunArg,
    second: SecondRunArg = None,
    only_failed: Annotated[bool, typer.Option(
        "--only-failed", help="Clear only failed and upstream_failed task instances.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to finish.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 3600.0,
) -> None:
    """Run a finished run again against the DAG as it is now (Airflow's "Clear")."""
    from shared.runs_cli import clear

    settings = load_settings()
    raise typer.Exit(_run(settings, clear, settings, *_run_ref(first, second), only_failed, wait,
                          as_json, timeout))


@runs_app.command("show", cls=RunCommand)
def runs_show(first: FirstRunArg, second: SecondRunArg = None,
              as_json: Annotated[bool, typer.Option("--json")] = False,
              every_instance: Annotated[bool, typer.Option(
                  "--all", help="List every mapped instance, not one summary row per task.")]
              = False) -> None:
    """One run: its tasks in graph order, each mapped task summarised (--json: every instance)."""
    from shared.runs_cli import show

    settings = load_settings()
    raise typer.Exit(_run(settings, show, settings, *_run_ref(first, second), as_json,
                          every_instance))


# --- variables and connections: Airflow's `variables` / `connections` commands ---------------
variables_app = typer.Typer(no_args_is_help=True, help="Manage variables (Airflow's formats).")
connections_app = typer.Typer(no_args_is_help=True,
                              help="Manage connections (Airflow's URI and JSON formats).")
app.add_typer(variables_app, name="variables")
app.add_typer(connections_app, name="connections")

Output = Annotated[Literal["table", "json", "yaml", "plain"], typer.Option(
    "-o", "--output", help="Output format.")]
ShowValues = Annotated[bool, typer.Option("--show-values", help="Show the values too.")]
HideSensitive = Annotated[bool, typer.Option(
    "--hide-sensitive", help="With --show-values, mask the secret values.")]


def _secrets(name: str, *args, **kwargs) -> None:
    """Run ``shared.secrets_cli.<name>``; a refusal is one line and its exit code."""
    from functools import partial

    from shared import secrets_cli

    settings = load_settings()
    try:
        code = _run(settings, partial(getattr(secrets_cli, name), settings, *args, **kwargs))
    except secrets_cli.Refused as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exc.code) from None
    raise typer.Exit(code or 0)


@variables_app.command("set")
def variables_set(
    key: str, value: str,
    description: Annotated[str | None, typer.Option(help="The variable's description.")] = None,
    as_json: Annotated[bool, typer.Option("-j", "--json", help="VALUE is JSON.")] = False,
) -> None:
    """Create or replace a variable (its value is stored encrypted)."""
    _secrets("variables_set", key, value, description, as_json)


@variables_app.command("get")
def variables_get(
    key: str,
    as_json: Annotated[bool, typer.Option("-j", "--json", help="Print the value as JSON.")] = False,
    default: Annotated[str | None, typer.Option(
        "-d", "--default", metavar="VAL", help="Printed if the variable does not exist.")] = None,
) -> None:
    """Print a variable's value (AIRFLOW_VAR_<KEY> first); exit 1 if it does not exist."""
    _secrets("variables_get", key, as_json, default)


@variables_app.command("list")
def variables_list(output: Output = "table", show_values: ShowValues = False,
                   hide_sensitive: HideSensitive = False) -> None:
    """List variables (keys only, unless --show-values)."""
    _secrets("variables_list", output, show_values, hide_sensitive)


@variables_app.command("delete")
def variables_delete(key: str) -> None:
    """Delete a variable; exit 1 if it does not exist."""
    _secrets("variables_delete", key)


@variables_app.command("import")
def variables_import(
    file: Annotated[Path, typer.Argument(help="A .env, .json, .yaml or .yml file.")],
    action: Annotated[Literal["overwrite", "fail", "skip"], typer.Option(
        "-a", "--action-on-existing-key", help="For a key that already exists.")] = "overwrite",
) -> None:
    """Import variables from a file, in Airflow's format."""
    _secrets("variables_import", file, action)


@variables_app.command("export")
def variables_export(
    file: Annotated[str, typer.Argument(help="The JSON file to write, or - for stdout.")],
) -> None:
    """Export every variable, decrypted, to a JSON file (mode 0600)."""
    _secrets("variables_export", file)


@connections_app.command("get")
def connections_get(conn_id: str, output: Output = "table") -> None:
    """Show a connection, password included (AIRFLOW_CONN_<ID> first); exit 1 if none."""
    _secrets("connections_get", conn_id, output)


@connections_app.command("list")
def connections_list(output: Output = "table", show_values: ShowValues = False,
                     hide_sensitive: HideSensitive = False) -> None:
    """List connections (ids and types only, unless --show-values)."""
    _secrets("connections_list", output, show_values, hide_sensitive)


def _conn_option(what: str):
    return typer.Option(help=f"Connection {what}.", show_default=False)


@connections_app.command("add")
def connections_add(
    conn_id: str,
    conn_uri: Annotated[str | None, _conn_option("URI, e.g. postgres://user:pw@host:5432/db")] = None,
    conn_json: Annotated[str | None, _conn_option("as a JSON object of its fields")] = None,
    conn_type: Annotated[str | None, _conn_option("type, without a URI or JSON")] = None,
    conn_description: Annotated[str | None, _conn_option("description")] = None,
    conn_host: Annotated[str | None, _conn_option("host")] = None,
    conn_login: Annotated[str | None, _conn_option("login")] = None,
    conn_password: Annotated[str | None, _conn_option("password")] = None,
    conn_schema: Annotated[str | None, _conn_option("schema")] = None,
    conn_port: Annotated[str | None, _conn_option("port")] = None,
    conn_extra: Annotated[str | None, _conn_option("extra, a JSON object")] = None,
) -> None:
    """Add a connection (a URI, JSON, or separate fields); exit 1 if the id exists."""
    _secrets("connections_add", conn_id, uri=conn_uri, json_text=conn_json, extra=conn_extra,
             description=conn_description, conn_type=conn_type, conn_host=conn_host,
             conn_login=conn_login, conn_password=conn_password, conn_schema=conn_schema,
             conn_port=conn_port)


@connections_app.command("delete")
def connections_delete(conn_id: str) -> None:
    """Delete a connection; exit 1 if it does not exist."""
    _secrets("connections_delete", conn_id)


@connections_app.command("import")
def connections_import(
    file: Annotated[Path, typer.Argument(help="A .env, .json, .yaml or .yml file.")],
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace connections that already exist.")] = False,
) -> None:
    """Import connections from a file, in Airflow's format."""
    _secrets("connections_import", file, overwrite)


@connections_app.command("export")
def connections_export(
    file: Annotated[str, typer.Argument(help="The file to write (mode 0600), or - for stdout.")],
    file_format: Annotated[Literal["json", "yaml", "env"] | None, typer.Option(
        "--file-format", help="Else the file's extension.")] = None,
    serialization_format: Annotated[Literal["json", "uri"] | None, typer.Option(
        "--serialization-format", help="For .env files: each connection as a URI "
        "(default) or JSON.")] = None,
) -> None:
    """Export every connection, decrypted, as .json, .yaml or .env."""
    _secrets("connections_export", file, file_format, serialization_format)


@app.command("rotate-fernet-key")
def rotate_fernet_key() -> None:
    """Encrypt stored secrets again with the first key of SLUICE_FERNET_KEY (NEW,OLD)."""
    _secrets("rotate_fernet_key")


# --- task instances ----------------------------------------------------------------------
tasks_app = typer.Typer(no_args_is_help=True, help="Inspect, clear and mark task instances.")
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("logs")
def tasks_logs(
    dag_id: str, run_id: str, task_id: str,
    map_index: Annotated[int, typer.Option("--map-index", help="A mapped instance's index.")] = -1,
    try_number: Annotated[int | None, typer.Option(
        "--try", help="Which try (default: the current one).")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Print new lines as they come, until the try ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Raw JSON lines.")] = False,
) -> None:
    """A try's log, from this host's logs folder or the worker that ran it."""
    from shared.tasklogs_cli import logs

    settings = load_settings()
    raise typer.Exit(_run(settings, logs, settings, dag_id, run_id, task_id, map_index,
                          try_number, follow, as_json))


# --- task operations: tasks clear / mark-success / mark-failed, runs cancel (shared.clear) ---
MapIndex = Annotated[int | None, typer.Option(
    "--map-index", help="One mapped instance (default: every instance of the task).")]
Downstream = Annotated[bool, typer.Option("--downstream", "-d", help="Its downstream tasks too.")]
Upstream = Annotated[bool, typer.Option("--upstream", "-u", help="Its upstream tasks too.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print what changed as JSON.")]


@tasks_app.command("clear")
def tasks_clear(dag_id: str, run_id: str, task_id: str, map_index: MapIndex = None,
                downstream: Downstream = False, upstream: Upstream = False,
                only_failed: Annotated[bool, typer.Option(
                    "--only-failed", help="Only failed and upstream_failed instances.")] = False,
                as_json: AsJson = False) -> None:
    """Clear task instances so they run again, tries kept (with their setups and teardowns).

    A finished run runs again; a running try is stopped and runs again as a new try."""
    from shared.tasks_cli import clear

    settings = load_settings()
    raise typer.Exit(_run(settings, clear, settings, dag_id, run_id, task_id, map_index,
                          downstream, upstream, only_failed, as_json))


def _mark(state: str, dag_id: str, run_id: str, task_id: str, map_index: int | None,
          downstream: bool, upstream: bool, as_json: bool) -> None:
    from shared.tasks_cli import mark

    settings = load_settings()
    raise typer.Exit(_run(settings, mark, settings, dag_id, run_id, task_id, state, map_index,
                          downstream, upstream, as_json))


@tasks_app.command("mark-success")
def tasks_mark_success(dag_id: str, run_id: str, task_id: str, map_index: MapIndex = None,
                       downstream: Downstream = False, upstream: Upstream = False,
                       as_json: AsJson = False) -> None:
    """Mark task instances success (a running try is stopped); failed ones downstream run again."""
    _mark("success", dag_id, run_id, task_id, map_index, downstream, upstream, as_json)


@tasks_app.command("mark-failed")
def tasks_mark_failed(dag_id: str, run_id: str, task_id: str, map_index: MapIndex = None,
                      downstream: Downstream = False, upstream: Upstream = False,
                      as_json: AsJson = False) -> None:
    """Mark task instances failed (a running try is stopped)."""
    _mark("failed", dag_id, run_id, task_id, map_index, downstream, upstream, as_json)


@runs_app.command("cancel", cls=RunCommand)
def runs_cancel(first: FirstRunArg, second: SecondRunArg = None, as_json: AsJson = False) -> None:
    """Fail a run now (Airflow's "mark run failed"): running tries are stopped, the rest skipped."""
    from shared.runs_cli import cancel

    settings = load_settings()
    raise typer.Exit(_run(settings, cancel, settings, *_run_ref(first, second), as_json))
# --- (end of task operations)


def main() -> None:
    from shared.config import keep_files_private
    from shared.daemon import protect_process

    keep_files_private()  # umask 077 for this process and every one it starts
    protect_process()  # no task of the same user reads its environment or memory
    app(prog_name="sluice")


if __name__ == "__main__":
    sys.exit(main())
