"""Labels of mapped instances where Sluice shows them.

Rendering ``map_index_template`` and the templates of mapped arguments is the
Task SDK's (tests/unit/test_label_empty_template.py runs it for real); what
is stored per instance is shown by ``runs show`` and its JSON document.
"""

from __future__ import annotations

from shared.runs_cli import _print_run
from shared.runview import run_document


def label_column(printed: str) -> dict[str, str]:
    """The ``label`` cell of each row of the ``runs show`` table (plain lines when piped),
    by its task cell: the cells under the header's ``label`` and ``return_value``."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("task "))
    state, label, after = (lines[start].index(f" {name} ") + 1
                           for name in ("state", "label", "return_value"))
    return {line[:state].strip(): line[label:after].strip() for line in lines[start + 1:]}


async def test_without_a_template_the_label_shown_is_the_index(db, capsys, monkeypatch):
    """SEMANTICS §1: without a template the label is the index -- in the ``runs show`` table.

    The JSON keeps ``label`` null then: DESIGN.md defines it as the rendered
    ``map_index_template``, and other tools read that document.
    """
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized)"
                     " VALUES ('d', 'd.py', 'h', '{}')")
    run_pk = await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state)"
        " VALUES ('d', 'r1', 'manual', now(), 'running') RETURNING id")
    await db.execute("INSERT INTO task_instance (run_pk, task_id, map_index, state, label) VALUES"
                     " ($1, 't', 0, 'success', 'named'), ($1, 't', 1, 'success', NULL),"
                     " ($1, 't', 2, 'success', ''), ($1, 'u', -1, 'success', NULL),"
                     " ($1, 'v', -1, 'scheduled', NULL)", run_pk)
    found = await run_document(db, "r1")
    assert [(t["task_id"], t["map_index"], t["label"]) for t in found["doc"]["tasks"]] == [
        ("t", 0, "named"), ("t", 1, None), ("t", 2, ""), ("u", -1, None), ("v", -1, None)]
    monkeypatch.setenv("COLUMNS", "200")
    _print_run(found, every_instance=True)
    assert label_column(capsys.readouterr().out) == {
        "t [0]": "named", "t [1]": "1", "t [2]": "", "u": "", "v": ""}
