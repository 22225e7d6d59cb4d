"""A mapped try's argument read element by element, not as the whole list.

The Task SDK resolves a mapped argument by pulling the upstream's whole value and
indexing it (``XComArg.resolve`` -> ``xcom_pull``, then ``_expand_mapped_field`` or
``ListOfDictsExpandInput.resolve`` take ``value[i]``): each of N mapped tries reads,
sends, parses and deserializes all N elements. The worker stores an unmapped task's
list that downstream tasks map over element by element as well (``api_xcom_set``),
when no element holds a serde-encoded object (whose class check fails the whole list,
in every try: only the whole read says so), and serves one element with the list's
length and version (``worker.execution_api.xcoms.element``).

While an expand input resolves (``read_expand_input_lazily``), the pull made by
``PlainXComArg.resolve`` of a list it maps over -- that pull only, not a pull by the
task's own code -- is answered by ``Elements``: ``len`` and indexing, which is all the
SDK's resolution does with it, each element read once and deserialized as the whole
list's deserialization would deserialize it. Anything unusual reads the whole value the
SDK's way: another XCom backend, ``include_prior_dates``, a value without element rows,
a failed read (a worker without the route, an error), a list pushed again meanwhile.

SDK internals relied on (pinned 1.3.2): ``DictOfListsExpandInput.resolve``,
``ListOfDictsExpandInput.resolve`` and ``PlainXComArg.resolve`` (patched around, not
changed), ``XComResult``, and serde's list deserialization (element by element).
"""

from __future__ import annotations

import contextvars
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from airflow.sdk.execution_time.comms import GetXCom, XComResult

log = structlog.get_logger(logger_name="supervisor")
ROUTE = "sluice/xcom-elements"  # the worker's route (worker.execution_api.xcoms.ELEMENTS)


@dataclass(frozen=True)
class _Pull:
    task_id: str
    key: str
    own_index: bool  # the list is indexed by the try's own map index (one list, no concat)


_EXPANDING: contextvars.ContextVar[tuple[frozenset, bool] | None] = contextvars.ContextVar(
    "sluice_expanding", default=None)
"""While an expand input resolves: the (task_id, key) XComs it maps over, and whether
each is indexed by the try's own map index."""
_PULLING: contextvars.ContextVar[_Pull | None] = contextvars.ContextVar(
    "sluice_pulling", default=None)
"""While ``PlainXComArg.resolve`` pulls one of those lists."""


def answer(client, msg: GetXCom, map_index: int) -> XComResult | None:
    """The reply to ``msg`` when it is the pull of a list being mapped over and the worker
    stores its elements: ``Elements`` as the value. None: read the value whole."""
    pull = _PULLING.get()
    if pull is None or (pull.task_id, pull.key) != (msg.task_id, msg.key) \
            or msg.include_prior_dates or msg.map_index not in (None, -1) \
            or not _default_backend():
        return None
    try:
        elements = Elements.read(client, msg, map_index if pull.own_index else None)
    except Exception as exc:  # noqa: BLE001 - read whole instead: the SDK's own path and errors
        log.debug("Elements not read; the value is read whole", error=str(exc))
        return None
    if elements is None:
        return None
    return XComResult.model_construct(key=msg.key, value=elements, type="XComResult")


