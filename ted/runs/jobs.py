"""Distillation jobs: parameters, state and progress, kept in SQLite so a job outlives its process.

A job's problems (and the dataset's worked solutions, for the teacher) are stored with it, so
resuming never depends on the dataset file still being where it was. Whoever runs a job holds a
lease (`owner`, renewed while it runs): a second process on the same database leaves a leased
job alone. A job also records the endpoint each of its models was reached at (`config`): a
server started with `--resume-jobs` takes over an interrupted job only when its lease lapsed or
its owner is gone AND it reaches the same endpoints; anything else resumes a job only when
asked to (`ted distill --resume`, `distill_batch(resume=…)`).

    queued → running → done | failed | cancelled | stopped (a cost or token cap was reached)

Only `done` is final: a failed, cancelled or stopped job resumes where it stopped (no paid call
is repeated), and a cancel only drops the batch that was in flight.
"""

import json
import os
import socket
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, WithJsonSchema

from ted.errors import InvalidInput, NotFound, TedError, invalid_input
from ted.ledger import CostSummary, Ledger
from ted.llm.base import GenerationSettings, Model
from ted.pricing import unpriced_models
from ted.runs.datasets import Problem
from ted.store import Store, serving
from ted.store.database import timestamp
from ted.store.records import LibraryName, LibrarySettings, LibraryState, ValidationFigures

JobState = Literal["queued", "running", "done", "failed", "cancelled", "stopped"]
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled", "stopped"})
RESUMABLE: frozenset[str] = frozenset({"failed", "cancelled", "stopped"})
LEASE = timedelta(seconds=30)

Compression = Literal["teacher", "truncate", "random", "none"]
RESUMABLE_HELP = "distill_batch(resume=id) or `ted distill --resume` continues it."


class ValidationParams(BaseModel):
    """How a job with a validation set decides which version its library serves."""

    split: float | None = Field(
        None, gt=0, lt=1, description="Hold out this share of the dataset as the validation set (no other set given)."
    )
    samples: int = Field(1, ge=1, le=64, description="Answers per validation problem and version.")
    every: int | None = Field(None, ge=1, description="Validate after every N batches (default: after each epoch).")
    margin: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Promote the working version when its validation accuracy, paired per problem, is at least the "
        "served one's less this.",
    )
    keep: Literal["best", "last"] = Field(
        "last", description="After a refusal go on from the last version, or from the served one (the best so far)."
    )


class DistillParams(BaseModel):
    """What a distillation runs with; the defaults are the paper's."""

    library: LibraryName
    student: str = Field(description="The student model, provider:model.")
    teacher: str = Field(description="The teacher model, provider:model.")
    epochs: int = Field(3, ge=1, le=100)
    rollouts: int = Field(5, ge=1, le=64, description="Student attempts per problem and epoch.")
    concurrency: int = Field(8, ge=1, le=256, description="Problems in flight at once; 1 is the paper's strict order.")
    critique_all: bool = Field(False, description="Critique groups whose every rollout was correct too.")
    compression: Compression = Field("teacher", description="none, truncate and random reproduce the ablations.")
    seed: int = 0
    max_cost_usd: float | None = Field(None, gt=0, description="Stop cleanly once the job has cost this much.")
    max_tokens: int | None = Field(None, gt=0, description="Stop cleanly once the job has used this many tokens.")
    student_settings: GenerationSettings = Field(
        default_factory=GenerationSettings, description="How the student samples (resolved when the job was made)."
    )
    teacher_settings: GenerationSettings = Field(
        default_factory=GenerationSettings, description="How the teacher samples (resolved when the job was made)."
    )
    failure_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="The job fails once this share of one batch's critiques could not be made (the teacher's "
        "replies unusable, or its calls failing); 1, the default, only when all of them failed.",
    )
    validation: Annotated[ValidationParams, WithJsonSchema({"type": "object"})] = Field(
        default_factory=ValidationParams, description="How a validation set decides what the library serves."
    )


class StepFailure(BaseModel):
    """A problem's critique that could not be made: which step failed, and why."""

    problem_id: str | None = Field(description="None for a batch's compression.")
    step: Literal["teacher-solve", "summarise", "critique", "compress"]
    error: str


