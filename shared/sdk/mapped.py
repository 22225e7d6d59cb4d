"""Dynamic task mapping: ``partial``, ``expand`` and ``expand_kwargs``.

At parse time a mapped task is one ``MappedOperator`` node holding the
shared (``partial``) arguments and an *expand input*. The scheduler learns
only lengths from it (``serialize``); the worker builds the real operator
for one map index with ``unmap`` (its ``__init__`` runs with that index's
values, upstream values resolved then).

Index arithmetic is Airflow's: several ``expand`` kwargs form a cross
product in the order written, the last one varying fastest; a dict maps to
its ``(key, value)`` pairs.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from typing import Any

from shared.sdk.baseoperator import AbstractOperator, BaseOperator, _apply_defaults, _as_timedelta
from shared.trigger_rule import TriggerRule
from shared.sdk.xcom_arg import PlainXComArg, XComArg, iter_xcom_references

CONTEXT_KEYS = frozenset({
    "conf", "dag", "dag_run", "data_interval_end", "data_interval_start", "ds", "ds_nodash",
    "execution_date", "inlets", "logical_date", "macros", "map_index", "outlets", "params",
    "prev_data_interval_start_success", "prev_data_interval_end_success", "run_id", "task",
    "task_instance", "templates_dict", "ti", "triggering_asset_events", "ts", "ts_nodash",
    "ts_nodash_with_tz", "try_number", "run_type", "var",
})
# The BaseOperator arguments ``expand`` accepts (Airflow 2); ``params`` merges over partial's.
MAPPABLE_BASE_ARGS = frozenset({
    "do_xcom_push", "multiple_outputs", "email_on_retry", "email_on_failure", "params"})


@cache
def base_operator_defaults() -> dict[str, Any]:
    init = getattr(BaseOperator.__init__, "__wrapped__", BaseOperator.__init__)
    return {p.name: p.default for p in inspect.signature(init).parameters.values()
            if p.kind is p.KEYWORD_ONLY}


def is_mappable(value: Any) -> bool:
    if isinstance(value, XComArg | Mapping):
        return True
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _check_xcom_key(value: Any) -> None:
    if isinstance(value, PlainXComArg) and value.key != "return_value":
        raise ValueError(f"cannot map over XCom with custom key {value.key!r} from {value.operator!r}")


def _names(keys: list[str]) -> str:
    return ", ".join(f"'{k}'" for k in keys)


def prevent_duplicates(given: Iterable[str], new: Iterable[str], *, fail_reason: str) -> None:
    """Refuse keys given twice, as Airflow's ``prevent_duplicates``: all named, sorted.

    ``TypeError("<fail_reason> argument: a")``, or ``"... arguments: a, b"`` for several.
    """
    clash = sorted(set(given) & set(new))
    if len(clash) == 1:
        raise TypeError(f"{fail_reason} argument: {clash[0]}")
    if clash:
        raise TypeError(f"{fail_reason} arguments: {', '.join(clash)}")


def _describe_type(value: Any) -> str:
    """A value's type as Airflow's mapping errors name it: ``None`` for None, else the class name."""
    return "None" if value is None else type(value).__name__


def _describe_task(kind: str, task_id: str | None, dag: Any = None, group: Any = None) -> str:
    """``task 'g.echo' of DAG 'd'``: where a mapping mistake is (``kind`` may be ``task group``)."""
    from shared.sdk.dag import current_dag
    from shared.sdk.task_group import current_group

    group = group or current_group()
    dag = dag or getattr(group, "dag", None) or current_dag()
    full = group.child_id(task_id) if group is not None and task_id is not None else task_id
    where = f"{kind} {full!r}" if full is not None else ""
    if dag is None:
        return where
    return f"{where} of DAG {dag.dag_id!r}" if where else f"DAG {dag.dag_id!r}"


@contextmanager
def naming_the_task(kind: str, task_id: str | None, dag: Any = None, group: Any = None) -> Iterator[None]:
    """Note on a mapping error which task (or group) of which DAG made it.

    Airflow's messages are kept exact (``str(exc)`` is unchanged: tests and
    users match them); the note (``exc.add_note``) reaches the DAG file's
    import error (``shared.dagbag``), so that names the DAG and the task too.
    """
    try:
        yield
    except (TypeError, ValueError) as exc:
        note = _describe_task(kind, task_id, dag, group)
        if note and note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
        raise


def _element(value: Any, resolver: Any) -> Any:
    return value.resolve(resolver) if isinstance(value, XComArg) else value


class DictOfListsExpandInput:
    """``expand(a=[...], b=upstream())``: the cross product of every value."""

    kind = "dict_of_lists"

    def __init__(self, value: dict[str, Any]):
        self.value = value

    def references(self) -> list[PlainXComArg]:
        return [r for v in self.value.values() for r in iter_xcom_references(v)]

    def has_xcom(self) -> bool:
        return any(isinstance(v, XComArg) for v in self.value.values())

    def serialize(self) -> dict:
        inputs = []
        for key, v in self.value.items():
            if isinstance(v, XComArg):
                inputs.append({"key": key, "xcom": v.to_json()})
            else:
                inputs.append({"key": key, "length": len(v)})
        return {"kind": self.kind, "inputs": inputs}

    def resolve(self, map_index: int, resolver: Any) -> tuple[dict[str, Any], set[str]]:
        """This index's value of every key, and which keys came from an upstream."""
        seqs: dict[str, Sequence] = {}
        from_xcom: set[str] = set()
        for key, v in self.value.items():
            if isinstance(v, XComArg):
                seqs[key] = v.resolve_sequence(resolver)
                from_xcom.add(key)
            elif isinstance(v, Mapping):
                seqs[key] = list(v.items())
            else:
                seqs[key] = v
        out: dict[str, Any] = {}
        rest = map_index
        for key in reversed(list(self.value)):
            n = len(seqs[key])
            out[key] = _element(seqs[key][rest % n], resolver)
            rest //= n
        return {k: out[k] for k in self.value}, from_xcom


