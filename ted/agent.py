"""What an agent or a person can do to a library: the operations behind the MCP tools and
the `ted` CLI, on top of the store. Arguments arrive already validated by the types in
`ted.store.records`; what needs the store to check (ids, versions) is checked here or there.
"""

from collections.abc import Callable, Sequence
from typing import Literal

import anyio.to_thread

from ted.citations import cited_ids
from ted.errors import InvalidInput, NotFound
from ted.files import Roots
from ted.gate import check, explain, normalise
from ted.grading import grade_attempt
from ted.ledger import Ledger
from ted.llm.base import Model
from ted.llm.registry import load_model
from ted.store import Store
from ted.store.records import (
    AddOp,
    AttemptResult,
    ChangedItem,
    ChangeResult,
    DeleteOp,
    Experience,
    ExperiencePrompt,
    NewAttempt,
    Promoted,
    RewriteOp,
    VersionChoice,
    VersionDiff,
)
from ted.store.serving import restore_operations
from ted.tasks import Task
from ted.teacher.compression import CompressionResult, Strategy, compress_library


async def get_experiences(
    store: Store,
    library: str,
    task: str | None = None,
    images: Sequence[str] = (),
    roots: Roots = None,
    version: VersionChoice = "served",
) -> ExperiencePrompt:
    """The lessons of a version (by default the served one); those that fit `task` for a library
    that chooses lessons per task."""
    prompt = await store.experience_prompt(library, version, task)
    if task is not None:
        prompt.task_id = (await _read_task(task, images, roots)).id
    return prompt


async def _read_task(text: str, images: Sequence[str], roots: Roots) -> Task:
    """The task with its images read (in a worker thread); InvalidInput naming a bad image. Image
    files must be inside `roots` when a client named them (`ted.files`)."""
    if not images:
        return Task(text=text)
    return await anyio.to_thread.run_sync(Task.read, text, list(images), roots)


async def record_attempt(
    store: Store,
    *,
    library: str,
    task: str,
    trajectory: str,
    answer: str | None = None,
    task_id: str | None = None,
    ground_truth: str | None = None,
    correct: bool | None = None,
    used_experience_ids: Sequence[str] = (),
    model: str | None = None,
    images: Sequence[str] = (),
    roots: Roots = None,
) -> AttemptResult:
    """Store an attempt, grade it against the ground truth, and count the experiences it cites.

    A ground truth decides the grade; `correct` is the caller's own verdict (tests passed, the
    user accepted) and is used only when there is no ground truth to grade against. `images` are
    the task's figures (data: URLs, http(s) URLs, or absolute paths on this machine): read and
    checked now (files inside `roots`, when given), part of the task's id, and shown to the
    teacher when it critiques the task.
    """
    read = await _read_task(task, images, roots)
    graded_by = "caller" if correct is not None else None
    if ground_truth is not None:
        correct, graded_by = await grade_attempt(ground_truth, trajectory, answer)
    attempt = NewAttempt(
        task_id=task_id or read.id,
        task=task,
        images=list(images),
        trajectory=trajectory,
        answer=answer,
        ground_truth=ground_truth,
        correct=correct,
        graded_by=graded_by,
        model=model,
    )
    counted = await store.record_attempt(library, attempt, cited_ids(trajectory, used_experience_ids))
    return AttemptResult(
        library=library, task_id=attempt.task_id, correct=correct, graded_by=graded_by, **counted.model_dump()
    )


def checked_lesson(text: str) -> str:
    """A lesson written by an agent or a person, normalised as it would be stored; InvalidInput when
    it is empty or too long. What it says, the store's lesson gate judges (and may quarantine), as
    for every other path into a library.
    """
    text = normalise(text)
    if (refusal := check(text)) is not None and not refusal.content:
        raise InvalidInput(explain(refusal))
    return text


