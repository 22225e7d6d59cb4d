"""Kubernetes execution mode: every try a worker claims runs in a pod of its own.

Airflow's KubernetesExecutor model on Sluice's worker. A worker started with
``SLUICE_WORKER_EXECUTOR=kubernetes`` reads its queues (default ``kubernetes``;
``shared.airflow_spec.executors`` sends ``executor="KubernetesExecutor"`` tasks
there) and claims, heartbeats, hands back and fails tries exactly as a local
worker does (``worker.daemon``); only the slot differs. A ``PodSlot`` holds no
process: it creates the try's pod, follows it through one watch the worker
shares among all its pods, copies the pod's log into the try's log file, and
reads the try's outcome from the container's termination message
(``worker.pod_task``). So one worker dispatches up to ``kubernetes_max_pods``
pods at once, each costing a watch entry and a log stream, not a process.

The pod runs the Task SDK (``python -m worker.pod_task``) and calls the worker's
Execution API over the network at ``kubernetes_api_url`` with its try's token:
it holds no database, Redis or cluster credentials (its service account token
is not mounted unless the template asks for it).

The pod is built as Airflow's ``PodGenerator`` builds a worker pod, with the
provider's own ``reconcile_pods``: Sluice's defaults, then the pod template
(``kubernetes_pod_template``, Airflow's ``pod_template_file``), then the task's
``executor_config["pod_override"]``, then what identifies the try (name, labels,
``SLUICE_POD_TRY``), each laid over the one before.

A pod that vanishes before its try's end reached the API -- deleted, evicted,
OOM-killed, its node lost, never started within ``kubernetes_pending_timeout_s``
or refused by the cluster (an image that cannot be pulled) -- costs that try
only: the result says so, and the worker fails the try by its retry rule
(``Worker.fail_lost``), its reason in the try's log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import structlog

from shared.airflow_spec.loading import EXECUTORS_VAR, SLUICE_EXECUTORS
from shared.config import KUBERNETES_QUEUE, Settings
from shared.paths import private_dirs
from worker.sdk_slots import TryResult

log = structlog.get_logger()

CONTAINER = "base"  # the container Airflow's pod_override and templates address
WORKER_LABEL = "sluice.dev/worker"
TRY_LABEL = "sluice.dev/try"
DEADLINE_GRACE_S = 60.0  # beyond execution_timeout and the pending timeout: the SDK's own timeout
LOG_DRAIN_TIMEOUT_S = 30.0
# waiting reasons that fail a pending pod's try at once: Airflow's default
# [kubernetes_executor] worker_pod_pending_fatal_container_state_reasons, and a local image
# that is missing under imagePullPolicy Never
FATAL_WAITING = {"CreateContainerConfigError", "ErrImagePull", "CreateContainerError",
                 "ImageInspectError", "InvalidImageName", "ErrImageNeverPull"}
DELETION_MARGIN_S = 30.0  # a pod still there this long past its deletion time: its node is lost
WAKE_EVERY_S = 60.0  # a follower looks at its pod at least this often, whatever the watch says
API_TIMEOUT_S = 30.0  # one call to the API server (a watch or log stream: its read timeout)
ORPHAN_GRACE_S = 5.0
_NAME_PART = re.compile(r"[^a-z0-9]+")
_TERMINAL = ("Succeeded", "Failed")


class KubernetesConfigError(Exception):
    """The worker's Kubernetes settings cannot work (the message says which and why)."""


class KubernetesApiError(Exception):
    """The API server answered a raw (streamed) call with an error status, in one line."""


async def _json_body(resp, what: str) -> dict:
    """A raw response's JSON; :class:`KubernetesApiError` naming ``what`` when it is an error
    (``_preload_content=False`` calls do not raise on one: a 403 or a 500 is a body too)."""
    body = await resp.read()
    if resp.status >= 400:
        raise KubernetesApiError(f"{what}: {_status_line(resp.status, body)}")
    return json.loads(body)


def _status_line(status: int, body: bytes | str | None) -> str:
    """``403 Forbidden: pods is forbidden: ...`` from an error answer's ``Status`` body."""
    try:
        doc = json.loads(body or b"")
        text = f"{status} {doc.get('reason') or ''}: {doc.get('message') or ''}"
    except (TypeError, ValueError, AttributeError):
        text = f"{status}"
    return " ".join(text.split())


