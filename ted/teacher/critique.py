"""Critique: the teacher turns a task's recorded attempts into general lessons.

Three teacher steps, each reusable by the batch loop (`ted.runs.distill`):

1. `solve` — the teacher solves the task without the ground truth, so that it solves instead of
   rationalising, and "the teacher got this wrong too" is known. When its answer disagrees with
   the ground truth it is asked once more, shown the ground truth, and that solution is the
   reference; a dataset's worked solution, when there is one, is the reference instead. Both
   solutions are cached per (task, teacher), so later critiques and epochs never pay again.
2. `chains_for` — attempts and the reference are compressed into Premises → Steps → Conclusion
   chains in one call, each told its verdict; each chain is stored and never made twice.
3. `critique_reply` — the teacher sees the graded chains, the reference chain, what the reference
   is and whether its own first solution was right, and the library; it diagnoses each wrong
   attempt and proposes typed operations on stable ids. `vet_critique` checks them (ids,
   contradictions, conflicts within a batch, limits), then the lesson gate judges what each
   lesson says and whether it copies the task, the attempts, the answers or the ground truth
   (`Store.screen`); what survives is applied in one transaction with the critique record and
   the attempts it covered.

A critique that would leave the library over budget is compressed by the same teacher, planned
before anything is written and applied in the same version as the critique, so no version is
ever over budget. Every model call of a critique happens first, so a failed or invalid reply
leaves the library as it was; what the teacher did produce — its solutions, the chains — is
kept as a cache (paid for, and valid whatever the critique decides).
"""

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Mapping
from typing import Annotated, Literal

import anyio.to_thread
from pydantic import BaseModel, Field, WithJsonSchema

from ted.errors import InvalidInput
from ted.gate import normalise
from ted.grading import grade_attempt
from ted.ledger import Ledger
from ted.llm.base import GenerationSettings, Message, Model
from ted.llm.capabilities import require_images
from ted.llm.structured import structured
from ted.prompts import (
    CRITIQUE_SYSTEM,
    SUMMARISE_SYSTEM,
    TEACHER_SOLVE_SYSTEM,
    VERDICTS,
    critique_prompt,
    reference_note,
    summarise_prompt,
    teacher_retry_prompt,
    teacher_solve_prompt,
)
from ted.store import Store
from ted.store.database import timestamp
from ted.store.operations import lesson_key
from ted.store.records import (
    AddOp,
    AppliedOperations,
    AttemptRecord,
    DeleteOp,
    Dropped,
    LibraryState,
    Operation,
    RewriteOp,
)
from ted.tasks import Task
from ted.teacher.compression import CompressionResult, Simulation, plan_compression, write_change
from ted.teacher.replies import (
    AddLesson,
    Chain,
    CritiqueReply,
    DropLesson,
    Solution,
    critique_reply_type,
    summary_reply,
)

# A trace longer than this is shown to the teacher as its head and tail: the start says how
# the attempt set out, the end what it concluded, and the prompt stays bounded.
MAX_TRACE_CHARS = 12_000
MAX_OPERATIONS = 10
REFERENCE_LABEL = "R"


class TeacherSolution(BaseModel):
    """The teacher's work on a task: its own first answer, and the reference a critique uses."""

    first_answer: str
    first_right: bool | None = None
    reference: str
    source: Literal["teacher", "dataset"]
    chain: Chain | None = None

    def note(self, ground_truth: str | None) -> str:
        return reference_note(ground_truth, self.first_answer, self.first_right, self.source)


class CritiqueResult(BaseModel):
    """The reply of `request_critique`: what the teacher concluded and what changed."""

    library: str
    task_id: str
    critique_id: str
    teacher: str
    attempt_ids: list[int]
    reference: Literal["ground_truth", "teacher"]
    teacher_first_right: bool | None
    analysis: str
    diagnoses: dict[str, dict]
    version: int = Field(description="The working version after the critique.")
    served_version: int = Field(
        description="The version agents are served: the working one, unless the library serves promoted versions."
    )
    operations: AppliedOperations
    rejected: list[Dropped]
    # Shown as an object: its schema is compress_library's reply, which a client has already.
    compression: Annotated[CompressionResult | None, WithJsonSchema({"type": ["object", "null"]})]


