"""Writing a version's operations into the experiences table, inside the caller's transaction.

Each operation is checked against the library as the earlier operations of the same call left
it, so a call that merges E2 and E3 and then rewrites E3 fails on the rewrite, naming it, and
the caller's transaction rolls the whole call back. New lessons get the next number: ids are
never reused, so a citation always means the lesson it meant (or the one it was merged into).
"""

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ted.errors import InvalidInput
from ted.gate import normalise
from ted.store.records import AddOp, DeleteOp, LibrarySettings, MergeOp, Operation, RestoreOp, RewriteOp
from ted.tokens import count_tokens


def lesson_key(text: str) -> str:
    """What two lessons share when they are the same lesson: the text as the gate stores it
    (`ted.gate.normalise`), case and spacing aside."""
    return " ".join(normalise(text).split()).casefold()


class OperationWriter:
    """Writes operations; with `distinct`, a lesson added or rewritten to the text of another
    active lesson (by `lesson_key`) is refused, naming the one that is there."""

    def __init__(
        self, db: sqlite3.Connection, library: sqlite3.Row, active: set[str], version: int, distinct: bool = False
    ):
        self.db, self.library, self.active, self.version, self.distinct = db, library, active, version, distinct
        self.next_number: int = library["next_experience"]
        self.encoding = LibrarySettings.model_validate_json(library["settings"]).encoding

    def apply(self, operations: Sequence[Operation]) -> list[Operation]:
        """Write the operations in order; returns them with the ids they were given."""
        db, library_id = self.db, self.library["id"]
        applied: list[Operation] = []
        for index, op in enumerate(operations, start=1):
            match op:
                case AddOp():
                    self._refuse_duplicate(op.text)
                    new_id = self._insert(op.text, op.provenance, op.usage_count, op.helpful_count, op.harmful_count)
                    applied.append(op.model_copy(update={"id": new_id}))
                case RewriteOp():
                    self._require_active(index, op, op.id)
                    self._refuse_duplicate(op.text, op.id)
                    db.execute(
                        "UPDATE experiences SET text = ?, tokens = ? WHERE library_id = ? AND id = ?",
                        (op.text, count_tokens(op.text, self.encoding), library_id, op.id),
                    )
                    applied.append(op)
                case DeleteOp():
                    self._require_active(index, op, op.id)
                    retire(db, library_id, [op.id], merged_into=None)
                    self.active.discard(op.id)
                    applied.append(op)
                case MergeOp():
                    if len(set(op.ids)) != len(op.ids):
                        raise InvalidInput(f"Operation {index} (merge) lists an id twice: {op.ids}.")
                    for id_ in op.ids:
                        self._require_active(index, op, id_)
                    marks = ",".join("?" * len(op.ids))
                    usage, helpful, harmful = db.execute(
                        f"SELECT sum(usage_count), sum(helpful_count), sum(harmful_count) FROM experiences"
                        f" WHERE library_id = ? AND id IN ({marks})",
                        (library_id, *op.ids),
                    ).fetchone()
                    new_id = self._insert(op.text, {"merged_from": op.ids}, usage, helpful, harmful)
                    retire(db, library_id, op.ids, merged_into=new_id)
                    self.active.difference_update(op.ids)
                    applied.append(op.model_copy(update={"into": new_id}))
                case RestoreOp():
                    if op.id in self.active:
                        raise InvalidInput(f"Operation {index} (restore {op.id}): {op.id} is already active.")
                    cursor = db.execute(
                        "UPDATE experiences SET state = 'active', merged_into = NULL, text = ?, tokens = ?"
                        " WHERE library_id = ? AND id = ?",
                        (op.text, count_tokens(op.text, self.encoding), library_id, op.id),
                    )
                    if cursor.rowcount == 0:
                        raise InvalidInput(
                            f"Operation {index} (restore {op.id}): library {self.library['name']!r} has no {op.id}."
                        )
                    self.active.add(op.id)
                    applied.append(op)
        return applied

    def _insert(self, text: str, provenance: dict[str, Any], usage=0, helpful=0, harmful=0) -> str:
        new_id = f"E{self.next_number}"
        self.db.execute(
            "INSERT INTO experiences (library_id, id, ordinal, text, tokens, usage_count, helpful_count,"
            " harmful_count, provenance, created_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.library["id"],
                new_id,
                self.next_number,
                text,
                count_tokens(text, self.encoding),
                usage,
                helpful,
                harmful,
                json.dumps(provenance),
                self.version,
            ),
        )
        self.active.add(new_id)  # later operations of this call may refer to it
        self.next_number += 1
        return new_id

    def _refuse_duplicate(self, text: str, own_id: str | None = None) -> None:
        if not self.distinct:
            return
        key = lesson_key(text)
        rows = self.db.execute(
            "SELECT id, text FROM experiences WHERE library_id = ? AND state = 'active' ORDER BY ordinal",
            (self.library["id"],),
        ).fetchall()
        for row in rows:
            if row["id"] != own_id and lesson_key(row["text"]) == key:
                raise InvalidInput(
                    f"Library {self.library['name']!r} already has this lesson as {row['id']}; nothing was changed."
                )

    def _require_active(self, index: int, op: Operation, id_: str) -> None:
        if id_ not in self.active:
            active = ", ".join(sorted(self.active, key=lambda i: int(i[1:]))) or "none"
            raise InvalidInput(
                f"Operation {index} ({op.op} {id_}) refers to {id_}, which is not an active experience of "
                f"library {self.library['name']!r}; active ids: {active}."
            )


def retire(db: sqlite3.Connection, library_id: int, ids: Sequence[str], merged_into: str | None) -> None:
    db.executemany(
        "UPDATE experiences SET state = 'retired', merged_into = ? WHERE library_id = ? AND id = ?",
        [(merged_into, library_id, id_) for id_ in ids],
    )