def pod_name(req: dict) -> str:
    """A DNS-1123 name naming the try: ``sluice-<dag>-<task>-<map index>-<try>-<random>``."""
    def part(text: str, n: int) -> str:
        return _NAME_PART.sub("-", text.lower()).strip("-")[:n].strip("-") or "x"

    index = "" if req["map_index"] < 0 else f"-{req['map_index']}"
    return (f"sluice-{part(req['dag_id'], 18)}-{part(req['task_id'], 18)}{index}"
            f"-{req['try_number']}-{secrets.token_hex(3)}")[:63].rstrip("-")


def label_value(text: str) -> str:
    """``text`` as a label value, as Airflow labels its worker pods (the provider's own
    ``make_safe_label_value``: kept when valid, else shortened and suffixed with a hash)."""
    from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

    return make_safe_label_value(text)


def worker_label(worker_id: str) -> str:
    return hashlib.sha256(worker_id.encode()).hexdigest()[:16]


class PodFactory:
    """Builds a try's pod: defaults, template, the task's pod_override, the try's identity."""

    def __init__(self, settings: Settings, worker_id: str):
        from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

        self.generator = PodGenerator
        self.namespace = settings.kubernetes_namespace
        self.worker_label = worker_label(worker_id)
        self.dags_folder = str(settings.kubernetes_dags_folder or Path(settings.dags_folder).resolve())
        self.worker_dags = Path(settings.dags_folder).resolve()
        self.pending_s = settings.kubernetes_pending_timeout_s
        self.template = None
        if settings.kubernetes_pod_template is not None:
            path = Path(settings.kubernetes_pod_template)
            if not path.is_file():
                raise KubernetesConfigError(f"SLUICE_KUBERNETES_POD_TEMPLATE: no file {path}")
            try:
                self.template = PodGenerator.deserialize_model_file(str(path))
            except Exception as exc:  # noqa: BLE001 - YAML or schema errors: one line at start
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise KubernetesConfigError(
                    f"SLUICE_KUBERNETES_POD_TEMPLATE {path} is not a Pod: {first}") from exc
            containers = getattr(self.template.spec, "containers", None) or []
            if containers and containers[0].name != CONTAINER:
                raise KubernetesConfigError(
                    f"SLUICE_KUBERNETES_POD_TEMPLATE {path}: the first container must be named "
                    f"'{CONTAINER}' (the one that runs the task), not {containers[0].name!r}")
        self.defaults = PodGenerator.deserialize_model_dict(self._defaults(settings.kubernetes_image))
        if not self._image(self.template) and not settings.kubernetes_image:
            raise KubernetesConfigError(
                "the pods need an image: set SLUICE_KUBERNETES_IMAGE or name one in the "
                f"'{CONTAINER}' container of SLUICE_KUBERNETES_POD_TEMPLATE")

    @staticmethod
    def _defaults(image: str | None) -> dict:
        container = {"name": CONTAINER, "command": ["python", "-m", "worker.pod_task"],
                     "terminationMessagePolicy": "File",
                     # Airflow's configuration home, writable in any image (a template may set it)
                     "env": [{"name": "AIRFLOW_HOME", "value": "/tmp/airflow"}]}
        if image:
            container["image"] = image
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {},
                "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                         "containers": [container]}}

    @staticmethod
    def _image(pod) -> str | None:
        containers = getattr(getattr(pod, "spec", None), "containers", None) or []
        return next((c.image for c in containers if c.name == CONTAINER and c.image), None)

    def build(self, req: dict, name: str, pod_override: dict | None,
              timeout_s: float | None) -> dict:
        """The pod of the try ``req`` (a ``SdkApi.run`` request) as the API's JSON."""
        from kubernetes.client import ApiClient

        g = self.generator
        layers = [self.defaults, self.template,
                  g.deserialize_model_dict(pod_override) if pod_override else None,
                  g.deserialize_model_dict(self._identity(req, name, timeout_s))]
        pod = reduce(g.reconcile_pods, [layer for layer in layers if layer is not None])
        return ApiClient().sanitize_for_serialization(pod)

    def _identity(self, req: dict, name: str, timeout_s: float | None) -> dict:
        fileloc = Path(req["fileloc"])
        if fileloc.is_absolute() and fileloc.is_relative_to(self.worker_dags):
            fileloc = Path(self.dags_folder) / fileloc.relative_to(self.worker_dags)
        pod_try = {k: req[k] for k in ("ti_uuid", "token", "api_url", "dag_id", "run_id",
                                       "task_id", "map_index", "try_number")}
        pod_try.update(fileloc=str(fileloc), dags_folder=self.dags_folder,
                       queue=req.get("queue") or KUBERNETES_QUEUE)
        spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [{
            "name": CONTAINER,
            "env": [{"name": "SLUICE_POD_TRY", "value": json.dumps(pod_try)},
                    {"name": "AIRFLOW__CORE__DAGS_FOLDER", "value": self.dags_folder},
                    {"name": "AIRFLOW__CORE__LOAD_EXAMPLES", "value": "False"},
                    {"name": EXECUTORS_VAR, "value": os.environ.get(EXECUTORS_VAR)
                     or SLUICE_EXECUTORS}]}]}
        if timeout_s is not None:
            # a backstop (the SDK enforces the timeout itself) counted from the pod's creation,
            # so the time it may wait to start (an image pull) is not the task's
            spec["activeDeadlineSeconds"] = int(timeout_s + self.pending_s + DEADLINE_GRACE_S)
        labels = {WORKER_LABEL: self.worker_label, TRY_LABEL: req["ti_uuid"],
                  "dag_id": label_value(req["dag_id"]), "task_id": label_value(req["task_id"]),
                  "try_number": str(req["try_number"])}
        if req["map_index"] >= 0:  # as Airflow labels its worker pods: "-1" is no label value
            labels["map_index"] = str(req["map_index"])
        return {"apiVersion": "v1", "kind": "Pod", "spec": spec, "metadata": {
            "name": name, "namespace": self.namespace, "labels": labels,
            "annotations": {"dag_id": req["dag_id"], "task_id": req["task_id"],
                            "run_id": req["run_id"], "map_index": str(req["map_index"]),
                            "try_number": str(req["try_number"])}}}


