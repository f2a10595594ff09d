"""The tools an agent uses before and after every task, and to look after a library by hand:
read the library, record an attempt, add, edit or remove a lesson, list, roll back or delete a
library. No model is called."""

from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from ted import agent
from ted.errors import InvalidInput
from ted.files import data_roots
from ted.images import MAX_IMAGES
from ted.store.records import (
    MAX_CITED_IDS,
    AnswerText,
    AttemptResult,
    ChangeResult,
    ExperienceId,
    ExperiencePrompt,
    Flag,
    LessonText,
    LibraryDeleted,
    LibraryList,
    LibraryName,
    Promoted,
    TaskId,
    TaskText,
    TrajectoryText,
    Version,
    VersionChoice,
)
from ted_server.context import ted

Images = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=8_000_000)]],
    Field(
        max_length=MAX_IMAGES,
        description="The task's images: data: URLs (base64 PNG, JPEG, GIF or WebP, up to 5 MB each), http(s) "
        "URLs, or absolute paths in the server's TED_DATA_DIRS. They are part of the task's id.",
    ),
]


async def get_experiences(
    ctx: Context,
    library: LibraryName = "default",
    task: Annotated[
        TaskText | None,
        Field(
            description="Optional. Selects lessons only where the library chooses them per task; its hash comes "
            "back as task_id, the id record_attempt gives this task."
        ),
    ] = None,
    images: Annotated[Images, Field(description="The task's images, as record_attempt takes them.")] = [],
    version: VersionChoice = "served",
) -> Annotated[CallToolResult, ExperiencePrompt]:
    """Read the experience library before you solve a task.

    Returns `prompt`, the lessons to put before your own instructions (empty when nothing
    has been learned yet), the items with their ids and usage counts, the library version,
    its token count and budget. Cite a lesson as [E3] when you apply it.
    """
    prompt = await agent.get_experiences(ted(ctx).store, library, task, images, roots=data_roots(), version=version)
    # The text block is what a model reads (many clients show it nothing else): the prompt and a
    # line of where it stands, not a second copy of the structured content, which carried the
    # lessons twice more and was the larger part of the call every agent makes before every task.
    return CallToolResult(
        content=[TextContent(type="text", text=prompt.as_text())],
        structured_content=prompt.model_dump(mode="json"),
    )


async def record_attempt(
    ctx: Context,
    task: TaskText,
    trajectory: TrajectoryText,
    answer: Annotated[AnswerText | None, Field(description="Your final answer; a number is fine.")] = None,
    library: LibraryName = "default",
    task_id: Annotated[
        TaskId | None,
        Field(
            description="Your id for the task (no spaces; default: get_experiences' task_id). Attempts "
            "with the same id are critiqued together."
        ),
    ] = None,
    ground_truth: Annotated[
        AnswerText | None, Field(description="The correct answer, when known: the attempt is graded against it.")
    ] = None,
    correct: Annotated[Flag | None, Field(description="Your verdict when there is no ground truth.")] = None,
    used_experience_ids: Annotated[
        list[ExperienceId],
        Field(
            max_length=MAX_CITED_IDS, description="Ids of the lessons you applied; [E3] in the trajectory counts too."
        ),
    ] = [],
    model: Annotated[str | None, Field(max_length=200, description="The model that made the attempt.")] = None,
    images: Images = [],
) -> AttemptResult:
    """Record one attempt at a task, after you solved it.

    Pass your reasoning as `trajectory` (citing lessons as [E3]) and your final `answer`.
    With a `ground_truth` the attempt is graded and the grade returned; otherwise pass
    `correct` if you learned the outcome. Each cited experience, from `used_experience_ids`
    and from [E#] citations in the trajectory, counts one use. Unknown ids are reported back.
    Pass the task's figures as `images`: the teacher sees them when it critiques the task.
    """
    return await agent.record_attempt(
        ted(ctx).store,
        library=library,
        task=task,
        trajectory=trajectory,
        answer=answer,
        task_id=task_id,
        ground_truth=ground_truth,
        correct=correct,
        used_experience_ids=used_experience_ids,
        model=model,
        images=images,
        roots=data_roots(),
    )


async def add_experience(ctx: Context, text: LessonText, library: LibraryName = "default") -> ChangeResult:
    """Add a lesson to a library by hand.

    Write a general lesson that helps with many tasks of this kind (a reasoning pattern
    that works, or a failure to avoid), never the answer to one task. Makes a new version.
    A lesson the library already has is refused with its id; one that addresses the agent
    (its instructions, tools, links, secrets) instead of the task, by the lesson gate.
    """
    return await agent.add_experience(ted(ctx).store, library, text, source="add_experience")


LessonId = Annotated[ExperienceId, Field(description="The lesson's id, e.g. 'E3' (see get_experiences).")]


async def edit_experience(ctx: Context, library: LibraryName, id: LessonId, text: LessonText) -> ChangeResult:
    """Reword one lesson: it keeps its id and usage counts; the change is a new version.

    The new text passes the lesson gate like a new lesson's, and may not repeat another lesson.
    """
    return await agent.edit_experience(ted(ctx).store, library, id, text, source="edit_experience")


async def remove_experience(ctx: Context, library: LibraryName, id: LessonId) -> ChangeResult:
    """Remove one lesson from a library, as a new version (rollback_library brings it back)."""
    return await agent.remove_experience(ted(ctx).store, library, id, source="remove_experience")


async def list_libraries(
    ctx: Context,
    after: Annotated[str, Field(max_length=64, description="The next_after of the page before.")] = "",
    limit: Annotated[int, Field(ge=1, le=1000, description="Libraries per page.")] = 100,
) -> LibraryList:
    """List the experience libraries by name, with their version, size, tokens and attempts,
    `limit` at a time."""
    # One more than the page, to know whether another follows.
    libraries = await ted(ctx).store.list_libraries(after, limit + 1)
    more = len(libraries) > limit
    return LibraryList(libraries=libraries[:limit], next_after=libraries[limit - 1].name if more else None)


async def rollback_library(
    ctx: Context,
    library: LibraryName,
    version: Annotated[Version, Field(description="The version whose lessons to bring back.")],
) -> ChangeResult:
    """Undo changes: make the library's lessons what they were at `version`.

    History is kept: the rollback is itself a new version, so it can be undone too.
    """
    return await agent.rollback(ted(ctx).store, library, version)


async def delete_library(
    ctx: Context,
    library: LibraryName,
    confirm: Annotated[str, Field(max_length=64, description="The library's name again, to confirm.")],
) -> LibraryDeleted:
    """Delete a library for good: its lessons, every version and its recorded attempts.

    Cannot be undone (export it first with `ted export` to keep a copy). Ask the user before
    calling this. Refused while one of its jobs is running.
    """
    if confirm != library:
        raise InvalidInput(f"To delete library {library!r}, pass confirm={library!r}; nothing was deleted.")
    return await ted(ctx).store.delete_library(library)


async def promote_version(
    ctx: Context,
    library: LibraryName,
    version: Annotated[Literal["working"] | Version, Field(description="A version number, or 'working'.")],
    reason: Annotated[str | None, Field(max_length=500, description="Why, for the history.")] = None,
) -> Promoted:
    """Serve this version from now on (ask the user first); recorded in the library's history."""
    return await agent.promote(ted(ctx).store, library, version, by="promote_version", reason=reason)
