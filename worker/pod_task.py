"""The program of a task pod (Kubernetes execution mode): one try, run with the Task SDK.

``python -m worker.pod_task`` runs in a pod ``worker.kubernetes`` created, whose
``SLUICE_POD_TRY`` holds the try (its ids, the DAG file's path inside the pod, the
Execution API's URL and the try's token: nothing else of Sluice's). The try runs
exactly as in a worker's slot (``worker.sdk_slot.Slot``): Airflow's task runner,
every call answered by the Execution API over the network. Its log lines -- the
SDK's JSON lines, ``print`` and subprocess output -- go to the container's
stdout, which the worker copies into the try's log; its outcome (``TryResult``'s
fields) is the container's termination message, which the worker reads from the
pod's status. Exit 0 when the API took the try's end, 1 when not.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from shared.config import KUBERNETES_QUEUE
from worker import sdk_tasklog

TERMINATION_LOG = "/dev/termination-log"
MESSAGE_LIMIT = 4096  # what Kubernetes keeps of a termination message
ENV = "SLUICE_POD_TRY"


class PodTry(BaseModel):
    """The try a pod runs, as the worker wrote it into ``SLUICE_POD_TRY``."""

    model_config = ConfigDict(extra="forbid")
    ti_uuid: str
    token: str
    api_url: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    fileloc: str  # the DAG file inside the pod
    dags_folder: str
    queue: str = KUBERNETES_QUEUE


class StdoutSink(sdk_tasklog.LogSink):
    """Every line to the container's stdout: the pod runs one try, whose log that is."""

    def open(self, path: str) -> None:
        pass


def termination_message(result: dict) -> str:
    """``result`` as JSON within Kubernetes' limit (the error text shortened if need be)."""
    text = json.dumps(result, separators=(",", ":"))
    if len(text.encode()) <= MESSAGE_LIMIT:
        return text
    error = result.get("error") or ""
    keep = max(0, len(error) - (len(text.encode()) - MESSAGE_LIMIT) - 64)
    return json.dumps({**result, "error": error[:keep] + " [...]"}, separators=(",", ":"))


def main() -> int:
    from worker.sdk_slot import Slot

    try:
        pod_try = PodTry.model_validate_json(os.environ.get(ENV) or "")
    except ValueError as exc:
        print(f"sluice pod: {ENV} is not a try: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    os.environ.pop(ENV, None)  # the token is the SDK client's, not the task's
    sink = StdoutSink(os.dup(1))
    slot = Slot(sink, sdk_tasklog.capture(sink), Path(pod_try.dags_folder))
    request = {**pod_try.model_dump(), "log_path": "-"}
    result = slot.run(request, send=lambda message: None)
    try:
        Path(TERMINATION_LOG).write_text(termination_message(result))
    except OSError:  # not in a pod (a test, a debugging run): the exit code says enough
        pass
    return 0 if result["reported"] else 1


if __name__ == "__main__":
    code = main()
    # the try's outcome is reported and its log written (unbuffered descriptors): end now,
    # without the interpreter's teardown of Airflow's modules and atexit hooks, which took
    # tens of seconds on a busy node while the worker waited for the container to exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
