"""Quarantine: lessons the gate or the guard refused, kept unserved until a person decides.

A library whose settings say `quarantine` keeps a lesson refused for what it says (not one
that is empty or too long) here instead of dropping it. Nothing here is ever part of a served
prompt; `ted review` lists the pending ones, and approving one applies its operation as a new
library version (the person's decision stands in for the rule that refused it), rejecting one
only marks it. These functions run inside the caller's transaction or read.
"""

import json
import sqlite3
from collections.abc import Sequence

from ted.errors import InvalidInput
from ted.store.database import timestamp
from ted.store.records import Operation, Quarantined, RefusedBy

Held = tuple[Operation, str, RefusedBy]  # the operation, why it was refused, by what


def hold(db: sqlite3.Connection, library: sqlite3.Row, items: Sequence[Held], source: str) -> list[Quarantined]:
    """Keep the refused lessons; one already pending with the same text is kept once."""
    kept = []
    for op, reason, by in items:
        db.execute(
            "INSERT INTO quarantine (library_id, text, reason, refused_by, operation, source, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (library_id, text) WHERE state = 'pending' DO NOTHING",
            (library["id"], op.text, reason, by, op.model_dump_json(), source, timestamp()),
        )
        row = db.execute(
            "SELECT * FROM quarantine WHERE library_id = ? AND text = ? AND state = 'pending'", (library["id"], op.text)
        ).fetchone()
        kept.append(_record(library["name"], row))
    return kept


def listed(db: sqlite3.Connection, library: str | None, *, pending_only: bool) -> list[Quarantined]:
    sql = "SELECT q.*, l.name AS library FROM quarantine q JOIN libraries l ON l.id = q.library_id"
    where, args = [], []
    if library is not None:
        where.append("l.name = ?")
        args.append(library)
    if pending_only:
        where.append("q.state = 'pending'")
    sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY q.id"
    return [_record(row["library"], row) for row in db.execute(sql, args).fetchall()]


def get(db: sqlite3.Connection, quarantine_id: int) -> Quarantined | None:
    row = db.execute(
        "SELECT q.*, l.name AS library FROM quarantine q JOIN libraries l ON l.id = q.library_id WHERE q.id = ?",
        (quarantine_id,),
    ).fetchone()
    return None if row is None else _record(row["library"], row)


def decide(db: sqlite3.Connection, quarantine_id: int, state: str, version: int | None) -> None:
    """Mark a pending lesson decided; InvalidInput (the caller's transaction rolls back, an approval's
    version with it) when it was decided meanwhile, so of two people deciding at once only the first counts."""
    cursor = db.execute(
        "UPDATE quarantine SET state = ?, version = ?, decided_at = ? WHERE id = ? AND state = 'pending'",
        (state, version, timestamp(), quarantine_id),
    )
    if cursor.rowcount != 1:
        raise InvalidInput(
            f"Quarantined lesson {quarantine_id} was decided by someone else meanwhile; nothing changed."
        )


def _record(library: str, row: sqlite3.Row) -> Quarantined:
    fields = {k: row[k] for k in row.keys() if k not in ("library_id", "library", "operation")}
    return Quarantined(library=library, operation=json.loads(row["operation"]), **fields)
