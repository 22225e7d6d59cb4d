"""References to upstream task outputs (``XComArg``), resolved in the worker.

``.map(fn)``, ``.zip(...)`` and ``.concat(...)`` build derived references
whose elements are computed lazily, per element, in the consuming worker.
Over dict outputs they all work on ``(key, value)`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from shared.sdk.baseoperator import DependencyMixin
from shared.sdk.task_group import mapped_group_of

RETURN_KEY = "return_value"
NOTSET: Any = object()


class Resolver(Protocol):
    """What the worker gives an XComArg to fetch upstream values.

    The worker's resolver is also the consuming instance (``task``,
    ``map_index``, ``xcom_pull``): inside a mapped task group, values are
    read for that instance's own map index.
    """

    def pull(self, task_id: str, key: str) -> Any: ...


def as_sequence(value: Any, what: str) -> Sequence:
    """A mappable value as a sequence: dicts become ``(key, value)`` pairs."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, str | bytes) or not (hasattr(value, "__len__") and hasattr(value, "__getitem__")):
        raise ValueError(f"XCom {what} expects sequence or dict, not {type(value).__name__}")
    return value


class XComArg(DependencyMixin):
    """A value some upstream task produces; passing it to a task makes that task a downstream.

    ``XComArg(op)`` / ``XComArg(op, key="k")`` is Airflow's documented way to
    reference an operator's output: it returns the same ``PlainXComArg`` as
    ``op.output`` / ``op.output["k"]``.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> XComArg:
        if cls is XComArg:
            return PlainXComArg(*args, **kwargs)
        return super().__new__(cls)

    def iter_references(self) -> Iterator[PlainXComArg]:
        raise NotImplementedError

    def resolve(self, resolver: Resolver) -> Any:
        raise NotImplementedError

    def to_json(self) -> dict:
        raise NotImplementedError

    def resolve_sequence(self, resolver: Resolver) -> Sequence:
        """The value as a sequence to map over, fetched element by element where possible."""
        return as_sequence(self.resolve(resolver), "expand")

    def set_upstream(self, other: Any) -> None:
        for ref in self.iter_references():
            ref.operator.set_upstream(other)

    def set_downstream(self, other: Any) -> None:
        for ref in self.iter_references():
            ref.operator.set_downstream(other)

    def map(self, fn: Callable[[Any], Any]) -> MapXComArg:
        from shared.sdk.decorators import TaskDecorator

        if isinstance(fn, TaskDecorator):
            raise ValueError("map() argument must be a plain function, not a @task operator")
        _require_return(self, "cannot map against non-return XCom")
        if isinstance(self, MapXComArg):
            return MapXComArg(self.arg, [*self.callables, fn])
        return MapXComArg(self, [fn])

    def zip(self, *others: XComArg, fillvalue: Any = NOTSET) -> ZipXComArg:
        for arg in (self, *others):
            _require_return(arg, "cannot map against non-return XCom")
        return ZipXComArg([self, *others], fillvalue)

    def concat(self, *others: XComArg) -> ConcatXComArg:
        args: list[XComArg] = []
        for arg in (self, *others):
            _require_return(arg, "cannot concatenate non-return XCom")
            args += arg.args if isinstance(arg, ConcatXComArg) else [arg]
        return ConcatXComArg(args)


def _same_group_index(producer: Any, resolver: Any) -> int | None:
    """The consumer's map index when it shares ``producer``'s mapped task group, else None.

    Instance *i* of a task in a mapped group reads instance *i* of the
    others; a task outside the group reads them all (a lazy sequence).
    """
    consumer = getattr(resolver, "task", None)
    index = getattr(resolver, "map_index", None)
    if consumer is None or index is None or index < 0:
        return None
    mine = mapped_group_of(producer)
    theirs = mapped_group_of(consumer) if mine is not None else None
    return index if theirs is not None and theirs.group_id == mine.group_id else None


def _require_return(arg: XComArg, message: str) -> None:
    if not isinstance(arg, XComArg):
        raise TypeError(f"expected XComArg, not {type(arg).__name__}")
    if isinstance(arg, PlainXComArg) and arg.key != RETURN_KEY:
        raise ValueError(message)


class PlainXComArg(XComArg):
    """``task.output`` / the result of calling a ``@task``; ``arg["key"]`` picks another key."""

    def __init__(self, operator: Any, key: str = RETURN_KEY):
        self.operator = operator
        self.key = key

    def __getitem__(self, key: str) -> PlainXComArg:
        return PlainXComArg(self.operator, key)

    def __iter__(self):
        raise TypeError("'XComArg' object is not iterable")

    def __repr__(self) -> str:
        return f"XComArg({self.operator.task_id!r}, {self.key!r})"

    def __str__(self) -> str:
        """Airflow's Jinja pull of this value, so ``f"echo {op.output}"`` renders it at run time.

        Only a templated field renders it; the string alone adds no dependency.
        """
        dag_id = getattr(self.operator.dag, "dag_id", None)
        pull = [f"task_ids='{self.operator.task_id}'", f"dag_id='{dag_id}'"]
        if self.key is not None:
            pull.append(f"key='{self.key}'")
        return "{{ task_instance.xcom_pull(" + ", ".join(pull) + ") }}"

    def iter_references(self) -> Iterator[PlainXComArg]:
        yield self

    def resolve(self, resolver: Resolver) -> Any:
        index = _same_group_index(self.operator, resolver)
        if index is not None:
            return resolver.xcom_pull(task_ids=self.operator.task_id, key=self.key,
                                      map_indexes=index)
        return resolver.pull(self.operator.task_id, self.key)

    def resolve_sequence(self, resolver: Resolver) -> Sequence:
        pull_sequence = getattr(resolver, "pull_sequence", None)
        if pull_sequence is None:
            return super().resolve_sequence(resolver)
        return pull_sequence(self.operator.task_id, self.key)

    def to_json(self) -> dict:
        return {"op": "plain", "task_id": self.operator.task_id, "key": self.key}


class MapXComArg(XComArg):
    def __init__(self, arg: XComArg, callables: list[Callable[[Any], Any]]):
        self.arg = arg
        self.callables = callables

    def iter_references(self) -> Iterator[PlainXComArg]:
        yield from self.arg.iter_references()

    def resolve(self, resolver: Resolver) -> Any:
        return MapResult(as_sequence(self.arg.resolve(resolver), "map"), self.callables)

    def resolve_sequence(self, resolver: Resolver) -> Sequence:
        return MapResult(self.arg.resolve_sequence(resolver), self.callables)

    def to_json(self) -> dict:
        return {"op": "map", "arg": self.arg.to_json()}


class ZipXComArg(XComArg):
    def __init__(self, args: list[XComArg], fillvalue: Any):
        self.args = args
        self.fillvalue = fillvalue

    def iter_references(self) -> Iterator[PlainXComArg]:
        for arg in self.args:
            yield from arg.iter_references()

    def resolve(self, resolver: Resolver) -> Any:
        return ZipResult([as_sequence(a.resolve(resolver), "zip") for a in self.args], self.fillvalue)

    def resolve_sequence(self, resolver: Resolver) -> Sequence:
        return ZipResult([a.resolve_sequence(resolver) for a in self.args], self.fillvalue)

    def to_json(self) -> dict:
        return {"op": "zip", "args": [a.to_json() for a in self.args],
                "longest": self.fillvalue is not NOTSET}


class ConcatXComArg(XComArg):
    def __init__(self, args: list[XComArg]):
        self.args = args

    def iter_references(self) -> Iterator[PlainXComArg]:
        for arg in self.args:
            yield from arg.iter_references()

    def resolve(self, resolver: Resolver) -> Any:
        return ConcatResult([as_sequence(a.resolve(resolver), "concat") for a in self.args])

    def resolve_sequence(self, resolver: Resolver) -> Sequence:
        return ConcatResult([a.resolve_sequence(resolver) for a in self.args])

    def to_json(self) -> dict:
        return {"op": "concat", "args": [a.to_json() for a in self.args]}


class _LazyResult(Sequence):
    """Base of the lazy derived sequences: list-like, computed per element."""

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._at(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("list index out of range")
        return self._at(index)

    def _at(self, index: int) -> Any:
        raise NotImplementedError

    def to_list(self) -> list:
        return [self._at(i) for i in range(len(self))]

    def __repr__(self) -> str:
        return f"{type(self).__name__}([{len(self)} items])"


class MapResult(_LazyResult):
    def __init__(self, value: Sequence, callables: list[Callable[[Any], Any]]):
        self.value = value
        self.callables = callables

    def __len__(self) -> int:
        return len(self.value)

    def _at(self, index: int) -> Any:
        item = self.value[index]
        for fn in self.callables:
            item = fn(item)
        return item


class ZipResult(_LazyResult):
    def __init__(self, values: list[Sequence], fillvalue: Any):
        self.values = values
        self.fillvalue = fillvalue

    def __len__(self) -> int:
        lengths = [len(v) for v in self.values]
        return max(lengths) if self.fillvalue is not NOTSET else min(lengths)

    def _at(self, index: int) -> Any:
        return tuple(v[index] if index < len(v) else self.fillvalue for v in self.values)


class ConcatResult(_LazyResult):
    def __init__(self, values: list[Sequence]):
        self.values = values

    def __len__(self) -> int:
        return sum(len(v) for v in self.values)

    def _at(self, index: int) -> Any:
        for value in self.values:
            if index < len(value):
                return value[index]
            index -= len(value)
        raise IndexError("list index out of range")


def iter_xcom_references(value: Any) -> Iterator[PlainXComArg]:
    """Every XComArg reference inside nested lists/tuples/dicts/sets."""
    if isinstance(value, XComArg):
        yield from value.iter_references()
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_xcom_references(v)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from iter_xcom_references(v)
