"""Evaluation reports kept in the database, so every `ted eval` can be listed and shown again.

A report is kept as the JSON its record (`ted.runs.report.EvalReport`) dumps to; reading it
back into that record is `ted.runs.evaluations`' part, so the store does not depend on runs.
These functions run inside the caller's transaction or read.
"""

import sqlite3
from datetime import datetime

from ted.store.database import timestamp


def keep(db: sqlite3.Connection, report_id: str, library: str, version: int, report: str, created_at: datetime) -> None:
    db.execute(
        "INSERT INTO evaluations (id, library, library_version, report, created_at) VALUES (?, ?, ?, ?, ?)",
        (report_id, library, version, report, timestamp(created_at)),
    )


def listed(db: sqlite3.Connection, library: str | None, limit: int) -> list[str]:
    """The newest reports first; of one library, or of all."""
    sql = "SELECT report FROM evaluations" + (" WHERE library = ?" if library else "") + " ORDER BY created_at DESC"
    return [row["report"] for row in db.execute(sql + " LIMIT ?", (*([library] if library else []), limit))]


def get(db: sqlite3.Connection, report_id: str) -> str | None:
    row = db.execute("SELECT report FROM evaluations WHERE id = ?", (report_id,)).fetchone()
    return None if row is None else row["report"]
