"""What each page shows, read through the store's, the jobs' and the ledger's own functions.

Nothing here writes SQL: a figure a page needs and the store cannot give is a read added to
the store layer. Each function returns the records a template renders, so the figures on a
page are the ones `ted`, the tools and the reports give.

Served and working version: until libraries have a served version of their own, the version
a library is at is both, and lessons have no measured evidence yet (`evidence` is None).
"""

import difflib
from typing import Any

from pydantic import BaseModel

from ted import agent
from ted.errors import NotFound
from ted.ledger import CostSummary, Ledger
from ted.runs import evaluations, jobs
from ted.runs.jobs import FINISHED, Job, JobStatus
from ted.runs.report import DistillReport, EvalReport, distill_report
from ted.store import Store, review
from ted.store.records import (
    AttemptRecord,
    CritiqueRecord,
    Experience,
    ExperiencePrompt,
    LibraryState,
    LibrarySummary,
    LibraryVersion,
    VersionDiff,
)
from ted.ui import charts

HISTORY_PAGE = 50


class LibraryRow(BaseModel):
    summary: LibrarySummary
    served: int
    working: int
    held: int


class Lesson(BaseModel):
    experience: Experience
    evidence: float | None = None
    origin: str


class LibraryPage(BaseModel):
    state: LibraryState
    prompt: ExperiencePrompt
    served: int
    working: int
    lessons: list[Lesson]
    retired: list[Lesson]
    held: int


class LessonPage(BaseModel):
    library: str
    lesson: Lesson
    critique: CritiqueRecord | None
    attempts: list[AttemptRecord]
    merged_from: list[Lesson]


class HistoryPage(BaseModel):
    library: str
    latest: int
    versions: list[LibraryVersion]
    older: int | None
    newer: int | None


class Segment(BaseModel):
    kind: str  # equal, insert, delete
    text: str


class DiffPage(BaseModel):
    diff: VersionDiff
    latest: int
    changed: list[tuple[str, list[Segment]]]


class JobRow(BaseModel):
    job: Job
    cost: CostSummary
    finished: bool


class JobPage(BaseModel):
    status: JobStatus
    report: DistillReport
    charts: list[charts.Chart]


class ReportsPage(BaseModel):
    evaluations: list[EvalReport]
    distillations: list[Job]


def versions(summary_version: int) -> tuple[int, int]:
    """(served, working): one version until libraries keep a served version apart from the working one."""
    return summary_version, summary_version


def origin(e: Experience) -> str:
    """Where a lesson came from, in a few words."""
    p = e.provenance
    if "merged_from" in p:
        return "merged from " + ", ".join(p["merged_from"])
    if "approved" in p:
        return f"held lesson {p['approved']}, approved by a person ({p.get('source')})"
    attempts = f"critique of {len(p.get('attempt_ids', []))} attempts"
    match p.get("source"):
        case "distill":
            return f"{attempts} in {p.get('job_id')}, epoch {p.get('epoch', 0) + 1}"
        case "critique":
            return f"{attempts} by {p.get('teacher')}"
        case "import":
            return "imported" + (f" from {p['from_library']}" if "from_library" in p else "")
        case None:
            return "unknown"
        case source:
            return f"added by hand ({source})"


def _lesson(e: Experience) -> Lesson:
    return Lesson(experience=e, origin=origin(e))


async def libraries(store: Store) -> list[LibraryRow]:
    held: dict[str, int] = {}
    for lesson in await review.quarantined(store):
        held[lesson.library] = held.get(lesson.library, 0) + 1
    rows = []
    for summary in await store.list_libraries():
        served, working = versions(summary.version)
        rows.append(LibraryRow(summary=summary, served=served, working=working, held=held.get(summary.name, 0)))
    return rows


async def library(store: Store, name: str) -> LibraryPage:
    state = await store.library_state(name)
    everything = [_lesson(e) for e in await store.experiences(name, active_only=False)]
    served, working = versions(state.version)
    return LibraryPage(
        state=state,
        prompt=await store.experience_prompt(name),
        served=served,
        working=working,
        lessons=[lesson for lesson in everything if lesson.experience.state == "active"],
        retired=[lesson for lesson in everything if lesson.experience.state != "active"],
        held=len(await review.quarantined(store, name)),
    )


async def lesson(store: Store, name: str, lesson_id: str) -> LessonPage:
    everything = {e.id: e for e in await store.experiences(name, active_only=False)}
    if lesson_id not in everything:
        raise NotFound(f"Library {name!r} has no lesson {lesson_id!r}; its page lists the lessons it has.")
    found = everything[lesson_id]
    p = found.provenance
    critique = await store.critique(name, p["critique_id"]) if "critique_id" in p else None
    attempt_ids = p.get("attempt_ids") or (critique.attempt_ids if critique else [])
    return LessonPage(
        library=name,
        lesson=_lesson(found),
        critique=critique,
        attempts=await store.attempts_by_id(name, attempt_ids) if attempt_ids else [],
        merged_from=[_lesson(everything[i]) for i in p.get("merged_from", []) if i in everything],
    )


async def history(store: Store, name: str, before: int | None) -> HistoryPage:
    latest = (await store.library_state(name)).version
    shown = await store.history(name, before=before, limit=HISTORY_PAGE)
    oldest = shown[0].version if shown else 0
    top = shown[-1].version if shown else latest
    return HistoryPage(
        library=name,
        latest=latest,
        versions=shown[::-1],
        older=oldest if oldest > 0 else None,
        newer=min(top + 1 + HISTORY_PAGE, latest + 1) if top < latest else None,
    )


async def diff(store: Store, name: str, a: int | None, b: int | None) -> DiffPage:
    """Version `a` against `b`; by default, what the latest version changed."""
    latest = (await store.library_state(name)).version
    b = latest if b is None else b
    d = await agent.diff(store, name, max(b - 1, 0) if a is None else a, b)
    return DiffPage(diff=d, latest=latest, changed=[(c.id, words(c.before, c.after)) for c in d.changed])


def words(before: str, after: str) -> list[Segment]:
    """The change from `before` to `after`, word by word."""
    old, new = before.split(" "), after.split(" ")
    segments: list[Segment] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag in ("delete", "replace"):
            segments.append(Segment(kind="delete", text=" ".join(old[i1:i2])))
        if tag in ("insert", "replace"):
            segments.append(Segment(kind="insert", text=" ".join(new[j1:j2])))
        if tag == "equal":
            segments.append(Segment(kind="equal", text=" ".join(old[i1:i2])))
    return segments


async def job_rows(store: Store, ledger: Ledger) -> list[JobRow]:
    return [
        JobRow(
            job=job, cost=CostSummary.from_totals(await ledger.totals(job_id=job.id)), finished=job.state in FINISHED
        )
        for job in await jobs.listed(store)
    ]


async def job(store: Store, ledger: Ledger, job_id: str) -> JobPage:
    status = await jobs.status(store, ledger, job_id)
    report = await distill_report(store, ledger, status)
    return JobPage(status=status, report=report, charts=charts.distillation(report))


async def reports(store: Store) -> ReportsPage:
    return ReportsPage(
        evaluations=await evaluations.listed(store),
        distillations=[j for j in await jobs.listed(store) if j.state in FINISHED],
    )


def provenance_items(provenance: dict[str, Any]) -> list[tuple[str, str]]:
    """A lesson's provenance as label/value pairs, for the fields the lesson page does not link."""
    skip = {"critique_id", "attempt_ids", "merged_from", "epoch"}  # linked, or said 1-based in the origin
    return [(k.replace("_", " "), str(v)) for k, v in provenance.items() if k not in skip]