class ValidationRound(BaseModel):
    """The working version against the served one on the validation set, after some batches."""

    epoch: int
    batches_done: int = Field(description="Batches of the job done (over all epochs) when it ran.")
    working_version: int
    decision: Literal["promoted", "refused", "unchanged"] = Field(
        description="unchanged: the working version holds the served version's lessons, word for word."
    )
    figures: ValidationFigures
    continued_from: int | None = Field(
        None, description="With keep=best, after a refusal: the version the working version was rolled back to."
    )


class EpochProgress(BaseModel):
    epoch: int
    attempts: int = 0
    correct: int = 0
    all_correct_groups: int = 0
    critiques: int = 0
    operations: int = 0
    rejected: int = 0
    conflicts: int = Field(
        0, description="Operations dropped because an earlier critique of the batch changed the lesson."
    )
    failures: list[StepFailure] = Field(default_factory=list, description="Critiques (and compressions) not made.")
    compressions: int = 0
    items: int = 0
    tokens: int = 0
    version: int = 0
    # The same records, with a loose schema: get_job's reply schema is loaded by every client with
    # tools/list, and the rounds' figures would add a tenth to it.
    validations: Annotated[list[ValidationRound], WithJsonSchema({"type": "array", "items": {"type": "object"}})] = (
        Field(default_factory=list, description="Promotions decided this epoch, with their figures.")
    )

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.attempts if self.attempts else None


class JobSummary(BaseModel):
    """A job in one line: what distill_batch, cancel_job and list_jobs reply (get_job has it all)."""

    id: str
    library: str
    state: JobState
    finished: bool
    resumable: bool = Field(description=RESUMABLE_HELP)
    problems_done: int
    problems_total: int = Field(description="Problems × epochs.")
    epoch: int = Field(description="0-based; equal to epochs_total once all are done.")
    epochs_total: int
    student: str
    teacher: str
    error: str | None
    cancel_requested: bool = Field(description="A cancel was asked for; the job's runner stops it shortly.")
    created_at: datetime
    updated_at: datetime


