"""Evaluation reports, kept in the database: every `ted eval` can be listed and shown again."""

from ted.errors import NotFound
from ted.runs.report import EvalReport
from ted.store import Store
from ted.store.database import timestamp


async def save(store: Store, report: EvalReport) -> None:
    async with store.transaction() as db:
        await db.execute(
            "INSERT INTO evaluations (id, library, library_version, report, created_at) VALUES (?, ?, ?, ?, ?)",
            (report.id, report.library, report.library_version, report.model_dump_json(), timestamp(report.created_at)),
        )


async def listed(store: Store, library: str | None = None, limit: int = 50) -> list[EvalReport]:
    """The newest reports first; of one library, or of all."""
    sql = "SELECT report FROM evaluations" + (" WHERE library = ?" if library else "") + " ORDER BY created_at DESC"
    async with store.reading() as db, db.execute(sql + " LIMIT ?", (*([library] if library else []), limit)) as c:
        return [EvalReport.model_validate_json(row["report"]) for row in await c.fetchall()]


async def get(store: Store, report_id: str) -> EvalReport:
    async with store.reading() as db, db.execute("SELECT report FROM evaluations WHERE id = ?", (report_id,)) as c:
        row = await c.fetchone()
    if row is None:
        raise NotFound(f"There is no evaluation {report_id!r}; the dashboard's reports page lists the ones kept.")
    return EvalReport.model_validate_json(row["report"])
