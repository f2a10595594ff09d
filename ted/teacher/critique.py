"""Critique: the teacher turns a task's recorded attempts into general lessons.

Three teacher steps, each reusable by the batch loop (`ted.runs.distill`):

1. `solve` — the teacher solves the task once per (task, teacher) and the solution is cached,
   so later critiques and epochs never pay for it again.
2. `chains_for` — attempts and the teacher's solution are compressed into Premises → Steps →
   Conclusion chains in one call; each chain is stored with its attempt and never redone.
3. `critique_reply` — the teacher sees the graded chains, its own chain, the reference (ground
   truth, else its solution and the recorded outcomes) and the library, and proposes typed
   operations on stable ids. `validate_critique` checks them (ids, contradictions, duplicates,
   `ted.gate`); what survives is applied in one transaction together with the critique
   record and the attempts it covered.

A library the critique would leave over budget is compressed by the same teacher, and that
compression is planned before anything is written: every model call of a critique happens first,
so a failed or invalid reply leaves the library as it was. What the teacher did produce — its
solution, the chains — is kept as a cache (paid for, and valid whatever the critique decides).
"""

import json
import uuid
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel

from ted.errors import Conflict, InvalidInput
from ted.gate import lesson_problem
from ted.ledger import Ledger
from ted.llm.base import Message, Model
from ted.llm.structured import structured
from ted.prompts import (
    CRITIQUE_SYSTEM,
    SUMMARISE_SYSTEM,
    TEACHER_SOLVE_SYSTEM,
    critique_prompt,
    summarise_prompt,
    teacher_solve_prompt,
)
from ted.store import Store
from ted.store.database import timestamp
from ted.store.records import AddOp, AttemptRecord, DeleteOp, LibraryState, Operation, RewriteOp
from ted.tasks import task_id_for
from ted.teacher.compression import CompressionResult, Dropped, Simulation, compress_library, plan_compression
from ted.teacher.replies import AddLesson, Chain, ChainSet, CritiqueReply, DropLesson

# A trace longer than this is shown to the teacher as its head and tail: the start says how
# the attempt set out, the end what it concluded, and the prompt stays bounded.
MAX_TRACE_CHARS = 12_000
TEACHER_LABEL = "T"


class TeacherSolution(BaseModel):
    solution: str
    chain: Chain | None


class CritiqueResult(BaseModel):
    """The reply of `request_critique`: what the teacher concluded and what changed."""

    library: str
    task_id: str
    critique_id: str
    teacher: str
    attempt_ids: list[int]
    reference: Literal["ground_truth", "teacher"]
    analysis: str
    version: int
    operations: list[Operation]
    rejected: list[Dropped]
    compression: CompressionResult | None


def _clip(text: str) -> str:
    if len(text) <= MAX_TRACE_CHARS:
        return text
    half = MAX_TRACE_CHARS // 2
    return f"{text[:half]}\n[… {len(text) - MAX_TRACE_CHARS} characters omitted …]\n{text[-half:]}"


async def solve(store: Store, teacher: Model, task: str, ground_truth: str | None) -> TeacherSolution:
    """The teacher's solution, cached per (task, teacher). A solution made without the ground
    truth that is now known is made again with it: the reference shown next to the ground truth
    must not contradict it."""
    key = task_id_for(task)
    async with (
        store.reading() as db,
        db.execute(
            "SELECT solution, chain, ground_truth FROM teacher_solutions WHERE task_key = ? AND teacher = ?",
            (key, teacher.name),
        ) as cursor,
    ):
        row = await cursor.fetchone()
    if row is not None and (ground_truth is None or row["ground_truth"] == ground_truth):
        return TeacherSolution(solution=row["solution"], chain=row["chain"] and Chain.model_validate_json(row["chain"]))
    completion = await teacher.complete(
        [Message.user(teacher_solve_prompt(task, ground_truth))], system=TEACHER_SOLVE_SYSTEM
    )
    async with store.transaction() as db:
        # Another client may have solved it meanwhile with the same ground truth; its solution
        # then stays the cached one.
        await db.execute(
            "INSERT INTO teacher_solutions (task_key, teacher, task, ground_truth, solution, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task_key, teacher) DO UPDATE SET ground_truth ="
            " excluded.ground_truth, solution = excluded.solution, chain = NULL, created_at = excluded.created_at"
            " WHERE teacher_solutions.ground_truth IS NOT excluded.ground_truth",
            (key, teacher.name, task, ground_truth, completion.text, timestamp()),
        )
    return TeacherSolution(solution=completion.text, chain=None)


