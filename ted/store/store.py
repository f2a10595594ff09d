"""The experience store: one SQLite file (`ted.store.database.Database`).

Several server processes may share one file (Claude Desktop and Cursor each start their
own), so every write is a `BEGIN IMMEDIATE` transaction — it takes the write lock up front
and waits on the busy timeout instead of failing on a lock upgrade — and counters are
incremented in SQL, never read-modify-written in Python. Each transaction is one function run
whole on a worker thread (`Store.write`, `Store.read`): the functions below that take a `db`
run there, and none of them awaits anything.

What a read would otherwise have to count is kept as it changes: each version's lessons and
tokens with the version, each library's attempts with the library, so listing libraries is one
statement however many lessons and attempts they hold.

Every change passes the lesson gate in `apply` before anything is written (`ted.store.screening`):
no path into a library — a tool, the CLI, the teacher, an import, a rollback — can skip it.

`get_experiences` is the call an agent makes before every task, so its reply is cached and
checked against SQLite's `PRAGMA data_version` on a second, read-only connection: that costs
microseconds on the event loop, and it changes whenever any connection, in any process, commits.
"""

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from ted.errors import Conflict, InvalidInput, NotFound, invalid_input
from ted.gate import explain
from ted.llm.base import GenerationSettings
from ted.prompts import experience_prompt
from ted.store import evaluations, quarantine, serving
from ted.store.database import Database, default_db_path, open_probe, timestamp
from ted.store.operations import OperationWriter
from ted.store.records import (
    AttemptRecord,
    ChangeResult,
    CitationsCounted,
    CritiqueRecord,
    Decision,
    Dropped,
    Experience,
    ExperienceItem,
    ExperiencePrompt,
    LessonEffect,
    LessonEvidence,
    LibraryDeleted,
    LibrarySettings,
    LibraryState,
    LibrarySummary,
    LibraryVersion,
    NewAttempt,
    Operation,
    Priority,
    Promotion,
    Quarantined,
    Selection,
    SnapshotItem,
    ValidationFigures,
    VersionChoice,
    VersionKind,
    text_sha,
)
from ted.store.screening import Refused, Reviewer, screen
from ted.store.selection import LessonIndex, select
from ted.tokens import count_tokens

# Runs inside a change's transaction with the version it made (None when it made none).
Also = Callable[[sqlite3.Connection, int | None], None]
T = TypeVar("T")
MAX_CACHED_PROMPTS = 64
# The copy check compares a lesson with the tasks and ground truths of the library's latest
# attempts, up to this many characters of them.
RECENT_ATTEMPTS = 20
MAX_RECENT_SOURCE_CHARS = 1_000_000

# One statement: the library, its working version's token count and its active lessons. A
# library without active lessons still yields its own row, with NULL lesson columns.
_PROMPT_SQL = (
    "SELECT l.id, l.name, l.version, l.served_version, l.settings, v.tokens AS version_tokens, e.id AS item_id,"
    " e.text, e.usage_count, e.helpful_count, e.harmful_count, e.tokens, e.evidence FROM libraries l"
    " LEFT JOIN library_versions v ON v.library_id = l.id AND v.version = l.version"
    " LEFT JOIN experiences e ON e.library_id = l.id AND e.state = 'active'"
    " WHERE l.name = ? ORDER BY e.ordinal"
)
# One statement for a page of libraries, whatever they hold: their counts are kept, not counted.
# (A database edited by hand may lack its version's row: then they are counted after all.)
_LIST_SQL = (
    "SELECT l.id, l.name, l.version, l.served_version, l.settings, l.attempts, l.updated_at,"
    " coalesce(v.items, (SELECT count(*) FROM experiences e WHERE e.library_id = l.id AND e.state = 'active'))"
    " AS items, coalesce(v.tokens, (SELECT ifnull(sum(e.tokens), 0) FROM experiences e"
    " WHERE e.library_id = l.id AND e.state = 'active')) AS tokens,"
    " (SELECT count(*) FROM experiences e WHERE e.library_id = l.id AND e.state = 'active'"
    " AND e.evidence ->> '$.flagged' AND e.evidence ->> '$.text_sha' = text_sha(e.text)) AS flagged"
    " FROM libraries l LEFT JOIN library_versions v ON v.library_id = l.id AND v.version = l.version"
    " WHERE l.name > ? ORDER BY l.name LIMIT ?"
)


