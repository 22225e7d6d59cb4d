"""A DAG's shape for the UI: its group tree, the grid's row order and a graph layout.

Pure functions of the serialized DAG (``DagSpec``). Task groups are compound
nodes laid out recursively, left to right: inside each group (and at the top)
the direct children — tasks and subgroups — are ranked by the longest path over
the edges between them, so a group's box never overlaps another node. A mapped
group (the tasks that expand with it) and a mapped task are flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.runview import graph_order
from shared.serialization import DagSpec

TASK_H = 36
GAP_X = 56
GAP_Y = 18
PAD = 14
HEADER = 24


@dataclass
class Item:
    """A task or a group in the tree; a group's ``children`` are in topological order."""

    id: str
    kind: str  # "task" | "group"
    label: str
    mapped: bool = False
    operator: str | None = None
    children: list[Item] = field(default_factory=list)
    w: float = 0.0
    h: float = 0.0
    x: float = 0.0
    y: float = 0.0


def group_parents(spec: DagSpec) -> dict[str, str | None]:
    """Every group id with its parent group (``None`` at the top).

    Group keys cannot hold dots, so each dot prefix of a nested group's id is
    one of its ancestors.
    """
    parents: dict[str, str | None] = {}
    for task in spec.tasks:
        gid = task.group_id
        while gid and gid not in parents:
            parent = gid.rpartition(".")[0] or None
            parents[gid] = parent
            gid = parent
    return parents


def _short(full_id: str, parent: str | None) -> str:
    prefix = f"{parent}." if parent else ""
    return full_id[len(prefix):] if full_id.startswith(prefix) else full_id


def build_tree(spec: DagSpec) -> Item:
    """The group tree, every level's children in the order Airflow's grid lists them
    (``shared.runview.graph_order``, the CLI's order too)."""
    parents = group_parents(spec)
    mapped_groups = {t.mapped_group for t in spec.tasks if t.mapped_group}
    root = Item(id="", kind="group", label=spec.dag_id)
    groups = {"": root}
    for gid in sorted(parents, key=lambda g: g.count(".")):
        parent = parents[gid] or ""
        item = Item(id=gid, kind="group", label=_short(gid, parents[gid]),
                    mapped=gid in mapped_groups)
        groups[gid] = item
        groups[parent].children.append(item)
    for task in spec.tasks:
        groups[task.group_id or ""].children.append(
            Item(id=task.task_id, kind="task", label=_short(task.task_id, task.group_id),
                 mapped=task.mapped is not None or task.mapped_group is not None,
                 operator=task.operator))
    structure = [{"task_id": t.task_id, "upstream": t.upstream, "group_id": t.group_id}
                 for t in spec.tasks]
    order = graph_order(structure, {t.task_id for t in spec.tasks})
    _order(root, {tid: i for i, tid in enumerate(order)})
    return root


def _edges(spec: DagSpec) -> list[tuple[str, str]]:
    return [(t.task_id, d) for t in spec.tasks for d in t.downstream]


def _leaves(item: Item) -> list[str]:
    if item.kind == "task":
        return [item.id]
    return [tid for child in item.children for tid in _leaves(child)]


def _lifted(item: Item, edges: list[tuple[str, str]]) -> tuple[dict[str, Item], set[tuple[str, str]]]:
    """The children of ``item`` by id, and the task edges between two different children."""
    owner = {tid: child.id for child in item.children for tid in _leaves(child)}
    lifted = {(owner[a], owner[b]) for a, b in edges
              if a in owner and b in owner and owner[a] != owner[b]}
    return {c.id: c for c in item.children}, lifted


def _order(item: Item, position: dict[str, int]) -> None:
    """Each group's children in the grid's order: by their first task in graph order."""
    if item.kind == "task":
        return
    for child in item.children:
        _order(child, position)
    item.children.sort(key=lambda c: min((position[t] for t in _leaves(c)), default=0))