async def summarise(teacher: Model, task: str, traces: dict[str, str]) -> dict[str, Chain]:
    """Chains for the labelled traces, in one call; a label the teacher skipped is absent."""
    if not traces:
        return {}
    reply, _ = await structured(
        teacher,
        [Message.user(summarise_prompt(task, {label: _clip(text) for label, text in traces.items()}))],
        ChainSet,
        system=SUMMARISE_SYSTEM,
    )
    return {chain.label: chain for chain in reply.chains if chain.label in traces}


async def chains_for(
    store: Store, teacher: Model, task: str, attempts: list[AttemptRecord], solution: TeacherSolution
) -> tuple[dict[int, str], str]:
    """Chains (rendered) for each attempt (by id) and for the teacher, summarising only what is
    missing and storing what was made, so no trace is summarised twice."""
    missing = {f"A{a.id}": a.trajectory for a in attempts if a.chain is None}
    if solution.chain is None:
        missing[TEACHER_LABEL] = solution.solution
    made = await summarise(teacher, task, missing)
    async with store.transaction() as db:
        for label, chain in made.items():
            if label == TEACHER_LABEL:
                await db.execute(
                    "UPDATE teacher_solutions SET chain = ? WHERE task_key = ? AND teacher = ?",
                    (chain.model_dump_json(), task_id_for(task), teacher.name),
                )
            else:
                await db.execute(
                    "UPDATE attempts SET chain = ? WHERE id = ?", (chain.model_dump_json(), int(label[1:]))
                )
    rendered = {}
    for a in attempts:
        chain = Chain.model_validate_json(a.chain) if a.chain else made.get(f"A{a.id}")
        rendered[a.id] = chain.render() if chain else _clip(a.trajectory)
    teacher_chain = solution.chain or made.get(TEACHER_LABEL)
    return rendered, teacher_chain.render() if teacher_chain else _clip(solution.solution)


async def critique_reply(
    teacher: Model,
    task: str,
    ground_truth: str | None,
    teacher_chain: str,
    attempts: list[AttemptRecord],
    chains: dict[int, str],
    state: LibraryState,
) -> CritiqueReply:
    """The teacher's analysis and proposed operations for graded attempts (not yet validated)."""
    reference = (
        f"Ground truth: {ground_truth}"
        if ground_truth is not None
        else "Unknown: use the teacher's solution and the outcomes."
    )
    reply, _ = await structured(
        teacher,
        [
            Message.user(
                critique_prompt(
                    task,
                    reference,
                    teacher_chain,
                    [(f"A{a.id}", a.correct, a.counted, chains[a.id]) for a in attempts],
                    [(e.id, e.text, e.usage_count) for e in state.experiences],
                )
            )
        ],
        CritiqueReply,
        system=CRITIQUE_SYSTEM,
    )
    return reply


