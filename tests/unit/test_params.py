"""A run's conf against its DAG's ``Param`` schemas: refused exactly when Airflow refuses it.

The oracle is the Task SDK itself: the DAG's ``ParamsDict`` updated with the
conf, then validated, is what Airflow's ``create_dagrun`` and the task runner's
``process_params`` do. Sluice checks the conf against the params the parse
stored (``DagSpec.params`` / ``param_schemas``), with one line naming the DAG
and the param.
"""

from __future__ import annotations

import copy
from datetime import datetime

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param
from airflow.sdk.exceptions import ParamValidationError

from scheduler.parsing import parse_file, store_result
from scheduler.runs import create_manual_run
from shared.airflow_spec import dag_spec
from shared.db import create_pool
from shared.params import ParamsError, check_conf, check_run_conf, schema_problem

pytestmark = pytest.mark.timeout(120)


def _dag() -> DAG:
    with DAG("reports", schedule=None, start_date=datetime(2026, 1, 1), params={
        "n": Param(5, type="integer", minimum=1, maximum=10),
        "mode": Param("fast", enum=["fast", "full"]),
        "day": Param("2026-01-01", type="string", format="date"),
        "who": Param(type="string", description="no default: the conf must give it"),
        "tags": Param(["a"], type="array", items={"type": "string"}),
        "loose": 3,
        "nullable": Param(None, type=["null", "integer"]),
    }) as dag:
        EmptyOperator(task_id="t")
    return dag


def _airflow_refuses(dag: DAG, conf: dict) -> bool:
    params = copy.deepcopy(dag.params)
    try:
        for key, value in conf.items():
            params[key] = value
        params.validate()
    except ParamValidationError:
        return True
    return False


def _sluice(dag: DAG, conf: dict) -> str | None:
    spec = dag_spec(dag)
    try:
        check_conf(dag.dag_id, spec["params"], spec["param_schemas"], conf)
    except ParamsError as exc:
        return str(exc)
    return None


CASES = {
    "every default and the required one": ({"who": "ana"}, None),
    "the required param missing": ({}, "'who': no value passed"),
    "a wrong type": ({"who": "ana", "n": "5"}, "'n': '5' is not of type 'integer'"),
    "under the minimum": ({"who": "ana", "n": 0}, "'n': 0 is less than the minimum of 1"),
    "over the maximum": ({"who": "ana", "n": 11}, "'n': 11 is greater than the maximum of 10"),
    "not in the enum": ({"who": "ana", "mode": "slow"}, "'mode': 'slow' is not one of"),
    "a bad date format": ({"who": "ana", "day": "01/02/2026"}, "'day': '01/02/2026' is not a 'date'"),
    "a bad array item": ({"who": "ana", "tags": ["a", 2]}, "'tags': [1]: 2 is not of type 'string'"),
    "an undeclared key": ({"who": "ana", "extra": {"x": 1}}, None),
    "a plain param takes anything": ({"who": "ana", "loose": "text"}, None),
    "null where null is allowed": ({"who": "ana", "nullable": None}, None),
    "the required one as null": ({"who": None}, "'who': None is not of type 'string'"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_conf_is_refused_exactly_when_airflow_refuses_it_with_one_line(case):
    conf, expected = CASES[case]
    dag = _dag()
    got = _sluice(dag, conf)
    assert (got is not None) == _airflow_refuses(dag, conf)
    if expected is None:
        assert got is None
    else:
        assert got.startswith(f"DAG 'reports': invalid input for param {expected.split(':')[0]}:")
        assert expected.split(": ", 1)[1] in got and "\n" not in got


def test_defaults_that_do_not_validate_refuse_a_trigger_without_conf():
    with DAG("bad_default", schedule=None, params={"n": Param(50, type="integer", maximum=10)}) as dag:
        EmptyOperator(task_id="t")
    assert _airflow_refuses(dag, {})
    assert _sluice(dag, {}) == ("DAG 'bad_default': invalid input for param 'n': "
                                "50 is greater than the maximum of 10")
    assert _sluice(dag, {"n": 3}) is None


def test_a_scheduled_dag_whose_defaults_do_not_validate_does_not_load():
    """Airflow refuses it when the DAG is built: the parse records an import error."""
    with pytest.raises(ValueError, match="is not allowed to define a Schedule"):
        DAG("scheduled_bad", schedule="@daily", start_date=datetime(2026, 1, 1),
            params={"who": Param(type="string")})


async def test_a_scheduled_dag_whose_defaults_do_not_validate_is_an_import_error(tmp_path):
    path = tmp_path / "scheduled_bad.py"
    path.write_text(
        "from datetime import datetime\n"
        "from airflow.sdk import DAG, Param\n"
        "from airflow.providers.standard.operators.empty import EmptyOperator\n"
        "with DAG('scheduled_bad', schedule='@daily', start_date=datetime(2026, 1, 1),\n"
        "         params={'n': Param(50, type='integer', maximum=10)}):\n"
        "    EmptyOperator(task_id='t')\n")
    result = await parse_file(path, tmp_path, timeout_s=60)
    assert result["dags"] == []
    assert "Dag 'scheduled_bad' is not allowed to define a Schedule" in result["error"]


def test_a_schema_that_is_not_json_schema_is_said_so():
    assert schema_problem(1, {"type": "integr"}).startswith("its schema is not valid JSON Schema")


async def test_create_manual_run_refuses_before_writing(tmp_path, db_url, db):
    path = tmp_path / "reports.py"
    path.write_text(
        "from airflow.sdk import DAG, Param\n"
        "from airflow.providers.standard.operators.empty import EmptyOperator\n"
        "with DAG('reports', schedule=None,\n"
        "         params={'n': Param(5, type='integer', minimum=1)}):\n"
        "    EmptyOperator(task_id='t')\n")
    pool = await create_pool(db_url, min_size=1, max_size=1)
    try:
        assert await store_result(pool, await parse_file(path, tmp_path, timeout_s=60)) is True
        async with pool.acquire() as conn:
            with pytest.raises(ParamsError, match="^DAG 'reports': invalid input for param 'n': "
                                                  "0 is less than the minimum of 1$"):
                await create_manual_run(conn, "reports", {"n": 0})
            assert await conn.fetchval("SELECT count(*) FROM dag_run") == 0
            _, run_id = await create_manual_run(conn, "reports", {"n": 2})
            await check_run_conf(conn, "unknown_dag", {"n": 0})  # the caller says "not found"
    finally:
        await pool.close()
    assert await db.fetchval("SELECT conf FROM dag_run WHERE run_id = $1", run_id) == {"n": 2}
