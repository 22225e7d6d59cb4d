"""The Kubernetes execution mode's pure parts: routing, the pod a try runs in, its outcome, its log.

The cluster itself is exercised end to end in tests/k8s/test_execution_mode_e2e.py;
here the pod statuses are Kubernetes' own JSON, as the API server sends them.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from airflow.sdk import DAG, task
from kubernetes.client import models as k8s

from shared.airflow_spec import dag_spec
from shared.airflow_spec.executors import is_kubernetes
from shared.config import Settings
from worker.kubernetes import (
    KubernetesConfigError,
    PodFactory,
    TryLog,
    _describe_pod,
    _termination_result,
    label_value,
    pod_name,
)
from worker.pod_task import MESSAGE_LIMIT, PodTry, termination_message

REQ = {"ti_uuid": "0191a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b", "token": "tok.sig",
       "api_url": "http://10.0.0.5:8794/", "dag_id": "Train_Models", "run_id": "manual__1",
       "task_id": "group.fit_model", "map_index": 7, "try_number": 2,
       "fileloc": "/srv/dags/ml/train.py", "log_path": "/x.log", "queue": "kubernetes"}


def settings(tmp_path: Path, **kw) -> Settings:
    return Settings(home=tmp_path, dags_folder=Path("/srv/dags"), **kw)


# --- routing ------------------------------------------------------------------------------
@pytest.mark.parametrize("name,expected", [
    ("KubernetesExecutor", True), ("kubernetes", True),
    ("airflow.providers.cncf.kubernetes.executors.kubernetes_executor.KubernetesExecutor", True),
    ("k8s:airflow.providers.cncf.kubernetes.executors.kubernetes_executor.KubernetesExecutor", True),
    ("CeleryExecutor", False), ("LocalExecutor", False), (None, False), ("", False)])
def test_which_executor_names_are_kubernetes(name, expected):
    assert is_kubernetes(name) is expected


def test_a_kubernetes_executor_task_goes_to_the_kubernetes_queue_with_its_pod_override():
    override = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[k8s.V1Container(
        name="base", resources=k8s.V1ResourceRequirements(limits={"memory": "2Gi"}))]))
    with DAG("d", schedule=None, start_date=datetime(2026, 1, 1)) as d:
        @task(executor="KubernetesExecutor", executor_config={"pod_override": override})
        def in_pod():
            pass

        @task(queue="gpu")
        def local():
            pass

        @task(executor_config={"pod_override": {"metadata": {"labels": {"a": "b"}}}})
        def as_dict():
            pass

        in_pod()
        local()
        as_dict()
    tasks = {t["task_id"]: t for t in dag_spec(d)["tasks"]}
    assert (tasks["in_pod"]["queue"], tasks["local"]["queue"]) == ("kubernetes", "gpu")
    assert tasks["in_pod"]["pod_override"] == {"spec": {"containers": [
        {"name": "base", "resources": {"limits": {"memory": "2Gi"}}}]}}
    assert tasks["as_dict"]["pod_override"] == {"metadata": {"labels": {"a": "b"}}}
    assert tasks["local"]["pod_override"] is None


def test_a_pod_override_of_another_type_is_the_dags_error():
    from shared.airflow_spec.errors import SpecError

    with DAG("d", schedule=None, start_date=datetime(2026, 1, 1)) as d:
        @task(executor_config={"pod_override": "big"})
        def t():
            pass

        t()
    with pytest.raises(SpecError, match=r"DAG 'd': task 't': executor_config\['pod_override'\]"):
        dag_spec(d)


# --- the pod ------------------------------------------------------------------------------
def test_pod_names_are_dns_labels_naming_the_try():
    name = pod_name(REQ)
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name) and len(name) <= 63, name
    assert name.startswith("sluice-train-models-group-fit-model-7-2-")
    long = pod_name({**REQ, "dag_id": "x" * 200, "task_id": "_" * 50, "map_index": -1})
    assert len(long) <= 63 and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", long), long
    assert pod_name(REQ) != name  # a handed-back try's next pod never collides with the last


def test_label_values_follow_airflows_rule():
    assert label_value("train_models.v2") == "train_models.v2"
    odd = label_value("group.fit model!")
    assert len(odd) <= 63 and re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", odd)
    assert label_value("x" * 80) != label_value("x" * 81)


def template(tmp_path: Path, pod: dict) -> Path:
    path = tmp_path / "pod.yaml"
    path.write_text(json.dumps(pod))
    return path


def test_the_pod_is_defaults_then_template_then_override_then_the_try(tmp_path):
    tpl = template(tmp_path, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"labels": {"app": "sluice"}},
        "spec": {"serviceAccountName": "runner", "containers": [{
            "name": "base", "image": "registry/dags:42",
            "env": [{"name": "STAGE", "value": "prod"}]}]}})
    factory = PodFactory(settings(tmp_path, kubernetes_pod_template=tpl,
                                  kubernetes_dags_folder="/opt/airflow/dags",
                                  kubernetes_namespace="jobs"), "host:1")
    override = {"metadata": {"labels": {"team": "ml"}}, "spec": {"containers": [{
        "name": "base", "resources": {"limits": {"nvidia.com/gpu": "1"}},
        "env": [{"name": "TEAM", "value": "ml"}]}]}}
    pod = factory.build(REQ, "sluice-p", override, timeout_s=600)
    meta, spec = pod["metadata"], pod["spec"]
    assert (meta["name"], meta["namespace"]) == ("sluice-p", "jobs")
    assert meta["labels"]["app"] == "sluice" and meta["labels"]["team"] == "ml"
    assert meta["labels"]["sluice.dev/try"] == REQ["ti_uuid"]
    assert (meta["labels"]["map_index"], meta["labels"]["try_number"]) == ("7", "2")
    assert meta["annotations"]["run_id"] == "manual__1"
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "runner"
    assert spec["automountServiceAccountToken"] is False  # unless a template asks for it
    assert spec["activeDeadlineSeconds"] == 600 + 300 + 60  # timeout, pending timeout, grace
    (base,) = spec["containers"]
    assert base["image"] == "registry/dags:42"
    assert base["command"] == ["python", "-m", "worker.pod_task"]
    assert base["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    env = {e["name"]: e.get("value") for e in base["env"]}
    assert (env["STAGE"], env["TEAM"]) == ("prod", "ml")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"
    pod_try = PodTry.model_validate_json(env["SLUICE_POD_TRY"])
    # the DAG file where the pods keep the DAGs folder; the try's token, nothing else of ours
    assert pod_try.fileloc == "/opt/airflow/dags/ml/train.py"
    assert (pod_try.token, pod_try.api_url) == ("tok.sig", "http://10.0.0.5:8794/")
    assert "log_path" not in env["SLUICE_POD_TRY"]


def test_without_a_template_the_image_setting_is_the_pods_and_one_is_required(tmp_path):
    factory = PodFactory(settings(tmp_path, kubernetes_image="py:3.11"), "w")
    pod = factory.build({**REQ, "map_index": -1}, "p", None, None)
    assert pod["spec"]["containers"][0]["image"] == "py:3.11"
    assert "activeDeadlineSeconds" not in pod["spec"]
    assert "map_index" not in pod["metadata"]["labels"]  # "-1" is no label value
    with pytest.raises(KubernetesConfigError, match="SLUICE_KUBERNETES_IMAGE"):
        PodFactory(settings(tmp_path), "w")
    with pytest.raises(KubernetesConfigError, match="no file"):
        PodFactory(settings(tmp_path, kubernetes_pod_template=tmp_path / "nope.yaml"), "w")


# --- the outcome --------------------------------------------------------------------------
def oom_killed_pod() -> dict:
    """A pod whose container the kernel killed, as the API server reports it."""
    return {"metadata": {"name": "sluice-p"}, "status": {
        "phase": "Failed", "containerStatuses": [{"name": "base", "state": {"terminated": {
            "exitCode": 137, "reason": "OOMKilled",
            "startedAt": "2026-12-03T10:00:00Z", "finishedAt": "2026-12-03T10:00:09Z"}}}]}}


def test_what_ended_a_pod_is_described():
    assert _describe_pod(oom_killed_pod()) == " (OOMKilled, exit code 137)"
    evicted = {"status": {"phase": "Failed", "reason": "Evicted",
                          "message": "The node was low on resource: memory."}}
    assert _describe_pod(evicted) == " (Evicted: The node was low on resource: memory.)"
    assert _describe_pod(None) == "" and _describe_pod({"status": {"phase": "Pending"}}) == ""


def test_the_termination_message_carries_the_result_within_its_limit():
    result = {"state": "failed", "reported": True, "error": "ValueError: " + "x" * 9000,
              "wall_s": 1.5, "cpu_s": 0.4}
    text = termination_message(result)
    assert len(text.encode()) <= MESSAGE_LIMIT
    back = _termination_result(text)
    assert (back["state"], back["reported"], back["cpu_s"]) == ("failed", True, 0.4)
    assert back["error"].startswith("ValueError: xxx") and back["error"].endswith("[...]")
    for bad in (None, "", "not json", '{"state": 3, "reported": true}', '{"state": "success"}',
                "[1]"):
        assert _termination_result(bad) is None, bad


def test_the_pods_output_becomes_the_tries_log_lines(tmp_path):
    path = tmp_path / "logs" / "attempt=1.log"
    log = TryLog(str(path))
    log.line("info", "Pod sluice-p created in namespace default")
    log.raw(b'{"timestamp": "t", "level": "info", "event": "hello", "logger": "task"}\n'
            b"Traceback (most recent call last):\n  Fi")
    log.raw(b'le "x.py", line 1\n{"not json\n')
    log.raw(b"no newline at the end")
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [ln["event"] for ln in lines] == [
        "Pod sluice-p created in namespace default", "hello", "Traceback (most recent call last):",
        '  File "x.py", line 1', '{"not json', "no newline at the end"]
    assert [ln["logger"] for ln in lines][2:] == ["task.stderr"] * 4
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o077 == 0


# --- following pods: the API server's answers as recorded ------------------------------------
class Answer:
    """A raw (``_preload_content=False``) answer of the API server."""

    def __init__(self, status: int, body: dict):
        self.status, self._body = status, json.dumps(body).encode()

    async def read(self) -> bytes:
        return self._body


class RecordedApi:
    """CoreV1Api's list call, answering what was recorded from a real API server."""

    def __init__(self, *answers: Answer):
        self.answers = list(answers)
        self.deleted: list[str] = []

    async def list_namespaced_pod(self, namespace, **kw):
        return self.answers.pop(0)

    async def delete_namespaced_pod(self, name, namespace, **kw):
        self.deleted.append(name)


