"""Typed settings, read from the environment (prefix ``SLUICE_``).

Built once in each process's entry point and passed down; nothing reads
configuration at import time. With no database or Redis URL configured, the
URLs written by ``sluice standalone`` to ``$SLUICE_HOME/standalone.json`` are
used, so a second terminal finds the embedded services.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The queue Kubernetes-mode workers read by default, where tasks naming the Kubernetes
#: executor go (shared.airflow_spec.executors), as CeleryKubernetesExecutor's kubernetes_queue.
KUBERNETES_QUEUE = "kubernetes"


def default_home() -> Path:
    return Path(os.environ.get("SLUICE_HOME") or Path.home() / ".sluice")


class Settings(BaseSettings):
    """Every knob of the three daemons and the CLI."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    database_url: str | None = None
    redis_url: str | None = None
    dags_folder: Path = Path("dags")
    logs_folder: Path | None = None
    stream_prefix: str = "sluice"
    # streams: an entry read but not acknowledged for this long (its consumer died)
    # is taken over by another consumer of its group (every daemon looks twice an interval)
    claim_interval_s: float = Field(default=30.0, gt=0)

    # scheduler
    parse_timeout_s: float = 30.0
    dag_dir_list_interval_s: float = 30.0
    # a DAG seen for the first time starts paused unless it says otherwise
    # (is_paused_upon_creation), as Airflow's [core] dags_are_paused_at_creation;
    # `sluice standalone` makes it false for the daemons it starts unless it is set
    dags_are_paused_at_creation: bool = True
    repair_interval_s: float = 10.0
    worker_heartbeat_timeout_s: float = 30.0
    queued_resend_after_s: float = 60.0
    max_map_length: int = 1024
    trigger_timeout_grace_s: float = 5.0
    batch_size: int = 256
    callback_timeout_s: float = Field(default=60.0, gt=0)  # a callback child: its DAG file + callbacks

    # worker
    worker_concurrency: int = 8
    # the queues a worker reads (comma-separated); unset: "default", or "kubernetes" for a
    # worker whose executor is kubernetes
    worker_queues: str | None = None
    worker_heartbeat_s: float = 5.0
    worker_grace_period_s: float = 30.0
    runner_max_tasks: int = 1000
    max_xcom_bytes: int = 1024 * 1024
    # the Execution API the worker serves its task processes;
    # port 0: any free port, told to the tasks with each try
    execution_api_host: str = "127.0.0.1"
    execution_api_port: int = Field(default=0, ge=0, le=65535)
    # the id the worker claims instances with (default host:pid); unique per worker
    worker_id: str | None = None

    # Kubernetes execution mode (README "Running on Kubernetes"): a worker whose executor is
    # "kubernetes" runs every try it claims in a pod of its own (worker.kubernetes), up to
    # kubernetes_max_pods at once, holding no slot per pod
    worker_executor: Literal["local", "kubernetes"] = "local"
    kubernetes_config: Path | None = None  # the worker's kubeconfig; unset: in-cluster config
    kubernetes_context: str | None = None
    kubernetes_namespace: str = "default"
    kubernetes_image: str | None = None  # the pods' image, unless the template names one
    kubernetes_pod_template: Path | None = None  # a Pod (YAML or JSON): Airflow's pod_template_file
    # the worker's Execution API as the pods reach it (e.g. http://10.0.0.5:8794/); the worker
    # serves it on execution_api_host:execution_api_port
    kubernetes_api_url: str | None = None
    # where the DAGs folder is inside the pods (default: the worker's own path)
    kubernetes_dags_folder: str | None = None
    kubernetes_max_pods: int = Field(default=256, gt=0)
    # a pod not running after this long (unschedulable, image not found) fails its try
    kubernetes_pending_timeout_s: float = Field(default=300.0, gt=0)
    kubernetes_delete_pods: bool = True  # delete each pod once its try's outcome is in
    # a pod whose try ended this long ago without its worker deleting it (the worker died)
    # is deleted by another Kubernetes-mode worker
    kubernetes_orphan_after_s: float = Field(default=120.0, gt=0)

    # triggerer
    triggerer_capacity: int = Field(default=1000, gt=0)
    triggerer_heartbeat_s: float = 5.0
    triggerer_heartbeat_timeout_s: float = 30.0

    # HTTP sides (README "Task logs", "Metrics"). A port of 0 takes any free port and -1
    # turns that server off; a default port that is taken falls back to a free one.
    # The worker serves the logs of the tries it ran (token-authenticated) on
    # worker_log_host:worker_log_port, and tells others it is at worker_log_hostname
    # (default: the bind address, or this host's fully qualified name for a wildcard).
    worker_log_host: str = "0.0.0.0"
    worker_log_port: int = Field(default=8793, ge=-1, le=65535)
    worker_log_hostname: str | None = None
    # /metrics (Prometheus) and /health of each daemon
    metrics_host: str = "127.0.0.1"
    scheduler_metrics_port: int = Field(default=8790, ge=-1, le=65535)
    triggerer_metrics_port: int = Field(default=8791, ge=-1, le=65535)
    worker_metrics_port: int = Field(default=8792, ge=-1, le=65535)

    def resolved(self) -> Settings:
        """Fill missing URLs from ``standalone.json`` (written by ``sluice standalone``)."""
        if self.database_url and self.redis_url:
            return self
        found = read_standalone_urls(self.home)
        return self.model_copy(
            update={
                "database_url": self.database_url or found.get("database_url"),
                "redis_url": self.redis_url or found.get("redis_url"),
            }
        )

    def require_urls(self) -> tuple[str, str]:
        if not self.database_url or not self.redis_url:
            raise SystemExit(
                "no database/redis configured: set SLUICE_DATABASE_URL and SLUICE_REDIS_URL, "
                f"or start `sluice standalone` with SLUICE_HOME={self.home}"
            )
        return self.database_url, self.redis_url

    @property
    def logs_dir(self) -> Path:
        return self.logs_folder or self.home / "logs"

    @property
    def queues(self) -> list[str]:
        names = self.worker_queues
        if names is None:
            names = KUBERNETES_QUEUE if self.worker_executor == "kubernetes" else "default"
        return [q.strip() for q in names.split(",") if q.strip()]

    @property
    def worker_capacity(self) -> int:
        """How many tries one worker runs at once: its slots, or its pods."""
        if self.worker_executor == "kubernetes":
            return self.kubernetes_max_pods
        return self.worker_concurrency


