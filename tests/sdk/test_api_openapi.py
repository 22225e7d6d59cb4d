"""Every route ``sluice api-server`` serves answers what Airflow 3.3's OpenAPI document says.

Airflow's document for ``/api/v2`` ships in ``apache-airflow-core``, one of Sluice's dependencies.
Real daemons (Task SDK runtime) run an unmodified Airflow DAG file; each call's
JSON is validated against the component schema Airflow's document gives for
that path, method and status; and each path, method and query parameter of
Sluice's own ``/openapi.json`` is one of Airflow's.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime
from importlib import resources

import anyio
import jsonschema
import pytest
import yaml

from tests.api_server import call, login, start_api_server
from tests.cluster import own_cluster, wait_for

pytestmark = pytest.mark.timeout(180)

DAG = '''
from datetime import datetime

from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2026, 1, 1), tags=["api"], params={"n": 3})
def api_shapes():
    @task
    def numbers(**context):
        return list(range(context["dag_run"].conf.get("n", 3)))

    @task(map_index_template="{{ task.op_kwargs['x'] }}")
    def double(x):
        print(f"doubling {x}")
        return x * 2

    double.expand(x=numbers())


api_shapes()
'''


def airflow_document() -> dict:
    text = resources.files("airflow.api_fastapi.core_api.openapi").joinpath(
        "v2-rest-api-generated.yaml").read_text()
    return yaml.safe_load(text)


FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value) -> bool:
    return not isinstance(value, str) or bool(datetime.fromisoformat(value.replace("Z", "+00:00")))


@FORMATS.checks("uuid", raises=ValueError)
def _uuid(value) -> bool:
    return not isinstance(value, str) or bool(uuid.UUID(value))


class Airflow:
    """Validates answers against Airflow's document."""

    def __init__(self) -> None:
        self.doc = airflow_document()
        self.checked: set[tuple[str, str]] = set()
        # Airflow's clear dry run lists TaskInstanceResponse | NewTaskResponse as ``oneOf``,
        # but every TaskInstanceResponse (Airflow's own too) also matches NewTaskResponse
        # (task_id, task_display_name, extra fields allowed): read it as the ``anyOf`` it is.
        items = self.doc["components"]["schemas"]["ClearTaskInstanceCollectionResponse"][
            "properties"]["task_instances"]["items"]
        items["anyOf"] = items.pop("oneOf")

    def schema(self, method: str, template: str, status: int) -> dict:
        op = self.doc["paths"][template][method.lower()]
        return op["responses"][str(status)]["content"]["application/json"]["schema"]

    def validate(self, method: str, template: str, status: int, body) -> None:
        schema = {**self.schema(method, template, status), "components": self.doc["components"]}
        jsonschema.Draft202012Validator(schema, format_checker=FORMATS).validate(body)
        self.checked.add((method, template))


