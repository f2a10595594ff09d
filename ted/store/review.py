"""Lessons held for review: stored with the reason they were held, never served, until a
person approves one (it becomes a lesson, as a new version) or rejects it (it stays on record).

A check that is unsure of a lesson holds it here instead of dropping it; `ted ui` lists what
waits and approves or rejects it.
"""

import json
import sqlite3
from typing import Any

from ted.errors import InvalidInput, NotFound
from ted.store.database import timestamp
from ted.store.records import AddOp, ChangeResult, HeldLesson
from ted.store.store import Store


async def hold(store: Store, library: str, text: str, reason: str, provenance: dict[str, Any]) -> HeldLesson:
    """Keep a lesson back for review, in `library` (created if needed)."""
    await store.ensure_library(library)
    async with store.transaction() as db:
        cursor = await db.execute(
            "INSERT INTO held_lessons (library_id, text, reason, provenance, created_at)"
            " SELECT id, ?, ?, ?, ? FROM libraries WHERE name = ?",
            (text, reason, json.dumps(provenance), timestamp(), library),
        )
    return await held(store, library, cursor.lastrowid)


async def pending(store: Store, library: str | None = None) -> list[HeldLesson]:
    """The lessons waiting for a decision, oldest first; of one library, or of all."""
    sql = _SELECT + " WHERE h.state = 'pending'" + (" AND l.name = ?" if library else "") + " ORDER BY h.id"
    async with store.reading() as db, db.execute(sql, (library,) if library else ()) as cursor:
        return [_held(row) for row in await cursor.fetchall()]


async def held(store: Store, library: str, held_id: int) -> HeldLesson:
    async with store.reading() as db, db.execute(_SELECT + " WHERE l.name = ? AND h.id = ?", (library, held_id)) as c:
        row = await c.fetchone()
    if row is None:
        raise NotFound(
            f"Library {library!r} holds no lesson {held_id} for review; the review list shows the ones it does."
        )
    return _held(row)


async def approve(store: Store, library: str, held_id: int) -> ChangeResult:
    """Add the held lesson to the library as a new version, and mark it approved in the same transaction."""
    lesson = await _undecided(store, library, held_id)
    op = AddOp(text=lesson.text, provenance={**lesson.provenance, "held": lesson.reason, "approved_from": held_id})

    async def mark(db, version: int) -> None:
        async with db.execute(
            "SELECT id FROM experiences WHERE library_id = (SELECT id FROM libraries WHERE name = ?)"
            " AND created_version = ? ORDER BY ordinal DESC LIMIT 1",
            (library, version),
        ) as cursor:
            (experience_id,) = await cursor.fetchone()
        await _decide(db, held_id, "approved", experience_id)

    return await store.apply(library, [op], "add", f"held lesson {held_id} approved", also=mark)


async def reject(store: Store, library: str, held_id: int) -> HeldLesson:
    """Mark the held lesson rejected: it is kept on record and never served."""
    await _undecided(store, library, held_id)
    async with store.transaction() as db:
        await _decide(db, held_id, "rejected", None)
    return await held(store, library, held_id)


async def _undecided(store: Store, library: str, held_id: int) -> HeldLesson:
    lesson = await held(store, library, held_id)
    if lesson.state != "pending":
        raise InvalidInput(f"Held lesson {held_id} of {library!r} was {lesson.state} already; nothing was changed.")
    return lesson


async def _decide(db, held_id: int, state: str, experience_id: str | None) -> None:
    # `state = 'pending'` in the WHERE: of two people deciding at once, only the first counts.
    cursor = await db.execute(
        "UPDATE held_lessons SET state = ?, experience_id = ?, decided_at = ? WHERE id = ? AND state = 'pending'",
        (state, experience_id, timestamp(), held_id),
    )
    if cursor.rowcount != 1:
        raise InvalidInput(f"Held lesson {held_id} was decided by someone else meanwhile; nothing was changed.")


_SELECT = "SELECT h.*, l.name AS library FROM held_lessons h JOIN libraries l ON l.id = h.library_id"


def _held(row: sqlite3.Row) -> HeldLesson:
    return HeldLesson(
        **{k: row[k] for k in row.keys() if k not in ("library_id", "provenance")},
        provenance=json.loads(row["provenance"]),
    )
