"""Lessons held for review: stored with the reason they were held, never served, until a person
approves one (it is added to its library as a new version) or rejects it (it stays on record).

A check that is unsure of a lesson holds it here instead of dropping it; `ted ui` lists what
waits, and approves or rejects it.
"""

from ted.errors import InvalidInput, NotFound
from ted.store.database import timestamp
from ted.store.records import AddOp, HeldLesson
from ted.store.store import Store

_SELECT = "SELECT h.*, l.name AS library FROM held_lessons h JOIN libraries l ON l.id = h.library_id"


async def hold(store: Store, library: str, text: str, reason: str, source: str) -> HeldLesson:
    """Keep a lesson back for review, in `library` (created if needed)."""
    await store.ensure_library(library)
    async with store.transaction() as db:
        cursor = await db.execute(
            "INSERT INTO held_lessons (library_id, text, reason, source, created_at)"
            " SELECT id, ?, ?, ?, ? FROM libraries WHERE name = ?",
            (text, reason, source, timestamp(), library),
        )
    return await held(store, cursor.lastrowid)


async def quarantined(store: Store, library: str | None = None, *, pending_only: bool = True) -> list[HeldLesson]:
    """Held lessons, oldest first, of one library or of all; only those waiting for a decision unless asked."""
    where = [w for w, given in (("h.state = 'pending'", pending_only), ("l.name = ?", library)) if given]
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY h.id"
    async with store.reading() as db, db.execute(sql, (library,) if library else ()) as cursor:
        return [HeldLesson(**dict(row)) for row in await cursor.fetchall()]


async def held(store: Store, held_id: int) -> HeldLesson:
    async with store.reading() as db, db.execute(_SELECT + " WHERE h.id = ?", (held_id,)) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"There is no held lesson {held_id}; the review page lists the ones waiting.")
    return HeldLesson(**dict(row))


async def decide(store: Store, held_id: int, *, approve: bool) -> HeldLesson:
    """Approve a held lesson (added to its library as a new version, in the transaction that marks
    it approved) or reject it (nothing is added). A lesson is decided once."""
    lesson = await held(store, held_id)
    if lesson.state != "pending":
        raise InvalidInput(f"Held lesson {held_id} was {lesson.state} already; nothing was changed.")

    async def mark(db, version: int | None) -> None:
        # `state = 'pending'` in the WHERE: of two people deciding at once, only the first counts.
        cursor = await db.execute(
            "UPDATE held_lessons SET state = ?, version = ?, decided_at = ? WHERE id = ? AND state = 'pending'",
            ("approved" if approve else "rejected", version, timestamp(), held_id),
        )
        if cursor.rowcount != 1:
            raise InvalidInput(f"Held lesson {held_id} was decided by someone else meanwhile; nothing was changed.")

    if approve:
        op = AddOp(text=lesson.text, provenance={"source": lesson.source, "held": lesson.reason, "approved": held_id})
        await store.apply(lesson.library, [op], "add", f"held lesson {held_id} approved ({lesson.reason})", also=mark)
    else:
        async with store.transaction() as db:
            await mark(db, None)
    return await held(store, held_id)