class ListOfDictsExpandInput:
    """``expand_kwargs([{...}, {...}] | upstream())``: one instance per dict."""

    kind = "list_of_dicts"

    def __init__(self, value: Any):
        self.value = value

    def references(self) -> list[PlainXComArg]:
        return list(iter_xcom_references(self.value))

    def has_xcom(self) -> bool:
        """True when any value comes from an upstream: the whole list or one inside a literal list."""
        return isinstance(self.value, XComArg) or any(True for _ in iter_xcom_references(self.value))

    def serialize(self) -> dict:
        if isinstance(self.value, XComArg):
            return {"kind": self.kind, "xcom": self.value.to_json()}
        return {"kind": self.kind, "length": len(self.value)}

    def resolve(self, map_index: int, resolver: Any) -> tuple[dict[str, Any], set[str]]:
        seq = self.value.resolve_sequence(resolver) if isinstance(self.value, XComArg) else self.value
        if isinstance(seq, str | bytes) or not isinstance(seq, Sequence):
            raise ValueError(f"expand_kwargs() expects a list[dict], not {_describe_type(seq)}")
        mapping = _element(seq[map_index], resolver)
        if not isinstance(mapping, Mapping):
            raise ValueError(f"expand_kwargs() expects a list[dict], not list[{_describe_type(mapping)}]")
        for key in mapping:
            if not isinstance(key, str):
                raise ValueError("expand_kwargs() input dict keys must all be str, "
                                 f"but {key!r} is of type {_describe_type(key)}")
        return dict(mapping), set()