def standalone_file(home: Path) -> Path:
    return home / "standalone.json"


#: Every file and folder a Sluice process creates is its user's alone.
PRIVATE_UMASK = 0o077


def keep_files_private() -> None:
    """Set the process umask to 077: new files 0600, new folders 0700.

    Called first thing by every ``sluice`` command; the processes it starts
    (daemons, runners, embedded servers) inherit it.
    """
    os.umask(PRIVATE_UMASK)


def make_private(path: Path) -> None:
    """Take away every group/other permission on ``path``, but others' search on a folder.

    Search (``x``) on a folder lists nothing and opens nothing by itself; embedded
    PostgreSQL, run by root as an unprivileged account, needs it to reach its data.
    A symlink is left alone: its own mode means nothing, and following it would
    change (or fail on) whatever it points to, which a task may have chosen.
    """
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return
    mode = stat.S_IMODE(st.st_mode)
    private = mode & ~0o077 | (mode & stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
    if private != mode:
        os.chmod(path, private, follow_symlinks=False)


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, mode 0600 whatever the umask, atomically.

    A reader sees the old or the new content, never a part, and never a
    moment when the file is readable by others.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_standalone_urls(home: Path) -> dict[str, str]:
    try:
        return json.loads(standalone_file(home).read_text())
    except (OSError, ValueError):
        return {}


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top; a value
    that is not valid ends the command with one line naming the setting (exit 2)."""
    from pydantic import ValidationError

    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean).resolved()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "SLUICE_" + "_".join(str(part) for part in first["loc"]).upper()
        print(f"{name}={first.get('input')!r}: {first['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
