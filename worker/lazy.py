"""``LazyXComSequence``: a mapped upstream's values, fetched from the worker on demand.

Ordered by map_index with missing values (skipped, failed, returned
``None``) dropped, as Airflow's. ``len()`` is one count query; items come in
pages, so a reduce over 10,000 values never loads them just to be counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from shared import serde

PAGE = 500


class LazyXComSequence(Sequence):
    def __init__(self, call: Any, task_id: str, key: str):
        self._call = call
        self.task_id = task_id
        self.key = key
        self._len: int | None = None
        self._pages: dict[int, list] = {}

    def __len__(self) -> int:
        if self._len is None:
            self._len = int(self._call("xcom_count", task_id=self.task_id, key=self.key))
        return self._len

    def _page(self, number: int) -> list:
        if number not in self._pages:
            raw = self._call("xcom_range", task_id=self.task_id, key=self.key,
                             offset=number * PAGE, limit=PAGE)
            self._pages[number] = [serde.from_jsonable(v) for v in json.loads(raw)]
        return self._pages[number]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("list index out of range")
        return self._page(index // PAGE)[index % PAGE]

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def to_list(self) -> list:
        return list(self)

    def __repr__(self) -> str:
        return f"LazyXComSequence([{len(self)} items])"


class LazyValueSequence(Sequence):
    """One unmapped upstream's list (or dict, as ``(key, value)`` pairs), element by element.

    Used to expand over an upstream output: each mapped instance fetches its
    own element instead of the whole value (10,000 instances would otherwise
    move 10,000 x 10,000 elements).
    """

    def __init__(self, call: Any, task_id: str, key: str, length: int):
        self._call = call
        self.task_id = task_id
        self.key = key
        self._len = length

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("list index out of range")
        raw = self._call("xcom_item", task_id=self.task_id, key=self.key, index=index)
        item = json.loads(raw)
        if isinstance(item, dict) and "pair" in item:
            return tuple(serde.from_jsonable(item["pair"]))
        return serde.from_jsonable(item["value"])

    def to_list(self) -> list:
        return [self[i] for i in range(self._len)]