class Elements(Sequence):
    """A pushed list read one element at a time; ``Elements(...)[i]`` is the whole
    value's ``deserialize(value)[i]``. Each element is read once (indexing twice answers
    the same object, as a list does). A read that fails, or finds the list pushed again
    since the first read, reads the value whole through the task's comms and indexes it.
    """

    def __init__(self, fetch: Callable[[int], dict], length: int, version: str,
                 first: dict[int, Any], whole: Callable[[], Any]):
        self._fetch, self._length, self._version = fetch, length, version
        self._raw, self._kept, self._whole = first, {}, whole
        self._fallback: list | None = None

    @classmethod
    def read(cls, client, msg: GetXCom, guess: int | None) -> Elements | None:
        """The list's length, version and element ``guess`` (none: the length only), or None
        when the worker stores no elements of it (a 404)."""
        from airflow.sdk.api.client import ServerResponseError

        path = f"{ROUTE}/{msg.dag_id}/{msg.run_id}/{msg.task_id}"

        def fetch(index: int | None) -> dict:
            url = path if index is None else f"{path}/{index}"
            return client.get(url, params={"key": msg.key}).json()

        try:
            first = fetch(guess)
        except ServerResponseError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return None
            raise
        kept = {guess: first["value"]} if guess is not None and "value" in first else {}
        return cls(fetch, int(first["length"]), str(first["version"]), kept,
                   lambda: _read_whole(msg))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        index = operator.index(index)
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("list index out of range")
        if self._fallback is not None:
            return self._fallback[index]
        if index not in self._kept:
            from airflow.sdk.serde import deserialize

            raw = self._raw.pop(index) if index in self._raw else self._element(index)
            if raw is _CHANGED:
                self._fallback = self._read_again()
                return self._fallback[index]
            self._kept[index] = deserialize(raw)
        return self._kept[index]

    def _read_again(self) -> list:
        whole = self._whole()
        if not isinstance(whole, list):  # the upstream's value went (a clear) or changed kind
            raise RuntimeError(f"the list mapped over changed while this try read it: now "
                               f"{type(whole).__name__}")
        return whole

    def _element(self, index: int) -> Any:
        try:
            got = self._fetch(index)
        except Exception as exc:  # noqa: BLE001 - the whole read reports it the SDK's way
            log.debug("Element not read; the value is read whole", index=index, error=str(exc))
            return _CHANGED
        if str(got.get("version")) != self._version or "value" not in got:
            return _CHANGED
        return got["value"]

    def __repr__(self) -> str:
        return f"<list of {self._length} elements, read one by one>"


_CHANGED = object()


def _read_whole(msg: GetXCom) -> Any:
    """The value read whole, as ``XCom.get_one`` reads it (through the task's comms)."""
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.xcom import XCom

    reply = task_runner.SUPERVISOR_COMMS.send(msg)
    return None if reply.value is None else XCom.deserialize_value(reply)


def read_expand_input_lazily() -> None:
    """Patch the SDK's expand inputs and ``PlainXComArg.resolve`` to mark the pulls
    ``answer`` may answer with ``Elements``. Idempotent."""
    from airflow.sdk.definitions._internal.expandinput import (
        DictOfListsExpandInput,
        ListOfDictsExpandInput,
    )
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    for cls, wrap in ((DictOfListsExpandInput, _expanding), (ListOfDictsExpandInput, _expanding),
                      (PlainXComArg, _pulling)):
        if not getattr(cls.resolve, "sluice_lazy", False):
            cls.resolve = wrap(cls.resolve)


def _expanding(resolve):
    def marked(self, context):
        return _resolving(_EXPANDING, _maps_over(self), resolve, self, context)

    marked.sluice_lazy = True
    return marked


def _resolving(var: contextvars.ContextVar, value, resolve, self, context):
    """``resolve(self, context)`` with ``var`` set to ``value`` meanwhile."""
    token = var.set(value)
    try:
        return resolve(self, context)
    finally:
        var.reset(token)


def _maps_over(expand_input) -> tuple[frozenset, bool] | None:
    """The lists an expand input indexes, and whether by the try's own map index."""
    from airflow.sdk.definitions._internal.expandinput import DictOfListsExpandInput
    from airflow.sdk.definitions.xcom_arg import ConcatXComArg, XComArg

    value = expand_input.value
    if isinstance(expand_input, DictOfListsExpandInput):
        own = len(value) == 1 and not any(isinstance(v, ConcatXComArg) for v in value.values())
    elif isinstance(value, XComArg):  # expand_kwargs(xcom_arg): a list of dicts
        own = not isinstance(value, ConcatXComArg)
    else:  # expand_kwargs([...]): each XComArg read as a whole dict
        return None
    return frozenset((op.task_id, key) for op, key in expand_input.iter_references()), own


def _pulling(resolve):
    def marked(self, context):
        expanding = _EXPANDING.get()
        ref = (self.operator.task_id, self.key)
        if expanding is None or ref not in expanding[0]:
            return resolve(self, context)
        return _resolving(_PULLING, _Pull(*ref, own_index=expanding[1]), resolve, self, context)

    marked.sluice_lazy = True
    return marked


def _default_backend() -> bool:
    from airflow.sdk.bases.xcom import BaseXCom
    from airflow.sdk.execution_time.xcom import XCom

    return XCom is BaseXCom
