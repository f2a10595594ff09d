"""Evaluation reports, kept in the database: every `ted eval` can be listed and shown again."""

from ted.errors import NotFound
from ted.runs.report import EvalReport
from ted.store import Store


async def save(store: Store, report: EvalReport) -> None:
    await store.keep_evaluation(
        report.id, report.library, report.library_version, report.model_dump_json(), report.created_at
    )


async def listed(store: Store, library: str | None = None, limit: int = 50) -> list[EvalReport]:
    """The newest reports first; of one library, or of all."""
    return [EvalReport.model_validate_json(kept) for kept in await store.evaluations(library, limit=limit)]


async def get(store: Store, report_id: str) -> EvalReport:
    kept = await store.evaluation(report_id)
    if kept is None:
        raise NotFound(f"There is no evaluation {report_id!r}; the dashboard's reports page lists the ones kept.")
    return EvalReport.model_validate_json(kept)