def _clip(text: str) -> str:
    if len(text) <= MAX_TRACE_CHARS:
        return text
    half = MAX_TRACE_CHARS // 2
    return f"{text[:half]}\n[… {len(text) - MAX_TRACE_CHARS} characters omitted …]\n{text[-half:]}"


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def solve(
    store: Store,
    teacher: Model,
    task: Task,
    ground_truth: str | None,
    reference: str | None = None,
    *,
    again: Model | None = None,
) -> TeacherSolution:
    """The teacher's solution without the ground truth (cached per task and teacher), graded
    against it; when wrong, a second solution made knowing it (cached too, asked through `again`
    when given) is the reference, unless the dataset gave a worked `reference`."""
    sql = (
        "SELECT solution, answer, ground_truth, informed, chain, chain_of FROM teacher_solutions"
        " WHERE task_key = ? AND teacher = ?"
    )
    row = await store.read(lambda db: db.execute(sql, (task.id, teacher.name)).fetchone())
    asked = task.message(teacher_solve_prompt(task.text))
    if row is None:
        first, _ = await structured(teacher, [asked], Solution, system=TEACHER_SOLVE_SYSTEM)
        solution, answer = first.render(), first.answer.strip()
        # Another client may have solved it meanwhile: its solution then stays the cached one.
        sql = (
            "INSERT INTO teacher_solutions (task_key, teacher, task, solution, answer, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task_key, teacher) DO NOTHING"
        )
        row_values = (task.id, teacher.name, task.text, solution, answer, timestamp())
        await store.write(lambda db: db.execute(sql, row_values))
        informed = informed_for = chain = chain_of = None
    else:
        solution, answer, informed_for = row["solution"], row["answer"], row["ground_truth"]
        informed, chain, chain_of = row["informed"], row["chain"], row["chain_of"]
    right = None if ground_truth is None else (await grade_attempt(ground_truth, solution, answer)).correct
    source: Literal["teacher", "dataset"] = "teacher"
    if reference is not None:
        source = "dataset"
    elif right is False:
        if informed is None or informed_for != ground_truth:
            retry = [asked, Message.assistant(solution), Message.user(teacher_retry_prompt(answer, ground_truth))]
            informed = (await structured(again or teacher, retry, Solution, system=TEACHER_SOLVE_SYSTEM))[0].render()
            sql = "UPDATE teacher_solutions SET informed = ?, ground_truth = ? WHERE task_key = ? AND teacher = ?"
            values = (informed, ground_truth, task.id, teacher.name)
            await store.write(lambda db: db.execute(sql, values))
        reference = informed
    else:
        reference = solution
    cached = chain is not None and chain_of == _fingerprint(reference)
    return TeacherSolution(
        first_answer=answer,
        first_right=right,
        reference=reference,
        source=source,
        chain=Chain.model_validate_json(chain) if cached else None,
    )


async def summarise(teacher: Model, task: Task, traces: list[tuple[str, str, str]]) -> dict[str, Chain]:
    """Chains for the traces ((label, verdict, text)), in one call, one per label."""
    if not traces:
        return {}
    clipped = [(label, verdict, _clip(text)) for label, verdict, text in traces]
    reply, _ = await structured(
        teacher,
        [task.message(summarise_prompt(task.text, clipped))],
        summary_reply([label for label, _, _ in traces]),
        system=SUMMARISE_SYSTEM,
    )
    return dict(reply.chains)


async def chains_for(
    store: Store, teacher: Model, task: Task, attempts: list[AttemptRecord], solution: TeacherSolution
) -> tuple[dict[int, str], str]:
    """Chains (rendered) for each attempt (by id) and for the reference, summarising only what is
    missing and storing what was made, so no trace is summarised twice."""
    missing = [(f"A{a.id}", VERDICTS[a.correct], a.trajectory) for a in attempts if a.chain is None]
    if solution.chain is None:
        missing.append((REFERENCE_LABEL, "the REFERENCE solution", solution.reference))
    made = await summarise(teacher, task, missing)

    def write(db: sqlite3.Connection) -> None:
        for label, chain in made.items():
            if label == REFERENCE_LABEL:
                db.execute(
                    "UPDATE teacher_solutions SET chain = ?, chain_of = ? WHERE task_key = ? AND teacher = ?",
                    (chain.model_dump_json(), _fingerprint(solution.reference), task.id, teacher.name),
                )
            else:
                db.execute("UPDATE attempts SET chain = ? WHERE id = ?", (chain.model_dump_json(), int(label[1:])))

    await store.write(write)
    rendered = {}
    for a in attempts:
        chain = Chain.model_validate_json(a.chain) if a.chain else made.get(f"A{a.id}")
        rendered[a.id] = chain.render() if chain else _clip(a.trajectory)
    reference = solution.chain or made.get(REFERENCE_LABEL)
    return rendered, reference.render() if reference else _clip(solution.reference)


