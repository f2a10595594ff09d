"""What an agent or a person can do to a library: the operations behind the MCP tools and
the `ted` CLI, on top of the store. Arguments arrive already validated by the types in
`ted.models`; what needs the store to check (ids, versions) is checked here or there.
"""

import hashlib
import os
from collections.abc import Sequence
from typing import Literal

from ted.citations import cited_ids
from ted.errors import ConfigError, InvalidInput
from ted.grading import final_answer, grade
from ted.models import (
    MAX_EXPERIENCE_CHARS,
    AddOp,
    AttemptResult,
    ChangedItem,
    ChangeResult,
    DeleteOp,
    ExperiencePrompt,
    LibraryState,
    Operation,
    RestoreOp,
    RewriteOp,
    VersionDiff,
)
from ted.safety import injection_problem
from ted.store import Store


def task_id_for(task: str) -> str:
    """A stable id for a task text, so repeated attempts at one task group together."""
    return "t-" + hashlib.sha256(" ".join(task.split()).encode()).hexdigest()[:16]


async def get_experiences(store: Store, library: str, task: str | None = None) -> ExperiencePrompt:
    prompt = await store.experience_prompt(library)
    if task is not None:
        prompt.task_id = task_id_for(task)
    return prompt


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
) -> AttemptResult:
    """Store an attempt, grade it against the ground truth, and count the experiences it cites.

    A ground truth decides the grade; `correct` is the caller's own verdict (tests passed, the
    user accepted) and is used only when there is no ground truth to grade against.
    """
    graded_by = "caller" if correct is not None else None
    if ground_truth is not None:
        candidate = answer if answer is not None else final_answer(trajectory)
        if candidate is None:
            correct, graded_by = False, "exact"
        else:
            correct, graded_by = grade(candidate, ground_truth)
    task_id = task_id or task_id_for(task)
    stored = await store.record_attempt(
        library,
        {
            "task_id": task_id,
            "task": task,
            "trajectory": trajectory,
            "answer": answer,
            "ground_truth": ground_truth,
            "correct": correct,
            "graded_by": graded_by,
            "model": model,
        },
        cited_ids(trajectory, used_experience_ids),
    )
    return AttemptResult(library=library, task_id=task_id, correct=correct, graded_by=graded_by, **stored)


async def add_experience(store: Store, library: str, text: str, source: str = "manual") -> ChangeResult:
    text = text.strip()
    if not 1 <= len(text) <= MAX_EXPERIENCE_CHARS:
        raise InvalidInput(
            f"A lesson needs 1 to {MAX_EXPERIENCE_CHARS} characters of text; this one has {len(text)}. "
            "Write a general lesson in one or two sentences."
        )
    if why := injection_problem(text):
        raise InvalidInput(
            f"This lesson {why}. Lessons are prepended to agents' system prompts, so they may only talk about "
            "the task: rephrase it as a reasoning pattern or a pitfall."
        )
    op = AddOp(text=text, provenance={"source": source})
    return await store.apply(library, [op], kind="add", reason=f"experience added ({source})")


async def rollback(store: Store, library: str, version: int) -> ChangeResult:
    """Make the library look as it did at `version`, as a new version (history is kept)."""
    target = await store.version(library, version)
    state = await store.library_state(library)
    current = {e.id: e for e in state.experiences}
    wanted = {item.id: item.text for item in target.snapshot}
    operations: list[Operation] = [DeleteOp(id=id_) for id_ in current if id_ not in wanted]
    for id_, text in wanted.items():
        if id_ not in current:
            operations.append(RestoreOp(id=id_, text=text))
        elif current[id_].text != text:
            operations.append(RewriteOp(id=id_, text=text))
    if not operations:
        raise InvalidInput(f"Library {library!r} already has the content of version {version}; nothing to roll back.")
    return await store.apply(
        library, operations, kind="rollback", reason=f"rollback to version {version}", expected_version=state.version
    )


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


def model_name(state: LibraryState, role: Literal["teacher", "student"], given: str | None = None) -> str:
    """The model for a role: the one given, else the library's own, else TED_TEACHER / TED_STUDENT."""
    name = given or getattr(state, f"{role}_model") or os.environ.get(f"TED_{role.upper()}")
    if not name:
        raise ConfigError(
            f"No {role} model is configured for library {state.name!r}: set TED_{role.upper()}=provider:model "
            "(e.g. anthropic:claude-sonnet-4-5 or openai:gpt-4.1) in the server's environment, or run "
            f"`ted config {state.name} --{role} provider:model`."
        )
    return name