@pytest.fixture(scope="module")
async def served(services, template_db, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    async with own_cluster(services, template_db, root, name="api") as cluster:
        cluster.write_dag("api_shapes.py", DAG)
        cluster.write_dag("broken.py", "from airflow.sdk import dag\nimport nowhere_to_be_found\n")
        cluster.start("scheduler")
        cluster.start("worker")
        try:
            base = await start_api_server(cluster, {"admin": ("admin", "pw")})
            await cluster.wait_dag("api_shapes", timeout=60, allow_errors=True)
            yield cluster, base, await anyio.to_thread.run_sync(login, base, "admin", "pw")
        finally:
            cluster.stop_all()
            shutil.rmtree(root / "home" / "logs", ignore_errors=True)


async def test_each_route_answers_airflows_schema(served):
    cluster, base, token = served
    airflow = Airflow()

    async def check(method: str, template: str, path: str, body=None, expect: int = 200,
                    **params):
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"{base}/api/v2{path}" + (f"?{query}" if query else "")
        status, answer = await anyio.to_thread.run_sync(
            lambda: call(url, method, body, token=token))
        assert status == expect, (method, path, status, answer)
        if status != 204:
            airflow.validate(method, "/api/v2" + template, status, answer)
        return answer

    D, R, TI = "/dags/{dag_id}", "/dags/{dag_id}/dagRuns/{dag_run_id}", "/taskInstances/{task_id}"
    await check("GET", "/dags", "/dags", tags="api")
    await check("GET", D, "/dags/api_shapes")
    await check("GET", D + "/details", "/dags/api_shapes/details")
    await check("PATCH", D, "/dags/api_shapes", {"is_paused": False})
    async def import_error():
        _, found = await anyio.to_thread.run_sync(
            lambda: call(f"{base}/api/v2/importErrors", token=token))
        return found["total_entries"]

    await wait_for(import_error, 60, "broken.py's import error")
    errors = await check("GET", "/importErrors", "/importErrors")
    assert errors["total_entries"] == 1 and "nowhere_to_be_found" in errors["import_errors"][0][
        "stack_trace"]
    await check("GET", "/importErrors/{import_error_id}",
                f"/importErrors/{errors['import_errors'][0]['import_error_id']}")

    run = await check("POST", "/dags/{dag_id}/dagRuns", "/dags/api_shapes/dagRuns",
                      {"logical_date": None, "conf": {"n": 3}, "note": "from the API"})
    rid = run["dag_run_id"]
    run_path = f"/dags/api_shapes/dagRuns/{rid}"

    async def finished():
        _, found = await anyio.to_thread.run_sync(
            lambda: call(f"{base}/api/v2{run_path}", token=token))
        return found if found["state"] in ("success", "failed") else None

    assert (await wait_for(finished, 90, "the run"))["state"] == "success", cluster.log("worker")
    await check("GET", R, run_path)
    await check("GET", "/dags/{dag_id}/dagRuns", "/dags/api_shapes/dagRuns", order_by="-start_date")
    await check("GET", "/dags/{dag_id}/dagRuns", "/dags/~/dagRuns", state="success")
    await check("GET", R + "/taskInstances", run_path + "/taskInstances")
    await check("GET", R + "/taskInstances", "/dags/~/dagRuns/~/taskInstances", state="success")
    mapped = await check("GET", R + TI + "/listMapped", run_path + "/taskInstances/double/listMapped")
    assert [t["rendered_map_index"] for t in mapped["task_instances"]] == ["0", "1", "2"]
    await check("GET", R + TI, run_path + "/taskInstances/numbers")
    await check("GET", R + TI + "/{map_index}", run_path + "/taskInstances/double/1")
    await check("GET", R + TI + "/tries", run_path + "/taskInstances/numbers/tries")
    await check("GET", R + TI + "/{map_index}/tries", run_path + "/taskInstances/double/2/tries")
    await check("GET", R + TI + "/tries/{task_try_number}", run_path + "/taskInstances/numbers/tries/1")
    await check("GET", R + TI + "/{map_index}/tries/{task_try_number}",
                run_path + "/taskInstances/double/0/tries/1")
    log = await check("GET", R + TI + "/logs/{try_number}", run_path + "/taskInstances/double/logs/1",
                      map_index=2)
    assert any("doubling 2" in m["event"] for m in log["content"]), log
    await check("GET", R + TI + "/xcomEntries", run_path + "/taskInstances/double/xcomEntries")
    xcom = await check("GET", R + TI + "/xcomEntries/{xcom_key}",
                       run_path + "/taskInstances/double/xcomEntries/return_value", map_index=2,
                       deserialize="true")
    assert xcom["value"] == 4

    await check("POST", R + "/clear", run_path + "/clear", {"dry_run": True})
    await check("POST", "/dags/{dag_id}/clearTaskInstances", "/dags/api_shapes/clearTaskInstances",
                {"dry_run": True, "dag_run_id": rid, "only_failed": False})
    marked = await check("PATCH", R + TI + "/{map_index}", run_path + "/taskInstances/double/1",
                         {"new_state": "failed"})
    assert [(t["map_index"], t["state"]) for t in marked["task_instances"]] == [(1, "failed")]
    await check("PATCH", R + TI, run_path + "/taskInstances/double", {"new_state": "success"},
                map_index=1)
    await check("PATCH", R, run_path, {"state": "failed", "note": "marked"})
    await check("POST", R + "/clear", run_path + "/clear", {"dry_run": False, "only_failed": True})

    await check("POST", "/variables", "/variables", {"key": "k", "value": {"a": 1}}, expect=201)
    await check("GET", "/variables", "/variables")
    await check("GET", "/variables/{variable_key}", "/variables/k")
    await check("PATCH", "/variables/{variable_key}", "/variables/k", {"key": "k", "value": "v2"})
    await check("DELETE", "/variables/{variable_key}", "/variables/k", expect=204)
    conn = {"connection_id": "pg", "conn_type": "postgres", "host": "db", "login": "u",
            "password": "p", "port": 5432, "extra": '{"sslmode": "require"}'}
    made = await check("POST", "/connections", "/connections", conn, expect=201)
    assert made["password"] == "***"
    await check("GET", "/connections", "/connections")
    await check("GET", "/connections/{connection_id}", "/connections/pg")
    await check("PATCH", "/connections/{connection_id}", "/connections/pg",
                {"connection_id": "pg", "conn_type": "postgres", "host": "db2"})
    await check("DELETE", "/connections/{connection_id}", "/connections/pg", expect=204)
    await check("POST", "/pools", "/pools", {"name": "p", "slots": 2}, expect=201)
    await check("GET", "/pools", "/pools")
    await check("GET", "/pools/{pool_name}", "/pools/default_pool")
    await check("PATCH", "/pools/{pool_name}", "/pools/p", {"slots": 3})
    await check("DELETE", "/pools/{pool_name}", "/pools/p", expect=204)
    await check("GET", "/monitor/health", "/monitor/health")
    await check("GET", "/version", "/version")
    await check("GET", D, "/dags/nope", expect=404)  # an error answers Airflow's shape too
    assert len(airflow.checked) >= 39  # every route but the DELETEs (204, no body)


async def test_sluices_paths_methods_and_parameters_are_airflows(served):
    _, base, _ = served
    status, ours = await anyio.to_thread.run_sync(lambda: call(f"{base}/openapi.json"))
    assert status == 200
    theirs = airflow_document()["paths"]
    served_paths = [p for p in ours["paths"] if p.startswith("/api/v2/")]
    assert len(served_paths) >= 25
    for path in served_paths:
        assert path in theirs, path
        for method, op in ours["paths"][path].items():
            assert method in theirs[path], (method, path)
            their_params = {p["name"] for p in theirs[path][method].get("parameters", [])}
            for param in op.get("parameters", []):
                assert param["name"] in their_params, (method, path, param["name"])
