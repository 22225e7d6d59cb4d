"""The Kubernetes execution mode's pure parts: routing, the pod a try runs in, its outcome, its log.

The cluster itself is exercised end to end in tests/k8s/test_execution_mode_e2e.py;
here the pod statuses are Kubernetes' own JSON, as the API server sends them.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

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
    assert spec["activeDeadlineSeconds"] == 660
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