class MappedOperator(AbstractOperator):
    """One node of the DAG standing for every mapped instance of a task."""

    is_mapped = True

    def __init__(self, *, operator_class: type, partial_kwargs: dict[str, Any],
                 expand_input: Any, into_op_kwargs: bool, strict: bool = False, task_id: str,
                 dag: Any = None, task_group: Any = None, link_upstreams: bool = True):
        if link_upstreams:
            _refuse_in_mapped_group(task_id, dag, task_group)
        self._init_graph(task_id, dag, task_group)
        self.operator_class = operator_class
        self.partial_kwargs = partial_kwargs
        self.expand_input = expand_input
        self.into_op_kwargs = into_op_kwargs
        self.strict = strict
        defaults = base_operator_defaults()
        for name, default in defaults.items():
            if name not in ("task_id", "dag", "task_group", "default_args"):
                setattr(self, name, partial_kwargs.get(name, default))
        self.trigger_rule = TriggerRule(self.trigger_rule)
        self.retries = int(self.retries or 0)
        self.pool = self.pool or "default_pool"
        for name in ("retry_delay", "max_retry_delay", "execution_timeout"):
            setattr(self, name, _as_timedelta(getattr(self, name)))
        self.params = dict(self.params or {})
        self._is_empty = getattr(operator_class, "_is_empty", False)
        self.template_fields = tuple(getattr(operator_class, "template_fields", ()))
        if link_upstreams:
            for ref in [*expand_input.references(), *iter_xcom_references(partial_kwargs)]:
                self.set_upstream(ref.operator)

    @classmethod
    def for_group_task(cls, op: BaseOperator, expand_input: Any) -> MappedOperator:
        """``op``, built inside a mapped task group, as the one node of all its instances.

        It keeps ``op``'s id, arguments and edges -- the very same edge sets, so
        an edge added later through ``op`` (or an XComArg of it) reaches it too.
        The caller puts it in ``op``'s place in the DAG and the group.
        """
        from shared.sdk import baseoperator

        kwargs = {k: v for k, v in op._init_kwargs.items()
                  if k not in ("task_id", "dag", "task_group", "default_args")}
        baseoperator._detached += 1
        try:
            node = cls(operator_class=type(op), partial_kwargs=kwargs, expand_input=expand_input,
                       into_op_kwargs=False, task_id=op.task_id, dag=op.dag,
                       task_group=op.task_group, link_upstreams=False)
        finally:
            baseoperator._detached -= 1
        node.task_id = op.task_id
        node.upstream_task_ids = op.upstream_task_ids
        node.downstream_task_ids = op.downstream_task_ids
        return node

    def __repr__(self) -> str:
        return f"<Mapped({self.operator_class.__name__}): {self.task_id}>"

    @property
    def operator_name(self) -> str:
        return self.operator_class.__name__

    def serialize_mapping(self) -> dict:
        return self.expand_input.serialize()

    @property
    def start_trigger_args(self) -> Any:
        return getattr(self.operator_class, "start_trigger_args", None)

    def unmap(self, map_index: int, resolver: Any, context: dict) -> BaseOperator:
        """The real operator for one map index, templates rendered (Airflow's rules)."""
        from shared.sdk.baseoperator import _build_detached
        from shared.sdk.templating import render_field

        mapped, from_xcom = self.expand_input.resolve(map_index, resolver)
        fields = set(self.template_fields)

        def render(key: str, value: Any) -> Any:
            return render_field(self, key, value, context) if key in fields else value

        partial = {k: render(k, v) for k, v in self.partial_kwargs.items()}
        if self.into_op_kwargs:
            expanded = {k: v if k in from_xcom else render_field(self, k, v, context)
                        for k, v in mapped.items()}
            self._check_strict(partial.get("op_kwargs") or {}, expanded, "mapping already partial")
            partial["op_kwargs"] = {**(partial.get("op_kwargs") or {}), **expanded}
            kwargs = partial
        else:
            expanded = {k: v if k in from_xcom else render(k, v) for k, v in mapped.items()}
            self._check_strict(partial.keys() - {"params"}, expanded, "unmappable or already specified")
            kwargs = {**partial, **expanded}
            if "params" in self.partial_kwargs and "params" in mapped:
                kwargs["params"] = {**self.partial_kwargs["params"], **mapped["params"]}
        op = _build_detached(self.operator_class, self, kwargs)
        op._templates_rendered = True
        return op

    def _check_strict(self, partial: Iterable[str], expanded: dict, fail_reason: str) -> None:
        """``expand_kwargs(strict=True)``: a key also given to ``partial()`` fails this instance.

        ``params`` is no clash for a classic operator: the mapped params merge
        over the partial ones (Airflow keeps params out of the partial kwargs).
        """
        if self.strict:
            prevent_duplicates(partial, expanded, fail_reason=fail_reason)


def _refuse_in_mapped_group(task_id: str, dag: Any, task_group: Any) -> None:
    """Sluice, as Airflow, does not expand an operator inside a mapped task group."""
    from shared.sdk.dag import current_dag
    from shared.sdk.task_group import current_group, mapped_group_of

    own = task_group or current_group()
    group = mapped_group_of(own) if own is not None else None
    if group is None:
        return
    dag = dag or group.dag or current_dag()
    raise NotImplementedError(
        f"DAG {getattr(dag, 'dag_id', None)!r}: task {own.child_id(task_id)!r} in mapped task group "
        f"{group.group_id!r}: operator expansion in an expanded task group is not yet supported "
        "(every task of a mapped group already expands with the group: call the task without "
        ".expand()/.expand_kwargs())")


def _validate_values(mapped: dict[str, Any], where: str, quote: bool) -> None:
    if not mapped:
        raise TypeError("no arguments to expand against")
    for name, value in mapped.items():
        if not is_mappable(value):
            shown = f"'{name}'" if quote else name
            raise ValueError(f"{where}() got an unexpected type {type(value).__name__!r} "
                             f"for keyword argument {shown}")
        _check_xcom_key(value)