def validate_critique(
    reply: CritiqueReply, active: Mapping[str, str], sources: list[str], provenance: dict
) -> tuple[list[Operation], list[Dropped]]:
    """The reply's operations that are safe and fit the library; the rest with reasons.

    `active` maps the ids of the library's active lessons to their texts (the batch loop passes
    the library as earlier problems of a batch left it); it is not changed.
    """
    existing = {" ".join(t.lower().split()) for t in active.values()}
    touched: set[str] = set()
    operations: list[Operation] = []
    rejected: list[Dropped] = []
    for proposed in reply.operations:
        reason = None
        if not isinstance(proposed, DropLesson):
            proposed = proposed.model_copy(update={"text": proposed.text.strip()})
        if isinstance(proposed, AddLesson):
            if " ".join(proposed.text.lower().split()) in existing:
                reason = "repeats a lesson the library already has"
        elif proposed.id not in active:
            reason = f"refers to {proposed.id}, not an active lesson"
        elif proposed.id in touched:
            reason = f"contradicts an earlier operation on {proposed.id}"
        if reason is None and not isinstance(proposed, DropLesson):
            if problem := lesson_problem(proposed.text, sources):
                reason = f"the lesson {problem}"
        if reason:
            rejected.append(Dropped(operation=proposed.model_dump(), reason=reason))
            continue
        match proposed:
            case AddLesson():
                operations.append(AddOp(text=proposed.text, provenance={**provenance, "rationale": proposed.rationale}))
                existing.add(" ".join(proposed.text.lower().split()))
            case DropLesson():
                operations.append(DeleteOp(id=proposed.id))
                touched.add(proposed.id)
            case _:
                operations.append(RewriteOp(id=proposed.id, text=proposed.text))
                touched.add(proposed.id)
    return operations, rejected


async def record_critique(
    db,
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
    await db.execute(
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
    await db.execute(f"UPDATE attempts SET critiqued_at = ? WHERE id IN ({marks})", (timestamp(), *attempt_ids))


async def critique_task(store: Store, ledger: Ledger, teacher: Model, library: str, task_id: str) -> CritiqueResult:
    attempts = await store.attempts(library, task_id)
    pending = [a for a in attempts if a.critiqued_at is None]
    if not pending:
        raise InvalidInput(
            f"All {len(attempts)} attempts at task {task_id!r} in library {library!r} were critiqued already; "
            "record a new attempt first."
        )
    task = pending[-1].task
    ground_truth = next((a.ground_truth for a in reversed(attempts) if a.ground_truth is not None), None)
    scope = {"library": library, "task_id": task_id}

    solution = await solve(store, ledger.bind(teacher, "teacher-solve", **scope), task, ground_truth)
    chains, teacher_chain = await chains_for(store, ledger.bind(teacher, "summarise", **scope), task, pending, solution)
    state = await store.library_state(library)
    reply = await critique_reply(
        ledger.bind(teacher, "critique", **scope), task, ground_truth, teacher_chain, pending, chains, state
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
    sources = [task, *(a.trajectory for a in pending), *(a.answer or "" for a in pending)]
    operations, rejected = validate_critique(reply, {e.id: e.text for e in state.experiences}, sources, provenance)

    async def record(db, version: int | None) -> None:
        await record_critique(db, library, critique_id, task_id, teacher.name, attempt_ids, version, reply, rejected)

    # A critique that leaves the library over budget is compressed, and the compression is
    # planned (the teacher called) before anything is written: a failed or invalid plan leaves
    # the library as it was, never with the critique applied and the budget broken.
    simulation = Simulation(state)
    for op in operations:
        simulation.apply(op)
    planned = None
    compressor = ledger.bind(teacher, "compress", **scope)
    if simulation.over_budget:
        after = simulation.result() if operations else state
        planned = await plan_compression(after, strategy="teacher", teacher=compressor)

    version, applied, compression = state.version, [], None
    if operations:
        reason = f"critique {critique_id} of task {task_id} ({len(pending)} attempts)"
        change = await store.apply(library, operations, "critique", reason, expected_version=state.version, also=record)
        version, applied = change.version, change.operations
    else:
        async with store.transaction() as db:
            await record(db, None)
    if planned is not None:
        try:
            compression = await planned.apply(store)
        except Conflict:
            # Another client changed the library between the two writes: plan again from it.
            compression = await compress_library(store, library, strategy="teacher", teacher=compressor)
        version = compression.version
    return CritiqueResult(
        library=library,
        task_id=task_id,
        critique_id=critique_id,
        teacher=teacher.name,
        attempt_ids=attempt_ids,
        reference="ground_truth" if ground_truth is not None else "teacher",
        analysis=reply.analysis,
        version=version,
        operations=applied,
        rejected=rejected,
        compression=compression,
    )