FORBIDDEN = Answer(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "message": 'pods is forbidden: User "system:serviceaccount:jobs:sluice" '
                                    'cannot list resource "pods" in API group "" in the '
                                    'namespace "jobs"', "reason": "Forbidden", "code": 403})


def pod_list(*pods: dict, version: str = "4711") -> Answer:
    return Answer(200, {"kind": "PodList", "metadata": {"resourceVersion": version},
                        "items": list(pods)})


def running_pod(name: str, try_id: str = REQ["ti_uuid"], age_s: float = 3600,
                phase: str = "Running", deleting: bool = False) -> dict:
    created = datetime.fromtimestamp(time.time() - age_s, UTC).isoformat().replace("+00:00", "Z")
    meta = {"name": name, "creationTimestamp": created, "resourceVersion": "1",
            "labels": {"sluice.dev/try": try_id}}
    if deleting:
        meta["deletionTimestamp"] = created
    return {"metadata": meta, "status": {"phase": phase, "containerStatuses": [
        {"name": "base", "state": {"running": {"startedAt": created}}}]}}


async def test_an_error_answer_to_the_watchs_list_marks_no_pod_gone():
    from worker.kubernetes import KubernetesApiError, PodWatch

    watch = PodWatch(RecordedApi(FORBIDDEN), "jobs", "w")
    watch.follow("sluice-p")
    watch.created("sluice-p")
    with pytest.raises(KubernetesApiError, match=r"^listing pods in namespace jobs: 403 "
                                                 r"Forbidden: pods is forbidden"):
        await watch._list(time.monotonic() + 1)
    assert not watch.gone