def grid_rows(spec: DagSpec) -> list[dict]:
    """The grid's rows: groups and tasks depth first, in graph order."""
    rows: list[dict] = []

    def walk(item: Item, depth: int, group: str | None) -> None:
        for child in item.children:
            rows.append({"id": child.id, "kind": child.kind, "label": child.label,
                         "depth": depth, "mapped": child.mapped, "group": group})
            if child.kind == "group":
                walk(child, depth + 1, child.id)

    walk(build_tree(spec), 0, None)
    return rows


def _task_width(label: str, mapped: bool) -> float:
    return float(min(max(len(label) * 7.5 + (48 if mapped else 28), 110), 300))


def _measure(item: Item, edges: list[tuple[str, str]]) -> None:
    """Size every node, and place each child relative to its group's top-left corner."""
    if item.kind == "task":
        item.w, item.h = _task_width(item.label, item.mapped), TASK_H
        return
    for child in item.children:
        _measure(child, edges)
    columns = _columns(item, edges)
    x = PAD
    heights = [sum(c.h for c in col) + GAP_Y * (len(col) - 1) for col in columns]
    inner_h = max(heights, default=TASK_H)
    for col, col_h in zip(columns, heights, strict=True):
        width = max(c.w for c in col)
        y = PAD + HEADER + (inner_h - col_h) / 2
        for child in col:
            child.x, child.y = x + (width - child.w) / 2, y
            y += child.h + GAP_Y
        x += width + GAP_X
    item.w = max(x - GAP_X + PAD, _task_width(item.label, False) + 2 * PAD)
    item.h = inner_h + 2 * PAD + HEADER


def _columns(item: Item, edges: list[tuple[str, str]]) -> list[list[Item]]:
    """Children by rank (longest path over forward edges), each column ordered by the
    mean row of its upstream children (one barycentre sweep)."""
    children, lifted = _lifted(item, edges)
    index = {c.id: i for i, c in enumerate(item.children)}
    rank: dict[str, int] = {}
    for child in item.children:  # topological order: upstreams are ranked first
        ups = [rank[a] for a, b in lifted if b == child.id and index[a] < index[child.id]]
        rank[child.id] = max(ups, default=-1) + 1
    columns: list[list[Item]] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    row: dict[str, float] = {}
    for col_no in range(len(columns)):
        members = [c for c in item.children if rank[c.id] == col_no]

        def centre(child: Item) -> float:
            ups = [row[a] for a, b in lifted if b == child.id and a in row]
            return sum(ups) / len(ups) if ups else index[child.id]

        members.sort(key=lambda c: (centre(c), index[c.id]))
        for i, child in enumerate(members):
            row[child.id] = i
        columns[col_no] = members
    return [col for col in columns if col]


def _flatten(item: Item, ox: float, oy: float, out: list[dict], depth: int) -> None:
    for child in item.children:
        x, y = ox + child.x, oy + child.y
        out.append({"id": child.id, "kind": child.kind, "label": child.label,
                    "mapped": child.mapped, "operator": child.operator, "depth": depth,
                    "x": round(x, 1), "y": round(y, 1), "w": round(child.w, 1),
                    "h": round(child.h, 1)})
        if child.kind == "group":
            _flatten(child, x, y, out, depth + 1)


def layout(spec: DagSpec) -> dict:
    """Nodes (groups before their members) with absolute boxes, and one curve per edge."""
    edges = _edges(spec)
    root = build_tree(spec)
    _measure(root, edges)
    nodes: list[dict] = []
    _flatten(root, -PAD, -PAD - HEADER, nodes, 0)
    boxes = {n["id"]: n for n in nodes if n["kind"] == "task"}
    return {"width": round(root.w - 2 * PAD, 1), "height": round(root.h - 2 * PAD - HEADER, 1),
            "nodes": nodes,
            "edges": [{"source": a, "target": b, "path": _curve(boxes[a], boxes[b])}
                      for a, b in edges if a in boxes and b in boxes]}


def _curve(a: dict, b: dict) -> str:
    """An SVG path from the right middle of ``a`` to the left middle of ``b``."""
    x1, y1 = a["x"] + a["w"], a["y"] + a["h"] / 2
    x2, y2 = b["x"], b["y"] + b["h"] / 2
    bend = max(abs(x2 - x1) / 2, 30)
    return (f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} "
            f"{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}")