class PodWatch:
    """One watch of this worker's pods, shared by its ``PodSlot``s.

    Keeps the newest object of each pod it was told to follow (``follow``) and wakes
    whoever waits on it at each change. The watch is resumed from its resource
    version when its stream ends and listed afresh when that is too old or after an
    error; a followed pod missing from a fresh list, created before the list was
    asked for, is gone.
    """

    def __init__(self, v1, namespace: str, worker_label_value: str):
        self.v1, self.namespace = v1, namespace
        self.selector = f"{WORKER_LABEL}={worker_label_value}"
        self.pods: dict[str, dict] = {}
        self.gone: set[str] = set()
        self.created_at: dict[str, float] = {}
        self._changed: dict[str, anyio.Event] = {}
        self.connected = anyio.Event()

    def follow(self, name: str) -> None:
        self._changed[name] = anyio.Event()

    def created(self, name: str) -> None:
        self.created_at[name] = time.monotonic()

    def forget(self, name: str) -> None:
        for table in (self.pods, self.created_at, self._changed):
            table.pop(name, None)
        self.gone.discard(name)

    async def changed(self, name: str, timeout_s: float | None) -> None:
        """Return at the pod's next change, or after ``timeout_s``."""
        event = self._changed.get(name)
        if event is None:
            return
        with anyio.move_on_after(timeout_s):
            await event.wait()

    def _wake(self, name: str) -> None:
        event = self._changed.get(name)
        if event is not None:
            self._changed[name] = anyio.Event()
            event.set()

    async def run(self) -> None:
        """Watch until cancelled; an error is logged and the watch listed afresh."""
        from kubernetes_asyncio import watch

        failures = 0
        while True:
            try:
                asked = time.monotonic()
                version = await self._list(asked)
                self.connected.set()
                failures = 0
                while version is not None:  # events as plain JSON: no model per event
                    version = await self._watch(watch.Watch(return_type="object"), version)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # noqa: BLE001 - the API server restarted, a network blip
                failures += 1
                log.warning("pod_watch_failed", error=_one_line(exc),
                            retry_in_s=min(30, 2 ** failures))
                await anyio.sleep(min(30, 2 ** failures))

    async def _list(self, asked: float) -> str:
        resp = await self.v1.list_namespaced_pod(self.namespace, label_selector=self.selector,
                                                 _preload_content=False,
                                                 _request_timeout=API_TIMEOUT_S)
        body = await _json_body(resp, f"listing pods in namespace {self.namespace}")
        listed = {p["metadata"]["name"]: p for p in body.get("items", [])}
        for name in list(self._changed):
            if name in listed:
                self.pods[name] = listed[name]
            elif self.created_at.get(name, asked) < asked:
                self.gone.add(name)
            self._wake(name)
        return body["metadata"]["resourceVersion"]

    async def _watch(self, w, version: str) -> str | None:
        """Follow events from ``version``; the version to resume from, ``None`` to list again."""
        from kubernetes_asyncio.client.exceptions import ApiException

        # the server ends the watch after 300 s; a connection silent longer is dead
        stream = w.stream(self.v1.list_namespaced_pod, self.namespace,
                          label_selector=self.selector, resource_version=version,
                          timeout_seconds=300, allow_watch_bookmarks=True,
                          _request_timeout=(API_TIMEOUT_S, 330))

        try:
            async for event in stream:
                kind, obj = event["type"], event["raw_object"]
                version = obj.get("metadata", {}).get("resourceVersion") or version
                if kind == "BOOKMARK":
                    continue
                name = obj["metadata"]["name"]
                if name not in self._changed:
                    continue
                if kind == "DELETED":
                    self.gone.add(name)
                self.pods[name] = obj
                self._wake(name)
        except ApiException as exc:
            if exc.status != 410:  # 410 Gone: the version is too old, list afresh
                raise
            return None
        finally:
            await w.close()
        return version