class Job(BaseModel):
    id: str
    kind: Literal["distill"] = "distill"
    state: JobState
    # A loose schema in replies: distill_batch's arguments describe these, and get_job's reply
    # schema is loaded with every tools/list.
    params: Annotated[DistillParams, WithJsonSchema({"type": "object"})]
    dataset: str = Field(description="Where the problems came from.")
    start_version: int = Field(description="The library's version when the job was created.")
    problems: int = Field(description="Problems in the dataset; each epoch goes through all of them.")
    problems_total: int = Field(description="Problems × epochs: what problems_done counts up to.")
    problems_done: int = Field(description="Problems finished, over all epochs.")
    epoch: int = Field(description="The epoch the next batch belongs to (0-based; `epochs` once all are done).")
    batch: int = Field(description="The next batch within that epoch (0-based).")
    epochs: list[EpochProgress]
    error: str | None
    cancel_requested: bool = Field(False, description="A cancel was asked for; the job's runner stops it shortly.")
    owner: str | None
    config: dict[str, str] = Field(
        default_factory=dict, description="Where each model was reached (model → endpoint) when the job last started."
    )
    created_at: datetime
    updated_at: datetime

    def summary(self) -> JobSummary:
        return JobSummary(
            id=self.id,
            library=self.params.library,
            state=self.state,
            finished=self.state in FINISHED,
            resumable=self.state in RESUMABLE,
            problems_done=self.problems_done,
            problems_total=self.problems_total,
            epoch=self.epoch,
            epochs_total=self.params.epochs,
            student=self.params.student,
            teacher=self.params.teacher,
            error=self.error,
            cancel_requested=self.cancel_requested,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class JobStatus(Job):
    """A job as `get_job` reports it: its record, what it has cost so far, its library now."""

    finished: bool
    resumable: bool = Field(description=RESUMABLE_HELP)
    library_version: int
    accuracy: float | None = Field(description="The latest epoch's rollout accuracy so far.")
    cost: CostSummary


def _now() -> datetime:
    return datetime.now(UTC)


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_gone(owner: str | None) -> bool:
    """True when the owner ran on this machine and its process no longer exists."""
    if owner is None:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _job(row) -> Job:
    params = DistillParams.model_validate_json(row["params"])
    return Job(
        id=row["id"],
        state=row["state"],
        params=params,
        dataset=row["dataset"],
        start_version=row["start_version"],
        # Stored per epoch; reported over all epochs, like problems_done.
        problems=row["problems_total"],
        problems_total=row["problems_total"] * params.epochs,
        problems_done=row["problems_done"],
        epoch=row["epoch"],
        batch=row["batch"],
        epochs=[EpochProgress.model_validate(e) for e in json.loads(row["stats"])],
        error=row["error"],
        cancel_requested=bool(row["cancel_requested"]),
        owner=row["owner"],
        config=json.loads(row["config"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def library_for(store: Store, name: str) -> LibraryState:
    """The library a job would run on, or how a new one would start, without creating it (an
    estimate changes nothing); `create` makes it."""
    try:
        return await store.library_state(name)
    except NotFound:
        return LibraryState(
            name=name,
            settings=LibrarySettings(),
            version=0,
            next_experience=1,
            teacher_model=None,
            student_model=None,
            experiences=[],
        )


def _check_priced(params: DistillParams) -> None:
    # A model without a price costs "unknown", which would never reach a cost cap: refuse the
    # cap up front rather than let it silently never stop the job.
    unpriced = unpriced_models((params.student, params.teacher))
    if params.max_cost_usd is not None and unpriced:
        raise InvalidInput(
            f"A cost cap needs a price for every model, and {' and '.join(unpriced)} has none: give it one "
            f'in a TED_PRICES file ({{"{unpriced[0]}": [input, output]}}, dollars per million tokens), '
            "or cap tokens instead (max_tokens / --max-tokens)."
        )


async def create(
    store: Store,
    params: DistillParams,
    problems: list[Problem],
    dataset: str,
    *,
    solutions: dict[str, str] | None = None,
    config: dict[str, str] | None = None,
    validation: list[Problem] | None = None,
) -> Job:
    """A queued job; `solutions` are the dataset's worked solutions by problem id (the teacher's
    reference), `config` where each model is reached, `validation` the problems held out to decide
    promotions. A job with a validation set makes its library serve promoted versions only (the
    version served when it starts stays served until one is promoted)."""
    if not problems:
        raise InvalidInput("The dataset has no problems; give at least one item with a question and an answer.")
    _check_priced(params)
    job_id = "job-" + uuid.uuid4().hex[:12]
    now = timestamp()
    await store.ensure_library(params.library)

    def write(db: sqlite3.Connection) -> None:
        if validation:
            serving.serve(db, params.library, "promoted", by=job_id)
        db.execute(
            "INSERT INTO jobs (id, kind, library, params, dataset, problems, solutions, config, validation,"
            " start_version, problems_total, state, created_at, updated_at) SELECT ?, 'distill', ?, ?, ?, ?, ?, ?,"
            " ?, version, ?, 'queued', ?, ? FROM libraries WHERE name = ?",
            (
                job_id,
                params.library,
                params.model_dump_json(),
                dataset,
                json.dumps([p.model_dump(mode="json") for p in problems]),
                json.dumps(solutions or {}),
                json.dumps(config or {}),
                json.dumps([p.model_dump(mode="json") for p in validation or []]),
                len(problems),
                now,
                now,
                params.library,
            ),
        )

    await store.write(write)
    return await get(store, job_id)


async def get(store: Store, job_id: str) -> Job:
    if (row := await _row(store, "SELECT * FROM jobs WHERE id = ?", job_id)) is None:
        raise NotFound(f"There is no job {job_id!r}. Job ids look like 'job-…'; distill_batch returns one.")
    return _job(row)


async def status(store: Store, ledger: Ledger, job_id: str) -> JobStatus:
    job = await get(store, job_id)
    prompt, _ = await store.whole_prompt(job.params.library, "working")  # the version the job changes
    return JobStatus(
        **job.model_dump(),
        finished=job.state in FINISHED,
        resumable=job.state in RESUMABLE,
        library_version=prompt.version,
        accuracy=job.epochs[-1].accuracy if job.epochs else None,
        cost=CostSummary.from_totals(await ledger.totals(job_id=job_id), (job.params.student, job.params.teacher)),
    )


async def validation_problems(store: Store, job_id: str) -> list[Problem]:
    """The problems a job holds out to decide promotions (none: it promotes nothing)."""
    row = await _row(store, "SELECT validation FROM jobs WHERE id = ?", job_id)
    return [Problem.model_validate(p) for p in json.loads(row["validation"])]


async def problems(store: Store, job_id: str) -> tuple[list[Problem], dict[str, str]]:
    """The job's problems, and the dataset's worked solutions by problem id."""
    row = await _row(store, "SELECT problems, solutions FROM jobs WHERE id = ?", job_id)
    return [Problem.model_validate(p) for p in json.loads(row["problems"])], json.loads(row["solutions"])


async def claim(store: Store, job_id: str, owner: str, *, reopen: bool = False) -> Job:
    """Take the job's lease, or raise InvalidInput saying who holds it or that it finished.

    A pending cancel survives the claim: a cancel_job that lands between distill_batch's reply
    and the runner's claim still stops the job (at its first check, before any call). Only
    `reopen` — the user asking to resume — clears it.
    """
    job = await get(store, job_id)
    if job.state == "done":
        raise InvalidInput(f"Job {job_id} is done; start a new job with distill_batch or `ted distill`.")
    now = _now()

    def write(db: sqlite3.Connection) -> None:
        row = db.execute("SELECT owner, lease_until FROM jobs WHERE id = ?", (job_id,)).fetchone()
        lapsed = row["lease_until"] is None or datetime.fromisoformat(row["lease_until"]) < now
        if row["owner"] not in (None, owner) and not (lapsed or _owner_gone(row["owner"])):
            raise InvalidInput(
                f"Job {job_id} is running in another process ({row['owner']}); follow it with get_job, "
                "or stop it with cancel_job."
            )
        db.execute(
            "UPDATE jobs SET owner = ?, lease_until = ?, state = 'running', error = NULL,"
            " cancel_requested = cancel_requested AND NOT ?, updated_at = ? WHERE id = ?",
            (owner, timestamp(now + LEASE), reopen, timestamp(now), job_id),
        )

    await store.write(write)
    return await get(store, job_id)


def endpoints(*models: Model) -> dict[str, str]:
    """Where each model is reached: its base URL, or "in-process" for a test double."""
    return {m.name: getattr(m, "base_url", None) or "in-process" for m in models}


async def record_config(store: Store, job_id: str, config: dict[str, str]) -> None:
    """Where the process running the job reaches its models: a later process must match it to take
    the job over by itself (`--resume-jobs`)."""
    await _update(store, "UPDATE jobs SET config = ? WHERE id = ?", json.dumps(config), job_id)


async def raise_caps(store: Store, job_id: str, *, max_cost_usd: float | None, max_tokens: int | None) -> Job:
    """New cost or token caps for a job about to be resumed (None keeps a cap as it is)."""
    job = await get(store, job_id)
    changes = {k: v for k, v in (("max_cost_usd", max_cost_usd), ("max_tokens", max_tokens)) if v is not None}
    try:
        params = DistillParams.model_validate({**job.params.model_dump(), **changes})
    except ValidationError as e:
        raise invalid_input(e, "Invalid cap") from None
    _check_priced(params)
    await _update(store, "UPDATE jobs SET params = ? WHERE id = ?", params.model_dump_json(), job_id)
    return await get(store, job_id)


async def reopen(store: Store, job_id: str, owner: str, *, max_cost_usd: float | None, max_tokens: int | None) -> Job:
    """Take a failed, cancelled, stopped or interrupted job back for `owner`, with new caps if given.

    Raises InvalidInput when it cannot be resumed (finished, or held by another live process);
    a refused cap puts the job back as it was, not "running" with nobody running it.
    """
    before = await get(store, job_id)
    await claim(store, job_id, owner, reopen=True)  # a cancelled job taken back runs again
    try:
        return await raise_caps(store, job_id, max_cost_usd=max_cost_usd, max_tokens=max_tokens)
    except TedError:
        await finish(store, job_id, before.state, before.error)
        raise


async def renew(store: Store, job_id: str, owner: str) -> bool:
    """Extend the lease; False when another process took the job over."""
    lease = timestamp(_now() + LEASE)
    return await _update(store, "UPDATE jobs SET lease_until = ? WHERE id = ? AND owner = ?", lease, job_id, owner) == 1


async def finish(store: Store, job_id: str, state: JobState, error: str | None = None) -> None:
    await _update(
        store,
        "UPDATE jobs SET state = ?, error = ?, owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?",
        state,
        error,
        timestamp(),
        job_id,
    )


async def request_cancel(store: Store, job_id: str) -> Job:
    job = await get(store, job_id)
    if job.state in FINISHED:
        return job
    await _update(
        store,
        # Nobody running it: cancelled at once.
        "UPDATE jobs SET cancel_requested = 1, state = CASE WHEN owner IS NULL THEN 'cancelled' ELSE state END,"
        " updated_at = ? WHERE id = ?",
        timestamp(),
        job_id,
    )
    return await get(store, job_id)


async def cancel_requested(store: Store, job_id: str) -> bool:
    return bool((await _row(store, "SELECT cancel_requested FROM jobs WHERE id = ?", job_id))[0])


def advance(
    db: sqlite3.Connection, job_id: str, *, epoch: int, batch: int, done: int, stats: list[EpochProgress]
) -> None:
    """Move the job's cursor past a batch; runs inside the batch's own transaction."""
    db.execute("UPDATE jobs SET epoch = ?, batch = ?, problems_done = ? WHERE id = ?", (epoch, batch, done, job_id))
    save_stats(db, job_id, stats)


def save_stats(db: sqlite3.Connection, job_id: str, stats: list[EpochProgress]) -> None:
    """The per-epoch figures, inside the transaction of the change they describe (a batch, a compression)."""
    db.execute(
        "UPDATE jobs SET stats = ?, updated_at = ? WHERE id = ?",
        (json.dumps([s.model_dump() for s in stats]), timestamp(), job_id),
    )


async def interrupted(store: Store) -> list[str]:
    """Jobs that should be running but whose runner is gone (crash, restart)."""
    rows = await _rows(
        store, "SELECT id, owner, lease_until FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at"
    )
    now = _now()
    return [
        r["id"]
        for r in rows
        if r["lease_until"] is None or datetime.fromisoformat(r["lease_until"]) < now or _owner_gone(r["owner"])
    ]


async def rollouts_done(store: Store, job_id: str) -> tuple[int, float | None]:
    """The job's rollouts recorded so far, and the accuracy of those of its latest epoch: the
    progress within a batch, which the job's own record shows only once the batch is applied."""
    done, latest, correct = await _row(
        store,
        "SELECT count(*), sum(epoch = latest), sum(epoch = latest AND correct = 1) FROM attempts,"
        " (SELECT max(epoch) AS latest FROM attempts WHERE job_id = ?) WHERE job_id = ?",
        job_id,
        job_id,
    )
    return done, (correct / latest if latest else None)


async def listed(store: Store, *, library: str | None = None, limit: int = 50) -> list[Job]:
    """The newest jobs first, of one library or of all."""
    where, args = ("WHERE library = ?", (library,)) if library is not None else ("", ())
    return [
        _job(r)
        for r in await _rows(store, f"SELECT * FROM jobs {where} ORDER BY created_at DESC LIMIT ?", *args, limit)
    ]


async def _row(store: Store, sql: str, *args: Any) -> sqlite3.Row | None:
    return await store.read(lambda db: db.execute(sql, args).fetchone())


async def _rows(store: Store, sql: str, *args: Any) -> list[sqlite3.Row]:
    return await store.read(lambda db: db.execute(sql, args).fetchall())


async def _update(store: Store, sql: str, *args: Any) -> int:
    """One statement as its own transaction; the rows it changed."""
    return await store.write(lambda db: db.execute(sql, args).rowcount)
