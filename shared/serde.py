"""JSON with a few tagged types: how task values cross process boundaries.

No pickle: XCom values, trigger kwargs and ``next_kwargs`` are JSON. Dates,
datetimes, timedeltas, tuples and sets are tagged so they come back as the
same type. Anything else that ``json`` cannot encode is refused with a
``TypeError`` naming the type and where it was found.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta
from typing import Any

TAG = "__sluice_type__"


def to_jsonable(value: Any, where: str = "value") -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise TypeError(f"{where} is {value!r}, which is not JSON-serialisable (JSON has no "
                        "NaN or Infinity): return None or a string such as 'nan' instead")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-string dict key {k!r}: JSON objects need string keys")
            out[k] = to_jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, list):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {TAG: "tuple", "items": [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, set | frozenset):
        return {TAG: "set", "items": [to_jsonable(v, where) for v in value]}
    if isinstance(value, datetime):
        return {TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, date):
        return {TAG: "date", "value": value.isoformat()}
    if isinstance(value, timedelta):
        return {TAG: "timedelta", "seconds": value.total_seconds()}
    if hasattr(value, "to_list"):  # lazy sequences (reduce inputs, .map/.zip/.concat results)
        return to_jsonable(value.to_list(), where)
    if hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, bytes):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]  # lazy sequences
    raise TypeError(
        f"{where} of type {type(value).__name__} is not JSON-serialisable: "
        "return or pass only JSON values (dict, list, str, int, float, bool, None, dates)"
    )


def from_jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(TAG)
    if tag is None:
        return {k: from_jsonable(v) for k, v in value.items()}
    match tag:
        case "tuple":
            return tuple(from_jsonable(v) for v in value["items"])
        case "set":
            return {from_jsonable(v) for v in value["items"]}
        case "datetime":
            return datetime.fromisoformat(value["value"])
        case "date":
            return date.fromisoformat(value["value"])
        case "timedelta":
            return timedelta(seconds=value["seconds"])
    return value


def dumps(value: Any, where: str = "value") -> str:
    return json.dumps(to_jsonable(value, where), separators=(",", ":"), allow_nan=False)


def loads(text: str) -> Any:
    return from_jsonable(json.loads(text))
