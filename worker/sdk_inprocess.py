"""The Task SDK's supervisor side, answering a task that runs in this same process.

In Airflow a task runs in a forked child that sends each request (XCom, variable,
terminal state ...) over a socket to its supervisor, whose
``ActivitySubprocess._handle_request`` turns it into an Execution API call. A
slot runs many tries in one process, so the socket is skipped: ``TryComms``
is the task's ``SUPERVISOR_COMMS`` and hands each request straight to that same
handler. What crosses is what would cross the socket: the reply is dumped and
validated again as the task's decoder would (an XCom reply, parsed from JSON, is
handed over as it is: the round trip would only copy it), and an API error reaches
the task as the ``AirflowRuntimeError`` it would get from a real supervisor.

A mapped try's own argument is read element by element (``worker.sdk_elements``).

SDK internals relied on (pinned 1.3.2): ``ActivitySubprocess`` (its attrs
fields, ``_handle_request`` -- for ``GetXCom`` it is ``handle_get_xcom``, done here
without copying the value twice --, ``send_msg``, ``_terminal_state``,
``_should_retry``, ``_exit_code``, ``final_state``,
``update_task_state_if_needed``), ``set_supervisor_comms``, and the reply
types ``comms.ToTask`` / ``ErrorResponse``.
"""

from __future__ import annotations

from typing import Any

import attrs
import structlog
from airflow.sdk.api.client import ServerResponseError
from airflow.sdk.api.datamodels._generated import XComResponse
from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
from airflow.sdk.execution_time.comms import (
    ErrorResponse,
    GetXCom,
    GetXComSequenceItem,
    ToTask,
    XComResult,
    XComSequenceIndexResult,
    XComSequenceSliceResult,
)
from airflow.sdk.execution_time.supervisor import ActivitySubprocess, set_supervisor_comms
from pydantic import TypeAdapter

from worker import sdk_elements

log = structlog.get_logger(logger_name="supervisor")
_TO_TASK: TypeAdapter = TypeAdapter(ToTask)


@attrs.define(kw_only=True)
class TrySupervisor(ActivitySubprocess):
    """The supervisor of one try run in-process: the SDK's request handler and final-state rules.

    ``_exit_code`` is set by the caller to the code the task process would have
    exited with (0, or 1 when the task runner fails closed), so ``final_state``
    and ``update_task_state_if_needed`` apply the SDK's own rules unchanged.
    """

    stdin: Any = attrs.field(default=None, init=False)  # no child, no socket to it
    _reply: tuple[Any, Any, dict] | None = attrs.field(default=None, init=False)

    def send_msg(self, msg, request_id: int, error: ErrorResponse | None = None, **dump_opts) -> None:
        self._reply = (msg, error, dump_opts)

    def close(self) -> None:
        self.selector.close()  # created per instance by the base class; unused in-process


class TryComms:
    """``SUPERVISOR_COMMS`` for a task in this process: requests go to ``TrySupervisor``."""

    def __init__(self, supervisor: TrySupervisor):
        self.supervisor = supervisor
        self.chunks: dict[tuple, tuple[int, list]] = {}

    def send(self, msg) -> Any:
        if isinstance(msg, GetXComSequenceItem) and (hit := self._item(msg)) is not None:
            return hit
        if type(msg) is GetXCom and (lazy := sdk_elements.answer(
                self.supervisor.client, msg, self.supervisor.ti.map_index)) is not None:
            return lazy
        sup = self.supervisor
        sup._reply = None
        try:
            with set_supervisor_comms(None):  # the handler's own secrets lookups are the server's
                if type(msg) is GetXCom:
                    sup._reply = _get_xcom(sup.client, msg)
                else:
                    sup._handle_request(msg, log, 0)
        except ServerResponseError as exc:  # as WatchedSubprocess.handle_requests answers it
            detail = exc.response.json() if exc.response is not None else None
            log.error("API server error", status_code=exc.response.status_code, detail=detail,
                      message=str(exc))
            raise AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={
                "status_code": exc.response.status_code, "message": str(exc), "detail": detail})) from None
        except Exception as exc:  # noqa: BLE001 - a transport error reaches the task as an error reply
            log.exception("Unhandled exception while handling task request")
            raise AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={
                "status_code": None, "message": str(exc), "exception_type": type(exc).__name__})) from None
        return _decoded(sup._reply)

    async def asend(self, msg) -> Any:
        return self.send(msg)

    def _item(self, msg) -> Any:
        """An item of a lazy XCom sequence, from a chunk read through the slice route.

        The SDK's ``LazyXComSequence`` iterates one item call at a time (a reduce over
        1,000 mapped results made 1,001 calls); this reads ``ITEM_CHUNK`` values per
        call, for this try only, and answers what the item call would have answered.
        An offset past the values (the iteration's end) or an error goes the SDK's own
        way, so its 404, log line and ``IndexError`` are unchanged.
        """
        where = (msg.dag_id, msg.run_id, msg.task_id, msg.key)
        start, values = self.chunks.get(where, (0, []))
        if msg.offset < 0:
            return None
        if not start <= msg.offset < start + len(values):
            try:
                values = self.supervisor.client.xcoms.get_sequence_slice(
                    *where, msg.offset, msg.offset + ITEM_CHUNK, None).root
            except Exception:  # noqa: BLE001 - the item call reports it as the SDK does
                return None
            start = msg.offset
            self.chunks[where] = (start, values)
        if msg.offset - start >= len(values):
            return None
        return _decoded((XComSequenceIndexResult(root=values[msg.offset - start]), None, {}))


ITEM_CHUNK = 256  # values of a lazy XCom sequence read per API call


def _get_xcom(client, msg: GetXCom) -> tuple[Any, None, dict]:
    """``_handle_request`` for a ``GetXCom``: ``request_handlers.handle_get_xcom``, but the
    ``XComResult`` built from the parsed answer's fields as they are (``from_xcom_response``
    dumps and validates the value again: 0.4 ms for a 1,000-element list, per mapped try)."""
    log.debug("Received message from task runner", msg=msg)
    xcom = client.xcoms.get(msg.dag_id, msg.run_id, msg.task_id, msg.key, msg.map_index,
                            msg.include_prior_dates)
    if isinstance(xcom, XComResponse):
        return XComResult.model_construct(key=xcom.key, value=xcom.value, type="XComResult"), \
            None, {"exclude_unset": True}
    return xcom, None, {}


def _decoded(reply: tuple[Any, Any, dict] | None) -> Any:
    """The reply as the task's ``CommsDecoder`` would decode it from the frame.

    An XCom reply is handed over as it is: its value was parsed from the API's JSON
    answer (plain lists, dicts, strings, numbers), which a dump and validation would
    only copy -- a copy per item of a 10,000-element value, for each mapped try.
    """
    if reply is None:
        return None
    msg, error, dump_opts = reply
    if msg is None:
        if error is not None:
            raise AirflowRuntimeError(error=error)
        return None
    if type(msg) in _AS_PARSED:
        return msg
    return _TO_TASK.validate_python(msg.model_dump(**dump_opts))


_AS_PARSED = (XComResult, XComSequenceIndexResult, XComSequenceSliceResult)