async def add_experience(store: Store, library: str, text: str, source: str = "manual") -> ChangeResult:
    """Add a lesson; one the library already has (case and spacing aside) is refused with its id."""
    op = AddOp(text=checked_lesson(text), provenance={"source": source})
    return await store.apply(library, [op], kind="add", reason=f"experience added ({source})", distinct=True)


async def edit_experience(store: Store, library: str, id_: str, text: str, source: str = "manual") -> ChangeResult:
    """Give a lesson new words: the same id (its usage counts stay), as a new version."""
    text = checked_lesson(text)
    current = await _active_lesson(store, library, id_)
    if current.text == text:
        raise InvalidInput(f"{id_} of {library!r} already reads exactly so; nothing was changed.")
    op = RewriteOp(id=id_, text=text)
    return await store.apply(library, [op], kind="manual", reason=f"{id_} edited ({source})", distinct=True)


async def remove_experience(store: Store, library: str, id_: str, source: str = "manual") -> ChangeResult:
    """Retire one lesson, as a new version (rollback_library brings it back)."""
    await _active_lesson(store, library, id_)
    return await store.apply(library, [DeleteOp(id=id_)], kind="manual", reason=f"{id_} removed ({source})")


async def _active_lesson(store: Store, library: str, id_: str) -> Experience:
    lessons = {e.id: e for e in await store.experiences(library)}
    if id_ not in lessons:
        ids = ", ".join(lessons) or "none"
        raise NotFound(f"Library {library!r} has no active lesson {id_}; its lessons are: {ids}.")
    return lessons[id_]


async def compress(
    store: Store,
    ledger: Ledger,
    models: Callable[[str], Model],
    library: str,
    *,
    strategy: Strategy = "teacher",
    dry_run: bool = False,
    seed: int | None = None,
) -> CompressionResult:
    """Compress a library to its budget; the teacher strategy asks the library's teacher (its own,
    else TED_TEACHER), and its calls go to the ledger."""
    teacher = None
    if strategy == "teacher":
        state = await store.library_state(library)
        teacher = await load_model(models, state.model_for("teacher"))
        teacher = ledger.bind(teacher, "compress", library=library, settings=state.generation_for("teacher"))
    return await compress_library(store, library, strategy=strategy, teacher=teacher, dry_run=dry_run, seed=seed)


async def rollback(store: Store, library: str, version: int) -> ChangeResult:
    """Make the library's working version look as it did at `version`, as a new version (history
    is kept). A library that serves promoted versions goes on serving the one it did."""
    target = await store.version(library, version)
    state = await store.library_state(library)
    operations = restore_operations(state.experiences, target.snapshot)
    if not operations:
        raise InvalidInput(f"Library {library!r} already has the content of version {version}; nothing to roll back.")
    return await store.apply(
        library, operations, kind="rollback", reason=f"rollback to version {version}", expected_version=state.version
    )


async def promote(
    store: Store, library: str, version: int | Literal["working"], *, by: str, reason: str | None = None
) -> Promoted:
    """Serve `version` (or the working version) from now on: a person's decision, recorded with who
    made it. The library then serves promoted versions only: critiques change the working one."""
    state = await store.library_state(library)
    number = state.version if version == "working" else version
    if number > state.version:
        raise NotFound(f"Library {library!r} has no version {number}; its newest is {state.version}.")
    decision = await store.promote(library, number, by=by, reason=reason or "promoted by hand")
    return Promoted(served_version=number, served_before=decision.served_before, working_version=state.version)


async def diff(store: Store, library: str, from_version: int, to_version: int) -> VersionDiff:
    before = {i.id: i for i in (await store.version(library, from_version)).snapshot}
    after = {i.id: i for i in (await store.version(library, to_version)).snapshot}
    return VersionDiff(
        library=library,
        from_version=from_version,
        to_version=to_version,
        added=[item for id_, item in after.items() if id_ not in before],
        removed=[item for id_, item in before.items() if id_ not in after],
        changed=[
            ChangedItem(id=id_, before=before[id_].text, after=item.text)
            for id_, item in after.items()
            if id_ in before and before[id_].text != item.text
        ],
    )
