"""Mapping at parse time: Airflow's validation messages, index arithmetic, lazy XComArg ops."""

from __future__ import annotations

from datetime import datetime

import pytest

from shared.sdk import DAG, AirflowSkipException, BashOperator, PythonOperator, dag, task
from shared.sdk.mapped import DictOfListsExpandInput, ListOfDictsExpandInput, MappedOperator
from shared.sdk.xcom_arg import ConcatResult, MapResult, ZipResult
from shared.serialization import serialize_dag


class Values:
    """A resolver returning fixed upstream values."""

    def __init__(self, **values):
        self.values = values

    def pull(self, task_id, key):
        return self.values[task_id]


@pytest.fixture
def in_dag():
    with DAG("d", start_date=datetime(2026, 1, 1)) as d:
        yield d


@task
def show(a, b=None):
    return (a, b)


@task
def gen():
    return [1, 2]


@pytest.mark.parametrize("call,exc,message", [
    (lambda: BashOperator.partial(task_id="t").expand(), TypeError, "no arguments to expand against"),
    (lambda: BashOperator.partial(task_id="t").expand(bash_command=1), ValueError,
     "BashOperator.expand() got an unexpected type 'int' for keyword argument bash_command"),
    (lambda: BashOperator.partial(task_id="t").expand(bash_command="echo"), ValueError,
     "BashOperator.expand() got an unexpected type 'str' for keyword argument bash_command"),
    (lambda: BashOperator.partial(task_id="t").expand(file=[1]), TypeError,
     "BashOperator.expand() got an unexpected keyword argument 'file'"),
    (lambda: BashOperator.partial(task_id="t", foo=1, bar=2), TypeError,
     "BashOperator.partial() got unexpected keyword arguments 'foo', 'bar'"),
    (lambda: BashOperator.partial(task_id="t").expand(task_id=["a"]), TypeError,
     "unmappable or already specified argument: task_id"),
    (lambda: BashOperator.partial(task_id="t").expand(pool=["a"], queue=["b"]), TypeError,
     "unmappable or already specified arguments: pool, queue"),
    (lambda: BashOperator.partial(task_id="t", env={}).expand(env=[{}]), TypeError,
     "unmappable or already specified argument: env"),
    (lambda: show.expand(c=[1]), TypeError, "expand() got an unexpected keyword argument 'c'"),
    (lambda: show.expand(a="abc"), ValueError,
     "expand() got an unexpected type 'str' for keyword argument 'a'"),
    (lambda: show.partial(a=1).expand(a=[1]), TypeError, "mapping already partial argument: a"),
    (lambda: show.partial(a=1).partial(a=2), TypeError, "duplicate partial argument: a"),
    (lambda: show.expand_kwargs(3), TypeError, "expected XComArg or list[dict], not int"),
    (lambda: gen().map(show), ValueError,
     "map() argument must be a plain function, not a @task operator"),
    (lambda: show.expand(a=gen()["other"]), ValueError, "cannot map over XCom with custom key 'other'"),
    (lambda: show.override(trigger_rule="always").expand(a=gen()), ValueError,
     "Task-generated mapping within a task using 'expand' is not allowed with trigger rule 'always'."),
])
def test_parse_time_errors(in_dag, call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


def test_context_names_cannot_be_mapped(in_dag):
    @task
    def uses(run_id=None, x=None):
        return x

    with pytest.raises(ValueError, match="cannot call expand\\(\\) on task context variable 'run_id'"):
        uses.expand(run_id=["a"])


def test_cross_product_last_kwarg_fastest():
    expand = DictOfListsExpandInput({"a": [2, 4, 8], "b": [5, 10]})
    got = [tuple(expand.resolve(i, Values())[0].values()) for i in range(6)]
    assert got == [(2, 5), (2, 10), (4, 5), (4, 10), (8, 5), (8, 10)]


def test_dicts_map_to_pairs_in_insertion_order():
    expand = DictOfListsExpandInput({"kv": {"z": 1, "a": 2}})
    assert [expand.resolve(i, Values())[0]["kv"] for i in range(2)] == [("z", 1), ("a", 2)]


def test_expand_kwargs_checks_elements():
    bad = ListOfDictsExpandInput([1, 2])
    with pytest.raises(ValueError, match=r"expand_kwargs\(\) expects a list\[dict\], not list\[int\]"):
        bad.resolve(0, Values())
    keys = ListOfDictsExpandInput([{1: "x"}])
    with pytest.raises(ValueError, match="input dict keys must all be str, but 1 is of type int"):
        keys.resolve(0, Values())


def test_map_zip_concat_are_lazy_and_consistent_over_dicts():
    seen = []
    mapped = MapResult([1, 2, 3], [lambda x: seen.append(x) or x * 2])
    assert len(mapped) == 3 and seen == []
    assert mapped[-1] == 6 and seen == [3]
    assert list(ZipResult([[1, 2, 3], ["a", "b"]], fillvalue=None)) == [(1, "a"), (2, "b"), (3, None)]
    assert len(ZipResult([[1, 2, 3], ["a", "b"]], fillvalue=object())) == 3
    from shared.sdk.xcom_arg import NOTSET, as_sequence

    assert list(ZipResult([[1, 2, 3], ["a", "b"]], NOTSET)) == [(1, "a"), (2, "b")]
    assert list(ConcatResult([["a", "b", "c"], as_sequence({"k": 1}, "concat")])) == ["a", "b", "c", ("k", 1)]


def test_map_skip_raises_from_the_element():
    def skip_c(x):
        if x == "c":
            raise AirflowSkipException("no c")
        return x.upper()

    result = MapResult(["a", "c"], [skip_c])
    assert result[0] == "A"
    with pytest.raises(AirflowSkipException):
        result[1]


def test_serialized_lengths_and_dependencies():
    @dag(start_date=datetime(2026, 1, 1))
    def flow():
        nums = gen()
        show.partial(b=1).expand(a=nums)
        show.expand(a=[1, 2, 3], b={"x": 1, "y": 2})
        show.expand_kwargs([{"a": 1}, {"a": 2}])
        show.expand(a=nums.zip(nums, fillvalue=0).map(str).concat(nums))
        PythonOperator.partial(task_id="classic", python_callable=print).expand(op_args=[[1], [2]])

    d = flow()
    tasks = {t["task_id"]: t for t in serialize_dag(d)["tasks"]}
    assert tasks["show"]["mapped"] == {"kind": "dict_of_lists",
                                       "inputs": [{"key": "a", "xcom": {"op": "plain", "task_id": "gen", "key": "return_value"}}]}
    assert tasks["show"]["upstream"] == ["gen"]
    assert tasks["show__1"]["mapped"]["inputs"] == [{"key": "a", "length": 3}, {"key": "b", "length": 2}]
    assert tasks["show__2"]["mapped"] == {"kind": "list_of_dicts", "length": 2}
    assert tasks["show__3"]["mapped"]["inputs"][0]["xcom"]["op"] == "concat"
    assert tasks["classic"]["operator"] == "PythonOperator"
    assert isinstance(d.get_task("classic"), MappedOperator)


def test_unmap_runs_init_with_the_index_values_and_templates(in_dag):
    op = BashOperator.partial(task_id="b", env={"X": "{{ run_id }}"}).expand(
        bash_command=["echo {{ run_id }}", "echo two"])
    real = op.unmap(0, Values(), {"run_id": "r1", "params": {}})
    assert (type(real), real.task_id, real.bash_command, real.env) == (BashOperator, "b", "echo r1", {"X": "r1"})
    upstream = BashOperator.partial(task_id="c").expand(bash_command=gen())
    assert upstream.unmap(1, Values(gen=["echo {{ run_id }}", "x"]), {"run_id": "r1"}).bash_command == "x"
    assert upstream.unmap(0, Values(gen=["echo {{ run_id }}", "x"]), {"run_id": "r1"}).bash_command == "echo {{ run_id }}"