async def test_a_followed_pod_missing_from_a_fresh_list_is_gone_unless_created_after_it():
    from worker.kubernetes import PodWatch

    watch = PodWatch(RecordedApi(pod_list(running_pod("a")), pod_list()), "jobs", "w")
    for name in ("a", "b", "c"):
        watch.follow(name)
    watch.created("a")
    watch.created("b")
    asked = time.monotonic()
    watch.created("c")  # created while the list was being answered: not in it yet
    assert await watch._list(asked) == "4711"
    assert watch.gone == {"b"} and watch.pods["a"]["metadata"]["name"] == "a"


def pods_of(tmp_path: Path, api: RecordedApi, ended=lambda try_id: False, **kw):
    from worker.kubernetes import KubernetesPods, PodWatch

    async def spec_of(dag_id, task_id):
        return None, None

    pods = KubernetesPods(settings(tmp_path, kubernetes_image="py:3.11", **kw), "w", spec_of,
                          ended)
    pods.v1 = api
    pods.watch = PodWatch(api, pods.namespace, "w")
    return pods


def ended_pod(message: str | None, exit_code: int, sidecar_running: bool = True) -> dict:
    statuses = [{"name": "base", "state": {"terminated": {
        "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
        **({"message": message} if message else {})}}}]
    if sidecar_running:
        statuses.append({"name": "istio-proxy", "state": {"running": {}}})
    return {"metadata": {"name": "p"}, "status": {
        "phase": "Running" if sidecar_running else "Failed", "containerStatuses": statuses}}