async def critique_reply(
    teacher: Model,
    task: Task,
    note: str,
    reference_chain: str,
    attempts: list[AttemptRecord],
    chains: dict[int, str],
    state: LibraryState,
) -> CritiqueReply:
    """The teacher's diagnoses and proposed operations for graded attempts (not yet validated)."""
    prompt = critique_prompt(
        task.text,
        note,
        reference_chain,
        [(f"A{a.id}", a.correct, a.counted, chains[a.id]) for a in attempts],
        [(e.id, e.text, e.usage_count) for e in state.experiences],
    )
    asked = critique_reply_type([f"A{a.id}" for a in attempts if a.correct is False], [e.id for e in state.experiences])
    reply, _ = await structured(teacher, [task.message(prompt)], asked, system=CRITIQUE_SYSTEM)
    return CritiqueReply.model_validate(reply.model_dump())


def validate_critique(
    reply: CritiqueReply,
    active: Mapping[str, str],
    provenance: dict,
    claimed: Mapping[str, str] | None = None,
) -> tuple[list[Operation], list[Dropped]]:
    """The reply's operations that fit the library; the rest with reasons. What a lesson says is
    not judged here: that is the lesson gate's (`vet_critique`).

    `active` maps the ids of the library's active lessons to their texts (the batch loop passes
    the library as earlier problems of a batch left it); `claimed` maps the lessons earlier
    critiques of the same batch changed to the critique that did: an operation on one of those
    is a conflict, reported, and the first change stands. Neither is changed.
    """
    existing = {lesson_key(t) for t in active.values()}
    touched: set[str] = set()
    operations: list[Operation] = []
    rejected: list[Dropped] = []
    for number, proposed in enumerate(reply.operations, start=1):
        reason, conflict = None, None
        if not isinstance(proposed, DropLesson):
            proposed = proposed.model_copy(update={"text": normalise(proposed.text)})
        if number > MAX_OPERATIONS:
            reason = f"is over the limit of {MAX_OPERATIONS} operations in one critique"
        elif not isinstance(proposed, DropLesson) and not proposed.text:
            reason = "the lesson is empty"
        elif isinstance(proposed, AddLesson):
            if lesson_key(proposed.text) in existing:
                reason = "repeats a lesson the library already has"
        elif claimed and proposed.id in claimed:
            conflict = claimed[proposed.id]
            reason = f"conflicts with critique {conflict}, which changed {proposed.id} first in this batch"
        elif proposed.id not in active:
            reason = f"refers to {proposed.id}, not an active lesson"
        elif proposed.id in touched:
            reason = f"contradicts an earlier operation on {proposed.id}"
        if reason:
            rejected.append(Dropped(operation=proposed.model_dump(), reason=reason, conflict_with=conflict))
            continue
        match proposed:
            case AddLesson():
                operations.append(AddOp(text=proposed.text, provenance={**provenance, "rationale": proposed.rationale}))
                existing.add(lesson_key(proposed.text))
            case DropLesson():
                operations.append(DeleteOp(id=proposed.id))
                touched.add(proposed.id)
            case _:
                operations.append(RewriteOp(id=proposed.id, text=proposed.text))
                touched.add(proposed.id)
    return operations, rejected


async def vet_critique(
    store: Store,
    library: str,
    reply: CritiqueReply,
    active: Mapping[str, str],
    sources: list[str],
    provenance: dict,
    claimed: Mapping[str, str] | None = None,
) -> tuple[list[Operation], list[Dropped]]:
    """`validate_critique`, then the lesson gate (rules and guard) on what is left: the operations
    that may be applied, and every other one with its reason.

    `sources` are the texts the lessons came from — the task, trajectories, answers and ground
    truth — which no lesson may copy.
    """
    operations, rejected = validate_critique(reply, active, provenance, claimed)
    return await store.screen(library, operations, rejected, sources)


def critique_sources(task: str, attempts: list[AttemptRecord], ground_truth: str | None) -> list[str]:
    """What a critique's lessons must not copy: the task, the attempts, their answers and the ground truth."""
    texts = [task, *(a.trajectory for a in attempts), *(a.answer for a in attempts if a.answer)]
    return texts + ([ground_truth] if ground_truth else [])


