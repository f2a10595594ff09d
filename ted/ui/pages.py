"""What each page shows, read through the store's, the jobs' and the ledger's own functions.

Nothing here writes SQL: a figure a page needs and the store cannot give is a read added to
the store layer. Each function returns the records a template renders, so the figures on a
page are the ones `ted`, the tools and the reports give.

A library's lessons are those of its working version (the newest, which critiques change);
each says whether the served version (what `get_experiences` returns) holds it too.
"""

import difflib
from typing import Any

from pydantic import BaseModel, Field

from ted import agent
from ted.errors import NotFound
from ted.ledger import CostSummary, Ledger
from ted.runs import evaluations, jobs
from ted.runs.jobs import FINISHED, Job, JobStatus
from ted.runs.report import DistillReport, EvalReport, distill_report
from ted.store import Store
from ted.store.records import (
    AttemptRecord,
    CritiqueRecord,
    Experience,
    ExperiencePrompt,
    LibraryState,
    LibrarySummary,
    LibraryVersion,
    Quarantined,
    VersionDiff,
)
from ted.ui import charts

HISTORY_PAGE = 50


class LibraryRow(BaseModel):
    summary: LibrarySummary
    held: int


class Lesson(BaseModel):
    experience: Experience
    origin: str
    served: bool = Field(description="The served version holds it, with this text.")


class LibraryPage(BaseModel):
    state: LibraryState
    working: ExperiencePrompt
    served: ExperiencePrompt
    lessons: list[Lesson]
    retired: list[Lesson]
    held: int


class LessonPage(BaseModel):
    library: str
    served: int = Field(description="The version the library serves.")
    lesson: Lesson
    critique: CritiqueRecord | None
    attempts: list[AttemptRecord]
    merged_from: list[Lesson]


class HistoryPage(BaseModel):
    library: str
    latest: int
    served: int
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
    validation: charts.Chart | None = Field(description="Served against working on the validation set, if any.")


class ReviewPage(BaseModel):
    waiting: list[Quarantined]
    decided: Quarantined | None = Field(description="The lesson just decided, read back from the store.")


class ReportsPage(BaseModel):
    evaluations: list[EvalReport]
    distillations: list[Job]


def origin(e: Experience) -> str:
    """Where a lesson came from, in a few words."""
    p = e.provenance
    if "merged_from" in p:
        return "merged from " + ", ".join(p["merged_from"])
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


def _lesson(e: Experience, served: ExperiencePrompt) -> Lesson:
    is_served = any(i.id == e.id and i.text == e.text for i in served.items)
    return Lesson(experience=e, origin=origin(e), served=is_served)


async def libraries(store: Store) -> list[LibraryRow]:
    held: dict[str, int] = {}
    for lesson in await store.quarantined():
        held[lesson.library] = held.get(lesson.library, 0) + 1
    return [LibraryRow(summary=s, held=held.get(s.name, 0)) for s in await store.list_libraries()]


async def library(store: Store, name: str) -> LibraryPage:
    state = await store.library_state(name)
    working, _ = await store.whole_prompt(name, "working")
    served, _ = await store.whole_prompt(name, "served")
    everything = [_lesson(e, served) for e in await store.experiences(name, active_only=False)]
    return LibraryPage(
        state=state,
        working=working,
        served=served,
        lessons=[lesson for lesson in everything if lesson.experience.state == "active"],
        retired=[lesson for lesson in everything if lesson.experience.state != "active"],
        held=len(await store.quarantined(name)),
    )


async def lesson(store: Store, name: str, lesson_id: str) -> LessonPage:
    everything = {e.id: e for e in await store.experiences(name, active_only=False)}
    if lesson_id not in everything:
        raise NotFound(f"Library {name!r} has no lesson {lesson_id!r}; its page lists the lessons it has.")
    found = everything[lesson_id]
    p = found.provenance
    critique = await store.critique(name, p["critique_id"]) if "critique_id" in p else None
    attempt_ids = p.get("attempt_ids") or (critique.attempt_ids if critique else [])
    served, _ = await store.whole_prompt(name, "served")
    return LessonPage(
        library=name,
        served=served.version,
        lesson=_lesson(found, served),
        critique=critique,
        attempts=await store.attempts_by_id(name, attempt_ids) if attempt_ids else [],
        merged_from=[_lesson(everything[i], served) for i in p.get("merged_from", []) if i in everything],
    )


async def history(store: Store, name: str, before: int | None) -> HistoryPage:
    state = await store.library_state(name)
    latest = state.version
    shown = await store.history(name, before=before, limit=HISTORY_PAGE)
    oldest = shown[0].version if shown else 0
    top = shown[-1].version if shown else latest
    return HistoryPage(
        library=name,
        latest=latest,
        served=latest if state.served_version is None else state.served_version,
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
    return JobPage(
        status=status, report=report, charts=charts.distillation(report), validation=charts.validation(report)
    )


async def reports(store: Store) -> ReportsPage:
    return ReportsPage(
        evaluations=await evaluations.listed(store),
        distillations=[j for j in await jobs.listed(store) if j.state in FINISHED],
    )


async def review(store: Store, decided: int | None) -> ReviewPage:
    """The lessons waiting for a person's decision, and the one just decided (None if none was)."""
    just = [q for q in await store.quarantined(pending_only=False) if q.id == decided] if decided is not None else []
    if decided is not None and not just:
        raise NotFound(f"There is no quarantined lesson {decided}; the review page lists the ones waiting.")
    return ReviewPage(waiting=await store.quarantined(), decided=just[0] if just else None)


def provenance_items(provenance: dict[str, Any]) -> list[tuple[str, str]]:
    """A lesson's provenance as label/value pairs, for the fields the lesson page does not link."""
    skip = {"critique_id", "attempt_ids", "merged_from", "epoch"}  # linked, or said 1-based in the origin
    return [(k.replace("_", " "), str(v)) for k, v in provenance.items() if k not in skip]