def _expand_kwargs_input(kwargs: Any) -> ListOfDictsExpandInput:
    if isinstance(kwargs, XComArg):
        _check_xcom_key(kwargs)
    elif not (isinstance(kwargs, Sequence) and not isinstance(kwargs, str)
              and all(isinstance(x, XComArg | Mapping) for x in kwargs)):
        raise TypeError(f"expected XComArg or list[dict], not {type(kwargs).__name__}")
    return ListOfDictsExpandInput(kwargs)


def _refuse_always(partial: dict, has_xcom: bool, how: str) -> None:
    if has_xcom and str(partial.get("trigger_rule", "")) in ("always", TriggerRule.ALWAYS):
        raise ValueError(f"Task-generated mapping within a task using '{how}' is not allowed "
                         "with trigger rule 'always'.")


def unexpected_names(where: str, unknown: list[str]) -> str:
    """Airflow's text for unknown keyword arguments of ``partial``/``expand`` (one or several)."""
    if len(unknown) == 1:
        return f"{where}() got an unexpected keyword argument '{unknown[0]}'"
    return f"{where}() got unexpected keyword arguments {_names(unknown)}"


def refuse_unknown_parameters(params: Mapping[str, inspect.Parameter], kwargs: Mapping[str, Any],
                              where: str) -> None:
    """A function's ``partial``/``expand`` names must be its parameters, unless it takes ``**kwargs``."""
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise TypeError(unexpected_names(where, unknown))


def checked_expand_input(mapped: dict[str, Any], partial_kwargs: Mapping[str, Any],
                         validate_names: Any) -> DictOfListsExpandInput:
    """A function's ``expand(**mapped)`` checked in Airflow's order (``@task`` and groups)."""
    if not mapped:
        raise TypeError("no arguments to expand against")
    validate_names(mapped, "expand")
    _validate_values(mapped, "expand", quote=True)
    prevent_duplicates(partial_kwargs, mapped, fail_reason="mapping already partial")
    return DictOfListsExpandInput(mapped)


def _refuse_unknown(operator_class: type, kwargs: Mapping[str, Any], where: str,
                    also: frozenset[str] = frozenset()) -> None:
    """Every name must be an ``__init__`` parameter of the operator class (or in ``also``)."""
    from shared.sdk.baseoperator import _init_params

    accepted = _init_params(operator_class) | also
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise TypeError(unexpected_names(where, unknown))


def _refuse_context_keys(kwargs: Mapping[str, Any], where: str) -> None:
    """A ``@task`` cannot take a context name from ``partial``/``expand``, whatever its signature.

    As Airflow's ``_validate_arg_names`` (checked before the signature): the
    value would shadow the real context value at run time.
    """
    names = [k for k in kwargs if k in CONTEXT_KEYS]
    if len(names) == 1:
        raise ValueError(f"cannot call {where}() on task context variable {names[0]!r}")
    if names:
        raise ValueError(f"cannot call {where}() on task context variables {_names(names)}")


