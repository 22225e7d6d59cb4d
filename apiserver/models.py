"""Request and response bodies of Airflow 3.3's REST API (``/api/v2``), as Sluice fills them.

Field names, types and nullability follow the component schemas of Airflow's
OpenAPI document, so Airflow's own client and scripts read Sluice's answers;
FastAPI writes Sluice's ``/openapi.json`` from these classes. Bodies forbid
unknown fields, as Airflow's do.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

DagRunState = Literal["queued", "running", "success", "failed"]
DagRunType = Literal["backfill", "scheduled", "manual", "operator_triggered", "asset_triggered",
                     "asset_materialization"]
TriggeredBy = Literal["cli", "operator", "rest_api", "ui", "test", "timetable", "asset",
                      "backfill"]
TaskInstanceState = Literal["removed", "scheduled", "queued", "running", "success", "restarting",
                            "failed", "up_for_retry", "up_for_reschedule", "upstream_failed",
                            "skipped", "deferred", "awaiting_input"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- DAGs --------------------------------------------------------------------------------------
class DagTagResponse(BaseModel):
    name: str
    dag_id: str
    dag_display_name: str


class DagVersionResponse(BaseModel):
    id: str
    version_number: int
    dag_id: str
    bundle_name: str | None
    bundle_version: str | None
    created_at: datetime
    dag_display_name: str
    bundle_url: str | None


class DAGResponse(BaseModel):
    dag_id: str
    dag_display_name: str
    is_paused: bool
    is_stale: bool
    last_parsed_time: datetime | None
    last_parse_duration: float | None
    last_expired: datetime | None
    bundle_name: str | None
    bundle_version: str | None
    relative_fileloc: str | None
    fileloc: str
    description: str | None
    timetable_summary: str | None
    timetable_description: str | None
    timetable_partitioned: bool
    timetable_periodic: bool
    tags: list[DagTagResponse]
    max_active_tasks: int
    max_active_runs: int | None
    max_consecutive_failed_dag_runs: int
    has_task_concurrency_limits: bool
    has_import_errors: bool
    next_dagrun_logical_date: datetime | None
    next_dagrun_data_interval_start: datetime | None
    next_dagrun_data_interval_end: datetime | None
    next_dagrun_run_after: datetime | None
    allowed_run_types: list[DagRunType] | None
    owners: list[str]
    is_backfillable: bool
    file_token: str


class DAGDetailsResponse(DAGResponse):
    catchup: bool
    dag_run_timeout: timedelta | None
    asset_expression: dict[str, Any] | None
    doc_md: str | None
    start_date: datetime | None
    end_date: datetime | None
    is_paused_upon_creation: bool | None
    params: dict[str, Any] | None
    render_template_as_native_obj: bool
    template_search_path: list[str] | None
    timezone: str | None
    last_parsed: datetime | None
    default_args: dict[str, Any] | None
    rerun_with_latest_version: bool | None = None
    owner_links: dict[str, str] | None = None
    is_favorite: bool = False
    active_runs_count: int = 0
    concurrency: int
    latest_dag_version: DagVersionResponse | None


class DAGCollectionResponse(BaseModel):
    dags: list[DAGResponse]
    total_entries: int


class DAGPatchBody(Body):
    is_paused: bool


class ImportErrorResponse(BaseModel):
    import_error_id: int
    timestamp: datetime
    filename: str
    bundle_name: str | None
    stack_trace: str


class ImportErrorCollectionResponse(BaseModel):
    import_errors: list[ImportErrorResponse]
    total_entries: int


# --- runs --------------------------------------------------------------------------------------
class DAGRunResponse(BaseModel):
    dag_run_id: str
    dag_id: str
    logical_date: datetime | None
    queued_at: datetime | None
    start_date: datetime | None
    end_date: datetime | None
    duration: float | None
    data_interval_start: datetime | None
    data_interval_end: datetime | None
    run_after: datetime
    last_scheduling_decision: datetime | None
    run_type: DagRunType
    state: DagRunState
    triggered_by: TriggeredBy | None
    triggering_user_name: str | None
    conf: dict[str, Any] | None
    note: str | None
    dag_versions: list[DagVersionResponse]
    bundle_version: str | None
    dag_display_name: str
    partition_key: str | None
    partition_date: datetime | None


class DAGRunCollectionResponse(BaseModel):
    dag_runs: list[DAGRunResponse]
    total_entries: int | None = None
    total_entries_limit: int | None = None
    next_cursor: str | None = None
    previous_cursor: str | None = None


class TriggerDAGRunPostBody(Body):
    dag_run_id: str | None = None
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    logical_date: datetime | None
    run_after: datetime | None = None
    conf: dict[str, Any] | None = None
    note: str | None = None
    partition_key: str | None = None


class DAGRunClearBody(Body):
    dry_run: bool = True
    only_failed: bool = False
    only_new: bool = False
    run_on_latest_version: bool | None = None
    note: str | None = None


class DAGRunPatchBody(Body):
    state: Literal["queued", "success", "failed"] | None = None
    note: str | None = Field(default=None, max_length=1000)


# --- task instances ----------------------------------------------------------------------------
class TriggerResponse(BaseModel):
    id: int
    classpath: str
    kwargs: str
    created_date: datetime
    queue: str | None
    triggerer_id: int | None


class TaskInstanceHistoryResponse(BaseModel):
    task_id: str
    dag_id: str
    dag_run_id: str
    map_index: int
    start_date: datetime | None
    end_date: datetime | None
    duration: float | None
    state: TaskInstanceState | None
    try_number: int
    max_tries: int
    task_display_name: str
    dag_display_name: str
    hostname: str | None
    unixname: str | None
    pool: str
    pool_slots: int
    queue: str | None
    priority_weight: int | None
    operator: str | None
    operator_name: str | None
    queued_when: datetime | None
    scheduled_when: datetime | None
    pid: int | None
    executor: str | None
    executor_config: str
    dag_version: DagVersionResponse | None


class TaskInstanceResponse(TaskInstanceHistoryResponse):
    id: str
    logical_date: datetime | None
    run_after: datetime
    note: str | None
    rendered_map_index: str | None
    rendered_fields: dict[str, Any] = {}
    trigger: TriggerResponse | None
    triggerer_job: dict[str, Any] | None


class TaskInstanceCollectionResponse(BaseModel):
    task_instances: list[TaskInstanceResponse]
    total_entries: int | None = None
    total_entries_limit: int | None = None
    next_cursor: str | None = None
    previous_cursor: str | None = None


class TaskInstanceHistoryCollectionResponse(BaseModel):
    task_instances: list[TaskInstanceHistoryResponse]
    total_entries: int


class ClearTaskInstanceCollectionResponse(BaseModel):
    task_instances: list[TaskInstanceResponse]
    total_entries: int


class PatchTaskInstanceBody(Body):
    new_state: Literal["success", "failed", "skipped"] | None = None
    note: str | None = Field(default=None, max_length=1000)
    include_upstream: bool = False
    include_downstream: bool = False
    include_future: bool = False
    include_past: bool = False

    @field_validator("new_state", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ClearTaskInstancesBody(Body):
    dry_run: bool = True
    start_date: datetime | None = None
    end_date: datetime | None = None
    only_failed: bool = True
    only_running: bool = False
    reset_dag_runs: bool = True
    task_ids: list[str | tuple[str, int]] | None = None
    dag_run_id: str | None = None
    include_upstream: bool = False
    include_downstream: bool = False
    include_future: bool = False
    include_past: bool = False
    run_on_latest_version: bool | None = None
    prevent_running_task: bool = False
    note: str | None = None


class StructuredLogMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    timestamp: datetime | None = None
    event: str


class TaskInstancesLogResponse(BaseModel):
    content: list[StructuredLogMessage] | list[str]
    continuation_token: str | None


# --- XComs -------------------------------------------------------------------------------------
class XComResponse(BaseModel):
    key: str
    timestamp: datetime
    logical_date: datetime | None
    map_index: int
    task_id: str
    dag_id: str
    run_id: str
    dag_display_name: str
    task_display_name: str
    run_after: datetime


class XComResponseNative(XComResponse):
    value: Any


class XComCollectionResponse(BaseModel):
    xcom_entries: list[XComResponse]
    total_entries: int


# --- variables, connections, pools --------------------------------------------------------------
class VariableResponse(BaseModel):
    key: str
    value: str | None
    description: str | None
    is_encrypted: bool
    team_name: str | None = None


class VariableCollectionResponse(BaseModel):
    variables: list[VariableResponse]
    total_entries: int


class VariableBody(Body):
    key: str = Field(max_length=250)
    value: JsonValue
    description: str | None = None
    team_name: str | None = None


class ConnectionResponse(BaseModel):
    connection_id: str
    conn_type: str
    description: str | None
    host: str | None
    login: str | None
    schema_: str | None = Field(alias="schema")
    port: int | None
    password: str | None
    extra: str | None
    team_name: str | None = None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class ConnectionCollectionResponse(BaseModel):
    connections: list[ConnectionResponse]
    total_entries: int


class ConnectionBody(Body):
    connection_id: str = Field(max_length=200)
    conn_type: str
    description: str | None = None
    host: str | None = None
    login: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    port: int | None = None
    password: str | None = None
    extra: str | None = None
    team_name: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PoolResponse(BaseModel):
    name: str
    slots: int
    description: str | None
    include_deferred: bool
    occupied_slots: int
    running_slots: int
    queued_slots: int
    scheduled_slots: int
    open_slots: int
    deferred_slots: int
    team_name: str | None = None


class PoolCollectionResponse(BaseModel):
    pools: list[PoolResponse]
    total_entries: int


class PoolBody(Body):
    name: str = Field(max_length=256)
    slots: int
    description: str | None = None
    include_deferred: bool = False
    team_name: str | None = None


class PoolPatchBody(Body):
    pool: str | None = Field(default=None, max_length=256)
    slots: int | None = None
    description: str | None = None
    include_deferred: bool | None = None
    team_name: str | None = None


# --- monitor, auth -----------------------------------------------------------------------------
class BaseInfoResponse(BaseModel):
    status: str | None


class SchedulerInfoResponse(BaseInfoResponse):
    latest_scheduler_heartbeat: str | None


class TriggererInfoResponse(BaseInfoResponse):
    latest_triggerer_heartbeat: str | None


class HealthInfoResponse(BaseModel):
    metadatabase: BaseInfoResponse
    scheduler: SchedulerInfoResponse
    triggerer: TriggererInfoResponse
    dag_processor: dict[str, Any] | None = None


class VersionInfo(BaseModel):
    version: str
    git_version: str | None


class LoginBody(Body):
    username: str
    password: str


class LoginResponse(BaseModel):
    access_token: str