class OrphanReaper:
    """Deletes the pods of tries that no longer run (their worker died before deleting them).

    Each Kubernetes-mode worker lists the namespace's Sluice pods every half
    ``kubernetes_orphan_after_s`` (at most a minute), skips its own and those younger than
    that (a live worker deletes its pods within seconds of their try's end), and deletes
    those whose try the database knows as ended -- failed by the scheduler's zombie sweep
    and retried elsewhere, say. A pod whose try the database does not know is another
    installation's: left alone.
    """

    def __init__(self, pods: KubernetesPods,
                 ended_tries: Callable[[list[str], float], Awaitable[set[str]]]):
        self.pods, self.ended_tries = pods, ended_tries
        self.min_age_s = pods.settings.kubernetes_orphan_after_s
        self.keep_ended = not pods.settings.kubernetes_delete_pods

    async def run(self) -> None:
        while True:
            await anyio.sleep(min(60.0, self.min_age_s / 2))
            try:
                await self.sweep()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                log.warning("orphan_pod_sweep_failed", error=_one_line(exc))

    async def sweep(self) -> list[str]:
        """Delete the orphans found now; their names."""
        pods = self.pods
        resp = await pods.v1.list_namespaced_pod(pods.namespace, label_selector=TRY_LABEL,
                                                 _preload_content=False,
                                                 _request_timeout=API_TIMEOUT_S)
        items = (await _json_body(resp, f"listing pods in namespace {pods.namespace}"))["items"]
        now = datetime.now(UTC)
        candidates: dict[str, list[str]] = {}  # try uuid -> pods (a deferral's legs share one)
        for pod in items:
            meta = pod["metadata"]
            created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
            ended = (pod.get("status") or {}).get("phase") in _TERMINAL
            try_id = (meta.get("labels") or {}).get(TRY_LABEL, "")
            if (meta["name"] not in pods.watch.created_at and not meta.get("deletionTimestamp")
                    and (now - created).total_seconds() > self.min_age_s
                    and not (ended and self.keep_ended) and _is_uuid(try_id)):
                candidates.setdefault(try_id, []).append(meta["name"])
        ended_tries = await self.ended_tries(list(candidates), self.min_age_s) if candidates else set()
        deleted = [name for try_id in ended_tries for name in candidates.get(try_id, ())]
        for name in deleted:
            log.warning("orphan_pod_deleted", pod=name, reason="its try ended without its worker")
            await pods.delete(name, ORPHAN_GRACE_S)
        return deleted


