"""The authoring API: what DAG files import (``from shared.sdk import dag, task``)."""

from shared.sdk.baseoperator import BaseOperator, chain, cross_downstream
from shared.sdk.dag import DAG, dag
from shared.sdk.decorators import Context, defer, get_current_context, task
from shared.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
    TaskDeferralError,
    TaskDeferred,
)
from shared.sdk.mapped import OperatorPartial
from shared.sdk.operators import BashOperator, EmptyOperator, PythonOperator
from shared.sdk.task_group import TaskGroup, task_group
from shared.trigger_rule import TriggerRule
from shared.sdk.triggers import (
    BaseTrigger,
    DateTimeTrigger,
    FileTrigger,
    StartTriggerArgs,
    TaskFailedEvent,
    TaskSkippedEvent,
    TaskSuccessEvent,
    TimeDeltaTrigger,
    TriggerEvent,
)
from shared.sdk.xcom_arg import XComArg

__all__ = [
    "DAG", "AirflowException", "Context", "AirflowFailException", "AirflowSensorTimeout",
    "AirflowSkipException", "AirflowTaskTimeout", "BaseOperator", "BaseTrigger", "BashOperator",
    "DateTimeTrigger", "EmptyOperator", "FileTrigger", "OperatorPartial", "PythonOperator",
    "StartTriggerArgs", "TaskDeferralError", "TaskDeferred", "TaskFailedEvent", "TaskGroup",
    "TaskSkippedEvent", "TaskSuccessEvent", "TimeDeltaTrigger", "TriggerEvent", "TriggerRule",
    "XComArg", "chain", "cross_downstream", "dag", "defer", "get_current_context", "task", "task_group",
]