def record_critique(
    db: sqlite3.Connection,
    library: str,
    critique_id: str,
    task_id: str,
    teacher: str,
    attempt_ids: list[int],
    version: int | None,
    reply: CritiqueReply,
    rejected: list[Dropped],
    job_id: str | None = None,
) -> None:
    """The critique's record, and its attempts marked critiqued; inside the caller's transaction."""
    db.execute(
        "INSERT INTO critiques (id, library_id, task_id, teacher, attempt_ids, version, reply, rejected, created_at,"
        " job_id) SELECT ?, id, ?, ?, ?, ?, ?, ?, ?, ? FROM libraries WHERE name = ?",
        (
            critique_id,
            task_id,
            teacher,
            json.dumps(attempt_ids),
            version,
            reply.model_dump_json(),
            json.dumps([r.model_dump() for r in rejected]),
            timestamp(),
            job_id,
            library,
        ),
    )
    marks = ",".join("?" * len(attempt_ids))
    db.execute(f"UPDATE attempts SET critiqued_at = ? WHERE id IN ({marks})", (timestamp(), *attempt_ids))


async def _task_of(store: Store, library: str, task_id: str) -> tuple[list[AttemptRecord], Task, str | None]:
    """The task's attempts not yet critiqued, the task (its images read back), and its ground truth."""
    attempts = await store.attempts(library, task_id)
    pending = [a for a in attempts if a.critiqued_at is None]
    if not pending:
        raise InvalidInput(
            f"All {len(attempts)} attempts at task {task_id!r} in library {library!r} were critiqued already; "
            "record a new attempt first."
        )
    task = await anyio.to_thread.run_sync(Task.read, pending[-1].task, pending[-1].images)
    ground_truth = next((a.ground_truth for a in reversed(attempts) if a.ground_truth is not None), None)
    return pending, task, ground_truth


async def critique_task(
    store: Store,
    ledger: Ledger,
    teacher: Model,
    library: str,
    task_id: str,
    settings: GenerationSettings | None = None,
) -> CritiqueResult:
    pending, task, ground_truth = await _task_of(store, library, task_id)
    if task.images:
        require_images(teacher.name, f"task {task_id}")
    scope = {"library": library, "task_id": task_id, "settings": settings}

    solution = await solve(store, ledger.bind(teacher, "teacher-solve", **scope), task, ground_truth)
    chains, reference_chain = await chains_for(
        store, ledger.bind(teacher, "summarise", **scope), task, pending, solution
    )
    state = await store.library_state(library)
    reply = await critique_reply(
        ledger.bind(teacher, "critique", **scope),
        task,
        solution.note(ground_truth),
        reference_chain,
        pending,
        chains,
        state,
    )

    critique_id = uuid.uuid4().hex[:12]
    attempt_ids = [a.id for a in pending]
    provenance = {
        "source": "critique",
        "critique_id": critique_id,
        "task_id": task_id,
        "attempt_ids": attempt_ids,
        "teacher": teacher.name,
    }
    sources = critique_sources(task.text, pending, ground_truth)
    active = {e.id: e.text for e in state.experiences}
    operations, rejected = await vet_critique(store, library, reply, active, sources, provenance)

    def record(db: sqlite3.Connection, version: int | None) -> None:
        record_critique(db, library, critique_id, task_id, teacher.name, attempt_ids, version, reply, rejected)

    # A critique that leaves the library over budget is compressed in the same version, planned
    # (the teacher called) before anything is written: a failed or invalid plan leaves the
    # library as it was, and no version ever holds the critique with the budget broken.
    simulation = Simulation(state)
    operations = [simulation.apply(op) for op in operations]
    planned = None
    if simulation.over_budget:
        compressor = ledger.bind(teacher, "compress", **scope)
        after = simulation.result() if operations else state
        planned = await plan_compression(after, strategy="teacher", teacher=compressor, store=store)
    reason = f"critique {critique_id} of task {task_id} ({len(pending)} attempts)"
    change = await write_change(store, state, operations, planned, reason, record, sources=sources)
    return CritiqueResult(
        library=library,
        task_id=task_id,
        critique_id=critique_id,
        teacher=teacher.name,
        attempt_ids=attempt_ids,
        reference="ground_truth" if ground_truth is not None else "teacher",
        teacher_first_right=solution.first_right,
        analysis=reply.analysis,
        diagnoses={label: d.model_dump() for label, d in reply.diagnoses.items()},
        version=change.version if change else state.version,
        served_version=state.served_version if state.served_version is not None else (change or state).version,
        operations=change.operations[: len(operations)] if change else [],
        rejected=rejected,
        compression=planned.result(dry_run=False, change=change) if planned else None,
    )