class PodSlot:
    """Runs one try at a time as a pod; what ``worker.daemon.Worker`` asks of a slot."""

    def __init__(self, pods: KubernetesPods):
        self.pods = pods
        self.tries_run = 0  # never reaches runner_max_tasks: a pod runs one try anyway
        self.cancel_grace_s = 0.0
        self.name: str | None = None

    async def stop(self) -> None:
        """Nothing to stop between tries: a pod lives for one try."""

    async def kill(self, reason: str | None = "killed on request", *, grace_s: float = 0.0) -> None:
        if self.name is not None:
            await self.pods.delete(self.name, grace_s)

    async def run(self, request: dict) -> TryResult:
        started = anyio.current_time()
        name = self.name = pod_name(request)
        try:
            return await self.pods.run(name, request, started)
        except anyio.get_cancelled_exc_class():  # handed back or stopped: the pod must not run on
            grace_s, self.cancel_grace_s = self.cancel_grace_s, 0.0
            with anyio.CancelScope(shield=True):
                await self.pods.delete(name, grace_s)
            raise
        finally:
            self.name = None


class KubernetesPods:
    """The worker's side of its pods: the cluster client, the watch, and each try's pod."""

    def __init__(self, settings: Settings, worker_id: str,
                 spec_of: Callable[[str, str], Awaitable[tuple[dict | None, float | None]]],
                 ended: Callable[[str], bool]):
        self.settings = settings
        self.factory = PodFactory(settings, worker_id)
        self.namespace = settings.kubernetes_namespace
        self.spec_of, self.ended = spec_of, ended
        self.api_client = None
        self.v1 = None
        self.watch: PodWatch | None = None

    async def connect(self) -> None:
        """The cluster client (the worker's kubeconfig, or its pod's service account)."""
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        try:
            if self.settings.kubernetes_config is not None:
                await config.load_kube_config(config_file=str(self.settings.kubernetes_config),
                                              context=self.settings.kubernetes_context,
                                              client_configuration=configuration)
            else:
                config.load_incluster_config(client_configuration=configuration)
        except Exception as exc:  # noqa: BLE001 - a missing or broken kubeconfig: one line
            raise KubernetesConfigError(f"no Kubernetes cluster to run pods on: {exc}") from exc
        # a log stream per running pod, besides the watch and the calls
        configuration.connection_pool_maxsize = self.settings.kubernetes_max_pods * 2 + 16
        self.api_client = client.ApiClient(configuration)
        self.v1 = client.CoreV1Api(self.api_client)
        self.watch = PodWatch(self.v1, self.namespace, self.factory.worker_label)

    async def close(self) -> None:
        if self.api_client is not None:
            await self.api_client.close()

    async def run(self, name: str, req: dict, started: float) -> TryResult:
        """Create the try's pod, follow it to its end, and say how the try ended."""
        from kubernetes_asyncio.client.exceptions import ApiException

        pod_override, timeout_s = await self.spec_of(req["dag_id"], req["task_id"])
        trylog = TryLog(req["log_path"])
        try:
            try:
                body = self.factory.build(req, name, pod_override, timeout_s)
            except Exception as exc:  # noqa: BLE001 - a pod_override the provider cannot merge
                return self._lost(trylog, started, f"its pod could not be built: {_one_line(exc)}")
            self.watch.follow(name)
            try:
                await self.v1.create_namespaced_pod(self.namespace, body,
                                                    _request_timeout=API_TIMEOUT_S)
            except ApiException as exc:  # refused: a bad pod_override, a quota
                return self._lost(trylog, started, f"pod {name} not created: {_api_error(exc)}")
            except (OSError, TimeoutError, aiohttp.ClientError) as exc:  # the API server is away
                return self._lost(trylog, started, f"pod {name} not created: {_one_line(exc)}")
            self.watch.created(name)
            trylog.line("info", f"Pod {name} created in namespace {self.namespace}")
            return await self._follow(name, req, trylog, started)
        finally:
            self.watch.forget(name)
            trylog.close()

    async def _follow(self, name: str, req: dict, trylog: TryLog, started: float) -> TryResult:
        """Wait for the pod's end (its log copied meanwhile); delete it as the settings say."""
        async with anyio.create_task_group() as tg:
            result, delete = await self._until_ended(name, req, trylog, started, tg)
            tg.cancel_scope.cancel()  # the log copy, if the pod never ran or went
        if delete:
            await self.delete(name, 0)
        return result

    async def _until_ended(self, name: str, req: dict, trylog: TryLog, started: float,
                           tg) -> tuple[TryResult, bool]:
        """The try's result once its container ended, its pod went, or never started; and
        whether to delete the pod. The ``base`` container's end is the try's, whatever the
        pod's other containers (a mesh's proxy) do: deleting the pod ends them."""
        pending_until = time.monotonic() + self.settings.kubernetes_pending_timeout_s
        copying: anyio.Event | None = None
        while True:
            pod = self.watch.pods.get(name)
            if name in self.watch.gone or _lost_with_its_node(pod):
                return self._lost(trylog, started, f"pod {name} was deleted before its try "
                                  f"ended{_describe_pod(pod)}", req), name not in self.watch.gone
            phase = (pod or {}).get("status", {}).get("phase")
            container = _container_state(pod)
            ended = phase in _TERMINAL or "terminated" in container
            if copying is None and (ended or "running" in container):
                copying = anyio.Event()
                tg.start_soon(self._copy_log, name, trylog, copying)
            if ended:
                with anyio.move_on_after(LOG_DRAIN_TIMEOUT_S):
                    await copying.wait()
                delete = self.settings.kubernetes_delete_pods or phase not in _TERMINAL
                return self._ended(name, pod, req, trylog, started), delete
            wait_s = WAKE_EVERY_S
            if phase in (None, "Pending") and "running" not in container:
                waiting = container.get("waiting") or {}
                reason = waiting.get("reason") or ""
                if reason in FATAL_WAITING:
                    why = f"{reason}: {waiting.get('message') or ''}".rstrip(": ")
                    return self._lost(trylog, started, f"pod {name} {why}", req), True
                if time.monotonic() > pending_until:
                    timeout = self.settings.kubernetes_pending_timeout_s
                    why = f"{reason or 'not scheduled'}{_describe_pod(pod)}"
                    return self._lost(trylog, started, f"pod {name} not running after "
                                      f"{timeout:g}s ({why})", req), True
                wait_s = min(wait_s, max(0.1, pending_until - time.monotonic()))
            await self.watch.changed(name, wait_s)

    def _ended(self, name: str, pod: dict, req: dict, trylog: TryLog, started: float) -> TryResult:
        """The try's result from its container's termination message (``worker.pod_task``);
        when there is none, what ended the pod."""
        terminated = _container_state(pod).get("terminated") or {}
        message = _termination_result(terminated.get("message"))
        if message is not None:  # the SDK saw the try to its end (its callbacks ran in the pod)
            reported = message["reported"] or self.ended(req["ti_uuid"])
            if reported:
                trylog.line("info", f"Pod {name} ended: {message['state']}")
            else:
                trylog.line("error", f"Pod {name} ended {message['state']} without the Execution "
                            f"API taking it{_describe_pod(pod)}")
            return TryResult(state=message["state"], reported=reported, error=message["error"],
                             wall_s=round(anyio.current_time() - started, 6),
                             cpu_s=message.get("cpu_s"))
        # a pod deleted mid-run ends Failed, its container's state gone (Kubernetes 1.20)
        how = ("was deleted before its try ended" if pod.get("metadata", {}).get("deletionTimestamp")
               else "ended")
        return self._lost(trylog, started, f"pod {name} {how}{_describe_pod(pod)}", req)

    def _lost(self, trylog: TryLog, started: float, reason: str, req: dict | None = None) -> TryResult:
        """A try whose end the pod did not report (unless the API took it before the pod went)."""
        reported = req is not None and self.ended(req["ti_uuid"])
        trylog.line("info" if reported else "error", reason)
        return TryResult(state=None, reported=reported, error=None if reported else reason,
                         wall_s=round(anyio.current_time() - started, 6), slot_lost=not reported)

    async def _copy_log(self, name: str, trylog: TryLog, done: anyio.Event) -> None:
        """The container's output into the try's log, as it comes (the SDK's JSON lines;
        any other line -- an interpreter's crash -- kept as the task's stderr). No read
        timeout: a task may print nothing for hours."""
        try:
            resp = await self.v1.read_namespaced_pod_log(
                name, self.namespace, container=CONTAINER, follow=True, _preload_content=False,
                _request_timeout=(API_TIMEOUT_S, None))
            try:
                if resp.status >= 400:
                    raise KubernetesApiError(_status_line(resp.status, await resp.read()))
                async for chunk in resp.content.iter_any():  # lines of any length
                    trylog.raw(chunk)
            finally:
                resp.release()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # noqa: BLE001 - the pod went meanwhile: its outcome says why
            trylog.line("warning", f"Pod {name}'s log could not be read to its end: "
                        f"{_one_line(exc)}")
        finally:
            done.set()

    async def delete(self, name: str, grace_s: float) -> None:
        """Delete a pod (SIGTERM, then SIGKILL after ``grace_s``); one already gone is fine.
        Never waits more than ``API_TIMEOUT_S``: a pod left behind is the orphan sweep's."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            await self.v1.delete_namespaced_pod(name, self.namespace,
                                                grace_period_seconds=int(round(grace_s)),
                                                _request_timeout=API_TIMEOUT_S)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("pod_not_deleted", pod=name, error=_api_error(exc))
        except Exception as exc:  # noqa: BLE001 - the API server is away: the pod ends on its own
            log.warning("pod_not_deleted", pod=name, error=_one_line(exc))


class TryLog:
    """The try's log file on the worker (0600 in private folders), in Airflow's JSON lines."""

    def __init__(self, path: str):
        private_dirs(Path(path).parent)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._partial = b""

    def raw(self, data: bytes) -> None:
        """A chunk of the pod's output: whole lines are written, JSON as it is, text wrapped."""
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._write_line(line)

    def _write_line(self, line: bytes) -> None:
        text = line.rstrip(b"\r")
        if not text.strip():
            return
        if text.startswith(b"{"):
            try:
                json.loads(text)
            except ValueError:
                pass
            else:
                self._write(text + b"\n")
                return
        self.line("error", text.decode("utf-8", errors="replace"), logger="task.stderr")

    def line(self, level: str, event: str, logger: str = "sluice.kubernetes") -> None:
        record = {"timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                  "level": level, "event": event, "logger": logger}
        self._write(json.dumps(record).encode() + b"\n")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        if self._partial:
            self._write_line(self._partial)
            self._partial = b""
        os.close(self.fd)


def _lost_with_its_node(pod: dict | None) -> bool:
    """A pod whose deletion its node never confirmed: still listed well past its deletion
    time (``deletionTimestamp`` is when the grace period ends), its node unreachable."""
    when = ((pod or {}).get("metadata") or {}).get("deletionTimestamp")
    if not when:
        return False
    deadline = datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp() + DELETION_MARGIN_S
    return time.time() > deadline


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: an API client's errors carry headers and bodies."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _container_state(pod: dict | None) -> dict:
    for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return status.get("state") or {}
    return {}


def _describe_pod(pod: dict | None) -> str:
    """`` (OOMKilled, exit code 137)``, `` (Evicted: The node was low on memory)``, or ``""``."""
    if not pod:
        return ""
    status = pod.get("status") or {}
    terminated = _container_state(pod).get("terminated") or {}
    parts = []
    if status.get("reason"):
        parts.append(f"{status['reason']}: {status.get('message') or ''}".rstrip(": "))
    if terminated:
        parts.append(f"{terminated.get('reason') or 'terminated'}, "
                     f"exit code {terminated.get('exitCode')}")
    return f" ({'; '.join(parts)})" if parts else ""


def _termination_result(message: str | None) -> dict | None:
    """``worker.pod_task``'s result, or ``None`` when the message is not one."""
    try:
        result = json.loads(message or "")
    except ValueError:
        return None
    if not (isinstance(result, dict) and isinstance(result.get("reported"), bool)
            and (result.get("state") is None or isinstance(result.get("state"), str))
            and (result.get("error") is None or isinstance(result.get("error"), str))):
        return None
    cpu = result.get("cpu_s")
    return {"state": result.get("state"), "reported": result["reported"],
            "error": result.get("error"),
            "cpu_s": float(cpu) if isinstance(cpu, int | float) else None}


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _api_error(exc) -> str:
    return _status_line(exc.status, exc.body) if exc.body else f"{exc.status} {exc.reason}"


__all__ = ["KubernetesConfigError", "KubernetesPods", "OrphanReaper", "PodFactory", "PodSlot",
           "pod_name"]