class Store:
    """Open with `async with Store.open(path) as store:`."""

    def __init__(self, database: Database):
        self._database = database
        self.path = database.path
        self._probe: sqlite3.Connection | None = None
        # (library name, version asked for) → ((data_version, commits) seen before the read, the
        # whole version's reply and the library's settings).
        self._replies: dict[tuple[str, Any], tuple[tuple[int, int], tuple[ExperiencePrompt, LibrarySettings]]] = {}
        # Relevance of lessons to tasks, for libraries that choose lessons per task.
        self.lessons = LessonIndex()
        # The guard model's review of lessons (`ted.guard.Guard`), when whoever opened the store
        # has models to offer; the rules of the gate apply without it.
        self.reviewer: Reviewer | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path | str | None = None, *, verify: bool = False) -> AsyncIterator["Store"]:
        """`verify` checks the file's integrity first (`PRAGMA quick_check`), as a server does at start."""
        path = Path(path) if path is not None else default_db_path()
        database = await Database.open(path, verify=verify)
        store = cls(database)
        try:
            await store.write(_count_missing_tokens)
            store._probe = open_probe(path)
            yield store
        finally:
            if store._probe is not None:
                store._probe.close()
            await database.close()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(db)` as one transaction on the database's writer thread (see `Database.write`)."""
        return await self._database.write(fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(db)` on a reader connection, one snapshot, never behind a write (see `Database.read`)."""
        return await self._database.read(fn)

    # ---- reads -------------------------------------------------------------------------

    def _data_version(self) -> tuple[int, int] | None:
        """What the database looks like now, cheaply; None when that cannot be told."""
        if self._probe is None:
            return None
        try:
            # fetchall, not fetchone: it finishes the statement, which ends the probe's read
            # transaction instead of leaving it open on an old snapshot.
            ((version,),) = self._probe.execute("PRAGMA data_version").fetchall()
        except sqlite3.Error:
            return None  # busy (timeout 0) or gone: read the tables instead
        # Commits through our own connection, counted too: a local write is never served stale
        # even if the probe were to miss it.
        return version, self._database.commits

    async def experience_prompt(
        self, name: str, version: VersionChoice = "served", task: str | None = None
    ) -> ExperiencePrompt:
        """A version's prompt and items (by default the served one); an unknown library reads as empty.

        A library with `selection="relevant"` serves the lessons that fit `task` (by priority when
        there is none) within the prompt's budget. Each call gets its own copy, which the caller
        may change (`get_experiences` sets `task_id`).
        """
        reply, settings = await self.whole_prompt(name, version)
        if settings.selection == "relevant":
            chosen = select(reply.items, task, settings, self.lessons)
            return reply.model_copy(
                update={
                    "items": chosen.lessons,
                    "prompt": chosen.prompt,
                    "tokens": chosen.tokens,
                    "over_budget": settings.over_prompt_budget(len(chosen.lessons), chosen.tokens),
                }
            )
        return reply

    async def whole_prompt(
        self, name: str, version: VersionChoice = "served"
    ) -> tuple[ExperiencePrompt, LibrarySettings]:
        """A version's prompt with every lesson it holds (no selection per task), and the library's
        settings; an unknown library reads as empty. The reply is the caller's own copy."""
        # Checked before the read, so a commit racing with it can only make the entry look older
        # than what it holds (one extra read later), never newer.
        seen = self._data_version()
        key = (name, version)
        if seen is not None and (cached := self._replies.get(key)) is not None and cached[0] == seen:
            reply, settings = cached[1]
        else:
            reply, settings = await self.read(lambda db: _read_prompt(db, name, version))
            if seen is not None:
                if len(self._replies) >= MAX_CACHED_PROMPTS:
                    self._replies.clear()  # agents asking for many unknown names must not grow it
                self._replies[key] = (seen, (reply, settings))
        return reply.model_copy(update={"items": list(reply.items)}), settings

    async def experiences(self, name: str, active_only: bool = True) -> list[Experience]:
        def read(db: sqlite3.Connection) -> list[Experience]:
            return _experiences(db, _require_library(db, name)["id"], active_only)

        return await self.read(read)

    async def library_state(self, name: str) -> LibraryState:
        """Everything a planner needs to predict the library after a change, read at once."""
        return await self.read(lambda db: _state(db, _require_library(db, name)))

    async def attempts(self, name: str, task_id: str) -> list[AttemptRecord]:
        def read(db: sqlite3.Connection) -> list[sqlite3.Row]:
            library = _require_library(db, name)
            return db.execute(
                "SELECT * FROM attempts WHERE library_id = ? AND task_id = ? ORDER BY id", (library["id"], task_id)
            ).fetchall()

        if not (rows := await self.read(read)):
            raise NotFound(
                f"Library {name!r} has no attempts at task {task_id!r}. Record one with record_attempt "
                "(its reply gives the task_id), then ask for a critique."
            )
        return [_attempt(row) for row in rows]

    async def job_attempts(self, job_id: str, epoch: int, problem_id: str) -> list[AttemptRecord]:
        """A distillation job's rollouts at one problem in one epoch, in rollout order."""
        rows = await self.read(
            lambda db: db.execute(
                "SELECT * FROM attempts WHERE job_id = ? AND epoch = ? AND problem_id = ? ORDER BY rollout",
                (job_id, epoch, problem_id),
            ).fetchall()
        )
        return [_attempt(row) for row in rows]

    async def configure(
        self,
        name: str,
        *,
        teacher: str | None = None,
        student: str | None = None,
        guard: str | None = None,
        token_budget: int | None = None,
        max_items: int | None = None,
        generation: dict[str, GenerationSettings] | None = None,
        quarantine: bool | None = None,
        selection: Selection | None = None,
        archive_items: int | None = None,
        archive_tokens: int | None = None,
        priority: Priority | None = None,
    ) -> LibraryState:
        """Set a library's models, budget, per-role generation settings, how it chooses and ranks
        lessons (creating it if needed); None leaves a value as it is, and a role's settings are set
        field by field.

        Not a new version: the lessons are unchanged. The next compression applies a new budget.
        """
        named = {
            "token_budget": token_budget,
            "max_items": max_items,
            "selection": selection,
            "archive_items": archive_items,
            "archive_tokens": archive_tokens,
            "priority": priority,
            "quarantine": quarantine,
        }

        def write(db: sqlite3.Connection) -> LibraryState:
            library = _ensure_library(db, name)
            current = _settings(library)
            changes: dict[str, Any] = {k: v for k, v in named.items() if v is not None}
            for role, given in (generation or {}).items():
                changes[role] = given.over(getattr(current, role)).model_dump()
            try:
                settings = LibrarySettings.model_validate({**current.model_dump(), **changes})
            except ValidationError as e:
                raise invalid_input(e, "Invalid library setting") from None
            db.execute(
                "UPDATE libraries SET teacher_model = coalesce(?, teacher_model),"
                " student_model = coalesce(?, student_model), guard_model = coalesce(?, guard_model), settings = ?"
                " WHERE id = ?",
                (teacher, student, guard, settings.model_dump_json(), library["id"]),
            )
            return _state(db, _require_library(db, name))

        return await self.write(write)

    async def list_libraries(self, after: str = "", limit: int = -1) -> list[LibrarySummary]:
        """Libraries in name order, those after `after`, at most `limit` of them (-1: all): one statement."""
        rows = await self.read(lambda db: db.execute(_LIST_SQL, (after, limit)).fetchall())
        summaries = []
        for row in rows:
            settings = _settings(row)
            summaries.append(
                LibrarySummary(
                    name=row["name"],
                    version=row["version"],
                    served_version=serving.served(row),
                    serves="working" if row["served_version"] is None else "promoted",
                    items=row["items"],
                    tokens=row["tokens"],
                    token_budget=settings.token_budget,
                    max_items=settings.max_items,
                    over_budget=settings.over_budget(row["items"], row["tokens"]),
                    flagged=row["flagged"],
                    attempts=row["attempts"],
                    updated_at=row["updated_at"],
                )
            )
        return summaries

    async def history(self, name: str, *, before: int | None = None, limit: int | None = None) -> list[LibraryVersion]:
        """The library's versions, oldest first, each with its promotions and refusals; with `before` and
        `limit`, the last `limit` versions below `before`."""

        def read(db: sqlite3.Connection) -> list[LibraryVersion]:
            library = _require_library(db, name)
            rows = db.execute(
                "SELECT * FROM (SELECT * FROM library_versions WHERE library_id = ? AND version < ?"
                " ORDER BY version DESC LIMIT ?) ORDER BY version",
                (library["id"], library["version"] + 1 if before is None else before, -1 if limit is None else limit),
            )
            versions = {row["version"]: _version(name, row) for row in rows}
            for decision in serving.decisions(db, library):
                if decision.version in versions:
                    versions[decision.version].promotions.append(decision)
            return list(versions.values())

        return await self.read(read)

    async def critique(self, name: str, critique_id: str) -> CritiqueRecord:
        def read(db: sqlite3.Connection) -> sqlite3.Row | None:
            library = _require_library(db, name)
            sql = "SELECT * FROM critiques WHERE library_id = ? AND id = ?"
            return db.execute(sql, (library["id"], critique_id)).fetchone()

        if (row := await self.read(read)) is None:
            raise NotFound(f"Library {name!r} has no critique {critique_id!r}; a lesson's provenance names its own.")
        reply = json.loads(row["reply"])
        return CritiqueRecord(
            id=row["id"],
            library=name,
            task_id=row["task_id"],
            teacher=row["teacher"],
            attempt_ids=json.loads(row["attempt_ids"]),
            version=row["version"],
            analysis=reply.get("analysis", ""),
            proposed=reply.get("operations", []),
            rejected=json.loads(row["rejected"]),
            job_id=row["job_id"],
            created_at=row["created_at"],
        )

    async def attempts_by_id(self, name: str, ids: Sequence[int]) -> list[AttemptRecord]:
        """The library's attempts with these ids, in the order given; ids it does not hold are left out."""

        def read(db: sqlite3.Connection) -> dict[int, AttemptRecord]:
            library = _require_library(db, name)
            sql = f"SELECT * FROM attempts WHERE library_id = ? AND id IN ({','.join('?' * len(ids))})"
            return {row["id"]: _attempt(row) for row in db.execute(sql, (library["id"], *ids))}

        found = await self.read(read)
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    async def version(self, name: str, version: int) -> LibraryVersion:
        """One version, with its promotions and refusals; NotFound when there is no such version."""

        def read(db: sqlite3.Connection) -> LibraryVersion:
            library = _require_library(db, name)
            past = _version(name, serving.version_row(db, library, version))
            past.promotions = serving.decisions(db, library, version)
            return past

        return await self.read(read)

    # ---- writes ------------------------------------------------------------------------

    async def ensure_library(self, name: str, settings: LibrarySettings | None = None) -> None:
        await self.write(lambda db: _ensure_library(db, name, settings))

    async def apply(
        self,
        name: str,
        operations: Sequence[Operation],
        kind: VersionKind,
        reason: str,
        *,
        expected_version: int | None = None,
        also: Also | None = None,
        over_budget_ok: bool = False,
        distinct: bool = False,
        sources: Sequence[str] = (),
    ) -> ChangeResult:
        """Apply the operations as one new version, or none of them, once their lessons pass the gate.

        Every lesson text is normalised and checked (`sources` are the texts it was distilled
        from, for the copy check). A refused lesson fails the whole call with InvalidInput
        saying why, unless the library quarantines: then it is kept for `ted review` and the
        rest applies (with nothing left, no version is made). Raises InvalidInput naming the
        first operation that does not fit the library as it is at that point (earlier
        operations of the same call included), and when the version would be over the
        library's token budget or item cap: no version is (only a run without compression, the
        paper's ablation, passes `over_budget_ok`). `expected_version` guards a plan made from
        an earlier read: if another client changed the library since, nothing is applied.
        `also(db, version)` runs inside the same transaction, for records that must commit
        together with the version (a critique, the attempts it covered). With `distinct`, a
        lesson added or rewritten to the text of another active one is refused.
        """
        if not operations:
            raise InvalidInput("Nothing to apply: give at least one operation.")
        state = await self._state_or_none(name)
        kept, refused = await self._screen(name, state, operations, sources)
        quarantining = state is not None and state.settings.quarantine
        for r in refused:
            if not (quarantining and r.refusal.content):
                where = f"Operation {r.index} ({r.operation.op}): " if len(operations) > 1 else ""
                raise InvalidInput(where + explain(r.refusal))
        change = _Change(name, kept, kind, reason, expected_version, [_held(r) for r in refused], over_budget_ok)
        return await self.write(lambda db: change.write(db, also, distinct))

    async def screen(
        self, name: str, operations: Sequence[Operation], dropped: Sequence[Dropped] = (), sources: Sequence[str] = ()
    ) -> tuple[list[Operation], list[Dropped]]:
        """A teacher's proposed operations through the gate before they are planned: those that
        pass (lesson texts normalised), and `dropped` plus those refused, with the reason (kept
        in quarantine, with its id, when the library quarantines). Writes only to the quarantine."""
        state = await self._state_or_none(name)
        kept, refused = await self._screen(name, state, operations, sources)
        held: list[Quarantined | None] = [None] * len(refused)
        if state is not None and state.settings.quarantine and (content := [r for r in refused if r.refusal.content]):

            def write(db: sqlite3.Connection) -> list[Quarantined]:
                return quarantine.hold(db, _require_library(db, name), [_held(r) for r in content], "teacher")

            stored = iter(await self.write(write))
            held = [next(stored) if r.refusal.content else None for r in refused]
        return kept, [
            *dropped,
            *(
                Dropped(
                    operation=r.operation.model_dump(mode="json"),
                    reason=f"the lesson {r.refusal.reason}",
                    refused_by=r.by,
                    quarantined=q.id if q else None,
                )
                for r, q in zip(refused, held, strict=True)
            ),
        ]

    async def _state_or_none(self, name: str) -> LibraryState | None:
        try:
            return await self.library_state(name)
        except NotFound:
            return None

    async def _screen(
        self, name: str, state: LibraryState | None, operations: Sequence[Operation], sources: Sequence[str]
    ) -> tuple[list[Operation], list[Refused]]:
        known = [e.text for e in state.experiences] if state else []
        recent = await self.read(lambda db: _recent_sources(db, name)) if state else []
        return await screen(name, operations, known=known, sources=[*sources, *recent], reviewer=self.reviewer)

    async def delete_library(self, name: str) -> LibraryDeleted:
        """Delete a library with its lessons, versions, attempts and critiques, for good.

        Its jobs and the ledger's calls stay, as the record of what was run and paid. Refused
        while one of its jobs may still be running: cancel that first.
        """

        def write(db: sqlite3.Connection) -> LibraryDeleted:
            library = _require_library(db, name)
            running = [
                row["id"]
                for row in db.execute(
                    "SELECT id FROM jobs WHERE library = ? AND state IN ('queued', 'running') ORDER BY created_at",
                    (name,),
                )
            ]
            if running:
                raise InvalidInput(
                    f"Library {name!r} has a job that is not finished ({', '.join(running)}); cancel it with "
                    "cancel_job (or `ted jobs`), then delete the library."
                )
            counts = {
                table: db.execute(f"SELECT count(*) FROM {table} WHERE library_id = ?", (library["id"],)).fetchone()[0]
                for table in ("experiences", "library_versions", "attempts")
            }
            # The foreign keys cascade to experiences, versions, attempts and critiques.
            db.execute("DELETE FROM libraries WHERE id = ?", (library["id"],))
            return LibraryDeleted(
                library=name,
                lessons=counts["experiences"],
                versions=counts["library_versions"],
                attempts=counts["attempts"],
            )

        return await self.write(write)

    # ---- quarantine ------------------------------------------------------------------------

    async def quarantined(self, name: str | None = None, *, pending_only: bool = True) -> list[Quarantined]:
        """Lessons kept for review, of one library or all; only the undecided ones unless asked."""
        return await self.read(lambda db: quarantine.listed(db, name, pending_only=pending_only))

    async def decide(self, quarantine_id: int, *, approve: bool) -> Quarantined:
        """Approve a quarantined lesson (its operation is applied as a new version, the person's
        decision standing in for the gate that refused it) or reject it (nothing is applied)."""
        held = await self.read(lambda db: quarantine.get(db, quarantine_id))
        if held is None:
            raise NotFound(f"There is no quarantined lesson {quarantine_id}; `ted review` lists them.")
        if held.state != "pending":
            raise InvalidInput(f"Quarantined lesson {quarantine_id} was {held.state} already.")

        def mark(db: sqlite3.Connection, version: int | None) -> None:
            quarantine.decide(db, quarantine_id, "approved" if approve else "rejected", version)

        if approve:
            reason = f"approved quarantined lesson {quarantine_id} ({held.refused_by}: {held.reason})"
            change = _Change(held.library, [held.operation], "review", reason)
            await self.write(lambda db: change.write(db, mark))
        else:
            await self.write(lambda db: mark(db, None))
        return await self.read(lambda db: quarantine.get(db, quarantine_id))

    # ---- evaluation reports --------------------------------------------------------------

    async def keep_evaluation(
        self, report_id: str, library: str, version: int, report: str, created_at: datetime
    ) -> None:
        """Keep an evaluation report (its JSON) so it can be listed and shown again."""
        await self.write(lambda db: evaluations.keep(db, report_id, library, version, report, created_at))

    async def evaluations(self, library: str | None = None, *, limit: int = 50) -> list[str]:
        """The kept reports' JSON, newest first; of one library, or of all."""
        return await self.read(lambda db: evaluations.listed(db, library, limit))

    async def evaluation(self, report_id: str) -> str | None:
        return await self.read(lambda db: evaluations.get(db, report_id))

    # ---- serving -------------------------------------------------------------------------

    async def promote(
        self,
        name: str,
        version: int,
        *,
        by: str,
        reason: str,
        decision: Decision = "promoted",
        figures: ValidationFigures | None = None,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> Promotion:
        """Serve `version` from now on (or record that it was refused), with who, why and the figures.

        A promotion pins the served version: from then on critiques change the working version
        only. `also(db)` runs in the same transaction (a job's figures).
        """

        def write(db: sqlite3.Connection) -> Promotion:
            made = serving.decide(db, name, version, decision, by=by, reason=reason, figures=figures)
            if also is not None:
                also(db)
            return made

        return await self.write(write)

    async def serve(self, name: str, what: Literal["working", "promoted"], *, by: str) -> Promotion | None:
        """Serve the working version as it changes, or pin the version served now (`ted config --serve`);
        recorded as a promotion of the version then served. None when nothing changes."""

        def write(db: sqlite3.Connection) -> Promotion | None:
            _ensure_library(db, name)
            return serving.serve(db, name, what, by=by)

        return await self.write(write)

    async def promotions(self, name: str) -> list[Promotion]:
        """Every promotion and refusal of the library, oldest first: the timeline of what it served."""
        return await self.read(lambda db: serving.decisions(db, _require_library(db, name)))

    async def record_evidence(self, name: str, evidence: Mapping[str, LessonEvidence]) -> None:
        """Keep each lesson's measured effect with it (replacing what an earlier measurement said)."""

        def write(db: sqlite3.Connection) -> None:
            library = _require_library(db, name)
            db.executemany(
                "UPDATE experiences SET evidence = ? WHERE library_id = ? AND id = ?",
                [(e.model_dump_json(), library["id"], id_) for id_, e in evidence.items()],
            )

        await self.write(write)

    async def record_attempt(
        self,
        name: str,
        attempt: NewAttempt,
        cited: Sequence[str],
        shown: Sequence[str] | None = None,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> CitationsCounted:
        """Store an attempt and count one use of each experience it cites, in one transaction.

        A lesson of the served version counts as itself; another cited id that was merged away
        is counted for the experience it was merged into; ids that resolve to no lesson served
        are returned as unknown. Only lessons served for the task count: `shown` when given (what
        a job put in its student's prompt), else, for a library that chooses lessons per task,
        those its served and working versions serve for it; the rest are returned as not served.
        `correct` in the attempt, when not None, also moves the helpful/harmful counts of what
        was counted. `also(db)` runs in the same transaction (the ledger row of the call that made
        the attempt).
        """

        def write(db: sqlite3.Connection) -> CitationsCounted:
            library = _ensure_library(db, name)
            served_for = shown
            if served_for is None and _settings(library).selection == "relevant":
                served_for = _served_for(db, library, attempt.task, self.lessons)
            counted = _record_attempt(db, library, attempt, cited, served_for)
            if also is not None:
                also(db)
            return counted

        return await self.write(write)


def _state(db: sqlite3.Connection, library: sqlite3.Row) -> LibraryState:
    return LibraryState(
        name=library["name"],
        settings=_settings(library),
        version=library["version"],
        served_version=library["served_version"],
        next_experience=library["next_experience"],
        teacher_model=library["teacher_model"],
        student_model=library["student_model"],
        guard_model=library["guard_model"],
        experiences=_experiences(db, library["id"], active_only=True),
    )


def _library_row(db: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    return db.execute("SELECT * FROM libraries WHERE name = ?", (name,)).fetchone()


def _require_library(db: sqlite3.Connection, name: str) -> sqlite3.Row:
    if (row := _library_row(db, name)) is None:
        raise NotFound(f"There is no library named {name!r}. Call list_libraries to see the ones that exist.")
    return row


def _ensure_library(db: sqlite3.Connection, name: str, settings: LibrarySettings | None = None) -> sqlite3.Row:
    if (row := _library_row(db, name)) is not None:
        return row
    now = timestamp()
    cursor = db.execute(
        "INSERT INTO libraries (name, settings, created_at, updated_at) VALUES (?, ?, ?, ?)",
        (name, (settings or LibrarySettings()).model_dump_json(), now, now),
    )
    db.execute(
        "INSERT INTO library_versions (library_id, version, kind, reason, operations, snapshot, created_at, items,"
        " tokens) VALUES (?, 0, 'create', 'library created', '[]', '[]', ?, 0, 0)",
        (cursor.lastrowid, now),
    )
    return _library_row(db, name)


def _experiences(db: sqlite3.Connection, library_id: int, active_only: bool) -> list[Experience]:
    sql = "SELECT * FROM experiences WHERE library_id = ?"
    if active_only:
        sql += " AND state = 'active'"
    return [_experience(row) for row in db.execute(sql + " ORDER BY ordinal", (library_id,))]


def _read_prompt(db: sqlite3.Connection, name: str, version: VersionChoice) -> tuple[ExperiencePrompt, LibrarySettings]:
    rows = db.execute(_PROMPT_SQL, (name,)).fetchall()
    if not rows:
        if isinstance(version, int) and version > 0:
            raise NotFound(f"There is no library named {name!r}, so no version {version} of it.")
        return _empty_prompt(name), LibrarySettings()
    library = rows[0]
    wanted = {"working": library["version"], "served": serving.served(library)}.get(version, version)
    if wanted == library["version"]:
        items = [_item(row) for row in rows if row["item_id"] is not None]
        tokens = library["version_tokens"]
        if tokens is None:  # a database edited by hand, without its version's row
            tokens = sum(e.tokens for e in items)
    else:
        items, tokens = _items_at(db, library, wanted), serving.version_row(db, library, wanted)["tokens"]
    settings = _settings(library)
    reply = ExperiencePrompt(
        library=name,
        version=wanted,
        served_version=serving.served(library),
        working_version=library["version"],
        prompt=experience_prompt((e.id, e.text) for e in items),
        items=items,
        tokens=tokens,
        token_budget=settings.token_budget,
        max_items=settings.max_items,
        over_budget=settings.over_budget(len(items), tokens),
    )
    return reply, settings


def _items_at(db: sqlite3.Connection, library: sqlite3.Row, version: int) -> list[ExperienceItem]:
    """A version's lessons, with the texts they had then and their counts now."""
    past = serving.snapshot(db, library, version)
    rows = {
        row["item_id"]: row
        for row in db.execute(
            "SELECT id AS item_id, text AS now, usage_count, helpful_count, harmful_count, tokens, evidence"
            " FROM experiences WHERE library_id = ?",
            (library["id"],),
        )
    }
    encoding = _settings(library).encoding
    return [_item(rows[i.id], text=i.text, tokens=_tokens_then(rows[i.id], i.text, encoding)) for i in past]


def _recent_sources(db: sqlite3.Connection, name: str) -> list[str]:
    """The tasks, answers and ground truths of the library's latest attempts, for the copy check."""
    rows = db.execute(
        "SELECT a.task, a.answer, a.ground_truth FROM attempts a JOIN libraries l ON l.id = a.library_id"
        " WHERE l.name = ? ORDER BY a.id DESC LIMIT ?",
        (name, RECENT_ATTEMPTS),
    ).fetchall()
    texts, size = [], 0
    for text in dict.fromkeys(t for row in rows for t in row if t):
        if (size := size + len(text)) > MAX_RECENT_SOURCE_CHARS:
            break
        texts.append(text)
    return texts


class _Change:
    """Operations that passed the gate, written as one version, with `held` kept in quarantine."""

    def __init__(
        self,
        name: str,
        operations: Sequence[Operation],
        kind: VersionKind,
        reason: str,
        expected_version: int | None = None,
        held: Sequence[quarantine.Held] = (),
        over_budget_ok: bool = False,
    ):
        self.name, self.operations, self.kind, self.reason = name, operations, kind, reason
        self.expected_version, self.held, self.over_budget_ok = expected_version, held, over_budget_ok

    def write(self, db: sqlite3.Connection, also: Also | None = None, distinct: bool = False) -> ChangeResult:
        library = _ensure_library(db, self.name)
        if self.expected_version is not None and library["version"] != self.expected_version:
            raise Conflict(
                f"Library {self.name!r} changed (version {self.expected_version} → {library['version']}) while "
                "this change was being prepared; nothing was applied. Run it again."
            )
        kept = quarantine.hold(db, library, self.held, self.kind) if self.held else []
        applied: list[Operation] = []
        version = None
        if self.operations:
            version = library["version"] + 1
            active = {e.id for e in _experiences(db, library["id"], active_only=True)}
            writer = OperationWriter(db, library, active, version, distinct)
            applied = writer.apply(self.operations)
            items = _experiences(db, library["id"], active_only=True)
            tokens = _prompt_tokens(library, items)
            if not self.over_budget_ok:
                _check_budget(library, items, tokens)
            _record_version(db, library, version, self.kind, self.reason, applied, items, tokens, writer.next_number)
        if also is not None:
            also(db, version)
        library = _library_row(db, self.name)
        row = serving.version_row(db, library, library["version"])
        settings = _settings(library)
        return ChangeResult(
            library=self.name,
            version=library["version"],
            operations=applied,
            items=row["items"],
            tokens=row["tokens"],
            over_budget=settings.over_budget(row["items"], row["tokens"]),
            quarantined=kept,
        )


def _record_attempt(
    db: sqlite3.Connection,
    library: sqlite3.Row,
    a: NewAttempt,
    cited: Sequence[str],
    shown: Sequence[str] | set[str] | None,
) -> CitationsCounted:
    served_ids = (
        set()  # the working version is served: its lessons are the active ones
        if library["served_version"] in (None, library["version"])
        else {i.id for i in serving.snapshot(db, library, library["served_version"])}
    )
    lessons = _lessons_cited(db, library["id"], cited)
    counted: dict[str, str] = {}  # cited id → the id that was counted
    unknown: list[str] = []
    not_served: list[str] = []
    for id_ in cited:
        if shown is not None and id_ not in shown:
            (not_served if id_ in lessons else unknown).append(id_)
        elif id_ in served_ids:
            counted[id_] = id_
        elif (resolved := _resolve(db, library["id"], id_, lessons)) is None:
            unknown.append(id_)
        else:
            counted[id_] = resolved
    counted_ids = list(dict.fromkeys(counted.values()))
    cursor = db.execute(
        "INSERT INTO attempts (library_id, task_id, task, images, trajectory, answer, ground_truth, correct,"
        " graded_by, cited, counted, model, library_version, created_at, job_id, epoch, problem_id, rollout)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            *(library["id"], a.task_id, a.task, json.dumps(a.images), a.trajectory, a.answer, a.ground_truth),
            *(a.correct, a.graded_by, json.dumps(list(cited)), json.dumps(counted_ids), a.model),
            *(library["version"], timestamp(), a.job_id, a.epoch, a.problem_id, a.rollout),
        ),
    )
    db.execute("UPDATE libraries SET attempts = attempts + 1 WHERE id = ?", (library["id"],))
    usage: dict[str, int] = {}
    if counted_ids:
        marks = ",".join("?" * len(counted_ids))
        usage = dict(
            db.execute(
                "UPDATE experiences SET usage_count = usage_count + 1, helpful_count = helpful_count + ?,"
                f" harmful_count = harmful_count + ? WHERE library_id = ? AND id IN ({marks})"
                " RETURNING id, usage_count",
                (int(a.correct is True), int(a.correct is False), library["id"], *counted_ids),
            ).fetchall()
        )
    return CitationsCounted(
        attempt_id=cursor.lastrowid,
        counted_ids=counted_ids,
        redirected={cited_id: to for cited_id, to in counted.items() if cited_id != to},
        unknown_ids=unknown,
        not_served_ids=not_served,
        usage_counts={id_: usage[id_] for id_ in counted_ids},
    )


def _served_for(db: sqlite3.Connection, library: sqlite3.Row, task: str, index: LessonIndex) -> set[str]:
    """The ids the served and the working version serve for `task` (selection per task)."""
    settings = _settings(library)
    ids: set[str] = set()
    for version in {library["version"], serving.served(library)}:
        chosen = select(_items_at(db, library, version), task, settings, index)
        ids.update(i.id for i in chosen.lessons)
    return ids


def _lessons_cited(db: sqlite3.Connection, library_id: int, cited: Sequence[str]) -> dict[str, sqlite3.Row]:
    """The cited lessons that exist, by id, with their state and where they were merged: one statement."""
    if not cited:
        return {}
    marks = ",".join("?" * len(cited))
    rows = db.execute(
        f"SELECT id, state, merged_into FROM experiences WHERE library_id = ? AND id IN ({marks})",
        (library_id, *cited),
    )
    return {row["id"]: row for row in rows}


def _resolve(db: sqlite3.Connection, library_id: int, id_: str, known: Mapping[str, sqlite3.Row]) -> str | None:
    """The active experience an id stands for now, following merges; None if there is none."""
    seen = set()
    while id_ not in seen:
        seen.add(id_)
        row = (
            known.get(id_)
            or db.execute(
                "SELECT id, state, merged_into FROM experiences WHERE library_id = ? AND id = ?", (library_id, id_)
            ).fetchone()
        )
        if row is None:
            return None
        if row["state"] == "active":
            return id_
        if row["merged_into"] is None:
            return None
        id_ = row["merged_into"]
    return None


def _prompt_tokens(library: sqlite3.Row, items: Sequence[Experience]) -> int:
    """The tokens of the prompt these lessons make: counted once, when their version is written."""
    return count_tokens(experience_prompt((e.id, e.text) for e in items), _settings(library).encoding)


def _count_missing_tokens(db: sqlite3.Connection) -> None:
    """Versions written before their counts were kept get them once, here (an older database)."""
    missing = db.execute(
        "SELECT v.library_id, v.version, v.snapshot, l.settings FROM library_versions v"
        " JOIN libraries l ON l.id = v.library_id WHERE v.tokens IS NULL"
    ).fetchall()
    for row in missing:
        items = json.loads(row["snapshot"])
        text = experience_prompt((i["id"], i["text"]) for i in items)
        tokens = count_tokens(text, _settings(row).encoding)
        db.execute(
            "UPDATE library_versions SET items = ?, tokens = ? WHERE library_id = ? AND version = ?",
            (len(items), tokens, row["library_id"], row["version"]),
        )


def _check_budget(library: sqlite3.Row, items: Sequence[Experience], tokens: int) -> None:
    settings = _settings(library)
    if settings.over_budget(len(items), tokens):
        name = library["name"]
        relevant = settings.selection == "relevant"
        flags = "--archive-items N --archive-tokens N" if relevant else "--max-items N --budget N"
        raise InvalidInput(
            f"This change would leave library {name!r} over its budget ({len(items)} lessons, cap "
            f"{settings.kept_items}; {tokens} tokens, budget {settings.kept_tokens}); nothing was applied. "
            f"Compress it first (compress_library), remove lessons, or raise the budget with "
            f"`ted config {name} {flags}`."
        )


def _record_version(
    db: sqlite3.Connection,
    library: sqlite3.Row,
    version: int,
    kind: VersionKind,
    reason: str,
    applied: list[Operation],
    items: list[Experience],
    tokens: int,
    next_number: int,
) -> None:
    """The version's row, with what it applied, the lessons it left and their tokens, and the
    library moved to it."""
    snapshot = [SnapshotItem(id=e.id, text=e.text) for e in items]
    now = timestamp()
    db.execute(
        "INSERT INTO library_versions (library_id, version, kind, reason, operations, snapshot, created_at, items,"
        " tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (library["id"], version, kind, reason, _dump(applied), _dump(snapshot), now, len(items), tokens),
    )
    db.execute(
        "UPDATE libraries SET version = ?, next_experience = ?, updated_at = ? WHERE id = ?",
        (version, next_number, now, library["id"]),
    )


def _held(r: Refused) -> quarantine.Held:
    return r.operation, r.refusal.reason, r.by


def _settings(library: sqlite3.Row) -> LibrarySettings:
    return LibrarySettings.model_validate_json(library["settings"])


def _attempt(row: sqlite3.Row) -> AttemptRecord:
    lists = ("cited", "counted", "images")
    fields = {k: row[k] for k in AttemptRecord.model_fields if k not in lists}
    return AttemptRecord(**fields, **{k: json.loads(row[k]) for k in lists})


def _experience(row: sqlite3.Row) -> Experience:
    # sqlite3.Row iterates its values, not its keys: `.keys()` is needed here.
    return Experience(
        **{k: row[k] for k in row.keys() if k not in ("library_id", "ordinal", "provenance", "evidence")},
        provenance=json.loads(row["provenance"]),
        evidence=_evidence(row["evidence"], row["text"]),
    )


def _evidence(stored: str | None, text: str) -> LessonEvidence | None:
    """A lesson's stored evidence, unless it was measured on other words than the lesson has now."""
    if stored is None:
        return None
    evidence = LessonEvidence.model_validate_json(stored)
    return evidence if evidence.text_sha == text_sha(text) else None


def _item(row: sqlite3.Row, *, text: str | None = None, tokens: int | None = None) -> ExperienceItem:
    """A lesson as `get_experiences` shows it; `text` and `tokens` for a past version's wording."""
    text = row["text"] if text is None else text
    evidence = _evidence(row["evidence"], text)
    return ExperienceItem(
        id=row["item_id"],
        text=text,
        usage_count=row["usage_count"],
        helpful_count=row["helpful_count"],
        harmful_count=row["harmful_count"],
        tokens=row["tokens"] if tokens is None else tokens,
        evidence=evidence and LessonEffect.model_validate(evidence, from_attributes=True),
    )


def _tokens_then(row: sqlite3.Row, text: str, encoding: str) -> int | None:
    """A past wording's token count; None when it is the wording the row has now (its count is kept)."""
    return None if row["now"] == text else count_tokens(text, encoding)


def _empty_prompt(name: str) -> ExperiencePrompt:
    settings = LibrarySettings()
    return ExperiencePrompt(
        library=name,
        version=0,
        prompt="",
        items=[],
        tokens=0,
        token_budget=settings.token_budget,
        max_items=settings.max_items,
        over_budget=False,
    )


def _version(name: str, row: sqlite3.Row) -> LibraryVersion:
    return LibraryVersion(
        library=name,
        version=row["version"],
        kind=row["kind"],
        reason=row["reason"],
        operations=json.loads(row["operations"]),
        snapshot=json.loads(row["snapshot"]),
        created_at=row["created_at"],
    )


def _dump(models: Sequence[Any]) -> str:
    return json.dumps([m.model_dump(mode="json") for m in models])