class OperatorPartial:
    """``Op.partial(...)``: the arguments shared by every mapped instance.

    Mistakes raise Airflow's exact errors, noted with the task and its DAG.
    """

    def __init__(self, operator_class: type, kwargs: dict[str, Any]):
        with naming_the_task("task", kwargs.get("task_id"), kwargs.get("dag"), kwargs.get("task_group")):
            _refuse_unknown(operator_class, kwargs, f"{operator_class.__name__}.partial",
                            also=frozenset({"default_args"}))
            if "task_id" not in kwargs:
                raise TypeError(f"{operator_class.__name__}.partial() missing required argument 'task_id'")
            self.operator_class = operator_class
            self.kwargs = _apply_defaults(operator_class, dict(kwargs))
            slots = self.kwargs.get("pool_slots", 1)
            if isinstance(slots, int) and slots < 1:
                raise ValueError(f"pool slots for {self.kwargs['task_id']} cannot be less than 1")

    def _naming(self) -> AbstractContextManager[None]:
        kw = self.kwargs
        return naming_the_task("task", kw["task_id"], kw.get("dag"), kw.get("task_group"))

    def _mapped(self, expand_input: Any, strict: bool) -> MappedOperator:
        kwargs = dict(self.kwargs)
        task_id, dag, group = kwargs.pop("task_id"), kwargs.pop("dag", None), kwargs.pop("task_group", None)
        return MappedOperator(operator_class=self.operator_class, partial_kwargs=kwargs,
                              expand_input=expand_input, into_op_kwargs=False, strict=strict,
                              task_id=task_id, dag=dag, task_group=group)

    def _unmappable(self) -> set[str]:
        """What ``expand`` refuses: the partial kwargs and most BaseOperator arguments.

        ``params`` may be in both: the mapped params merge over the partial
        ones (``MappedOperator.unmap``), as in Airflow.
        """
        return (set(self.kwargs) - {"params"}) | (set(base_operator_defaults()) - MAPPABLE_BASE_ARGS)

    def expand(self, **mapped: Any) -> MappedOperator:
        with self._naming():
            if not mapped:
                raise TypeError("no arguments to expand against")
            name = self.operator_class.__name__
            _refuse_unknown(self.operator_class, mapped, f"{name}.expand")
            _validate_values(mapped, f"{name}.expand", quote=False)
            prevent_duplicates(self._unmappable(), mapped, fail_reason="unmappable or already specified")
            expand_input = DictOfListsExpandInput(mapped)
            _refuse_always(self.kwargs, expand_input.has_xcom(), "expand")
            self._refuse_upstream_start(mapped, "expand()")
            return self._mapped(expand_input, strict=False)

    def _refuse_upstream_start(self, values: Mapping[str, Any], where: str) -> None:
        if getattr(self.operator_class, "start_trigger_args", None) is not None:
            from shared.sdk.start_trigger import refuse_upstream

            refuse_upstream(self.kwargs, self.kwargs["task_id"], "partial()")
            refuse_upstream(values, self.kwargs["task_id"], where)

    def expand_kwargs(self, kwargs: Any, *, strict: bool = True) -> MappedOperator:
        with self._naming():
            expand_input = _expand_kwargs_input(kwargs)
            if not isinstance(kwargs, XComArg):
                for element in kwargs:
                    if isinstance(element, Mapping):
                        self._refuse_upstream_start(element, "expand_kwargs()")
            _refuse_always(self.kwargs, expand_input.has_xcom(), "expand_kwargs")
            return self._mapped(expand_input, strict=strict)


class DecoratedPartial:
    """``@task`` function ``.partial(...)``: shared function arguments.

    Mistakes raise Airflow's exact errors, noted with the task and its DAG.
    """

    def __init__(self, decorator: Any, kwargs: dict[str, Any]):
        self.decorator = decorator
        self.kwargs = kwargs
        with self._naming():
            self._validate_names(kwargs, "partial")

    def _naming(self) -> AbstractContextManager[None]:
        kw = self.decorator.kwargs
        return naming_the_task("task", kw.get("task_id") or self.decorator.function.__name__,
                               kw.get("dag"), kw.get("task_group"))

    def _validate_names(self, kwargs: dict, where: str) -> None:
        """Context names are refused first; other names must be parameters unless ``**kwargs``."""
        _refuse_context_keys(kwargs, where)
        refuse_unknown_parameters(inspect.signature(self.decorator.function).parameters, kwargs,
                                  where)

    def partial(self, **kwargs: Any) -> DecoratedPartial:
        with self._naming():
            self._validate_names(kwargs, "partial")
            prevent_duplicates(self.kwargs, kwargs, fail_reason="duplicate partial")
        return DecoratedPartial(self.decorator, {**self.kwargs, **kwargs})

    def _mapped(self, expand_input: Any, strict: bool) -> PlainXComArg:
        deco = self.decorator
        options = deco.operator_options()
        task_id = options.pop("task_id")
        dag, group = options.pop("dag", None), options.pop("task_group", None)
        partial = _apply_defaults(deco.operator_class, {
            **options, "python_callable": deco.function, "op_args": [],
            "op_kwargs": dict(self.kwargs)})
        partial.pop("dag", None)
        partial.pop("task_group", None)
        op = MappedOperator(operator_class=deco.operator_class, partial_kwargs=partial,
                            expand_input=expand_input, into_op_kwargs=True, strict=strict,
                            task_id=task_id, dag=dag, task_group=group)
        return PlainXComArg(op)

    def expand(self, **mapped: Any) -> PlainXComArg:
        with self._naming():
            expand_input = checked_expand_input(mapped, self.kwargs, self._validate_names)
            _refuse_always(self.decorator.kwargs, expand_input.has_xcom(), "expand")
            return self._mapped(expand_input, strict=False)

    def expand_kwargs(self, kwargs: Any, *, strict: bool = True) -> PlainXComArg:
        with self._naming():
            expand_input = _expand_kwargs_input(kwargs)
            _refuse_always(self.decorator.kwargs, expand_input.has_xcom(), "expand_kwargs")
            return self._mapped(expand_input, strict=strict)