async def test_the_base_containers_end_is_the_tries_whatever_a_sidecar_does(tmp_path):
    pods = pods_of(tmp_path, RecordedApi())
    pods.watch.follow("p")
    pods.watch.pods["p"] = ended_pod(termination_message(
        {"state": "success", "reported": True, "error": None, "wall_s": 1.0, "cpu_s": 0.5}), 0)
    trylog = TryLog(str(tmp_path / "t.log"))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            result, delete = await pods._until_ended("p", REQ, trylog, 0.0, tg)
            tg.cancel_scope.cancel()
    trylog.close()
    assert (result.state, result.reported, result.error, delete) == ("success", True, None, True)


async def test_a_try_the_sdk_ended_but_could_not_report_keeps_its_state(tmp_path):
    """Its callbacks ran in the pod: the worker fails it without owing them again."""
    pods = pods_of(tmp_path, RecordedApi())
    trylog = TryLog(str(tmp_path / "t.log"))
    message = termination_message({"state": "failed", "reported": False, "error": "boom",
                                   "wall_s": 1.0, "cpu_s": 0.5})
    result = pods._ended("p", ended_pod(message, 1, sidecar_running=False), REQ, trylog, 0.0)
    assert (result.state, result.reported, result.error) == ("failed", False, "boom")
    # no message: the pod ended without the SDK seeing the end (OOMKilled, say)
    oom = oom_killed_pod()
    result = pods._ended("p", oom, REQ, trylog, 0.0)
    assert (result.state, result.reported, result.slot_lost) == (None, False, True)
    assert result.error == "pod p ended (OOMKilled, exit code 137)"
    # ... unless the API took the end before the pod went
    pods.ended = lambda try_id: True
    assert pods._ended("p", oom, REQ, trylog, 0.0).reported is True
    trylog.close()


def test_a_pod_still_listed_long_after_its_deletion_time_is_lost_with_its_node():
    from worker.kubernetes import _lost_with_its_node

    assert _lost_with_its_node(running_pod("p", age_s=120, deleting=True))
    assert not _lost_with_its_node(running_pod("p", age_s=5, deleting=True))
    assert not _lost_with_its_node(running_pod("p")) and not _lost_with_its_node(None)


async def test_the_orphan_sweep_deletes_only_old_pods_of_tries_the_database_says_ended(tmp_path):
    from worker.kubernetes import OrphanReaper

    ids = [f"0191a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5{i}" for i in range(7)]
    api = RecordedApi(pod_list(
        running_pod("orphan", ids[0]),
        running_pod("orphan-ended", ids[1], phase="Failed"),
        running_pod("young", ids[2], age_s=10),
        running_pod("mine", ids[3]),
        running_pod("deleting", ids[4], deleting=True),
        running_pod("still-running-try", ids[5]),
        running_pod("not-a-uuid", "x"),
    ))
    pods = pods_of(tmp_path, api, kubernetes_orphan_after_s=60)
    pods.watch.created("mine")
    asked = []

    async def ended_tries(uuids, ago_s):
        asked.append((sorted(uuids), ago_s))
        return {ids[0], ids[1], ids[2], ids[3]}  # ids[5]'s try still runs

    deleted = await OrphanReaper(pods, ended_tries).sweep()
    assert asked == [(sorted([ids[0], ids[1], ids[5]]), 60)]
    assert sorted(deleted) == ["orphan", "orphan-ended"] == sorted(api.deleted)
    # pods kept on purpose (SLUICE_KUBERNETES_DELETE_PODS=false) stay once ended
    api = RecordedApi(pod_list(running_pod("orphan", ids[0]),
                               running_pod("orphan-ended", ids[1], phase="Failed")))
    pods = pods_of(tmp_path, api, kubernetes_orphan_after_s=60, kubernetes_delete_pods=False)
    assert await OrphanReaper(pods, ended_tries).sweep() == ["orphan"]
