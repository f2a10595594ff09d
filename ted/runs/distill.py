"""The TED loop over a dataset, as a resumable job.

For each epoch, problems run in mini-batches of `concurrency`. Within a batch, every problem
goes through its steps concurrently: the student's `rollouts` attempts (in parallel), then,
unless every rollout was right, the teacher's solution (made without the ground truth, cached
per problem and teacher, and made again knowing the answer when it was wrong), the chains of
the attempts and the reference, and the teacher's diagnoses and proposed operations — all made
against the library as it stood when the batch began. The batch's operations are then validated
in problem order against the library as each problem leaves it: an operation on a lesson an
earlier problem of the batch already changed is a conflict, dropped and reported, and the first
change stands. If they would leave the library over budget its compression is planned (the
teacher called) before anything is written, and the batch, its compression, its critique
records and the job's cursor are written as ONE version: no version, and no epoch's figures,
ever see a library over budget. `concurrency=1` is the paper's strict sequential order. Each
problem's student sees what the library's working version serves that task (every lesson, or
those that fit it when the library chooses per task), and only those count as used.

A job with a validation set compares, after each epoch (or every `validation.every` batches),
the working version with the served one on held-out problems and promotes it only when the
student is not worse with it (`ted.runs.validation`); the decision is written with the job's
figures, and a job stopped between a batch and its round makes the round when it resumes.

One problem's unusable teacher reply (after its repair), or a teacher call that failed past the
SDK's retries, fails that problem's critique only: it is recorded (problem, step, error) in the
epoch's figures and the batch goes on. An unusable compression plan falls back to compression
by priority, recorded the same way. The job fails when `failure_share` of one batch's critiques
failed (by default all of them), or at once on a call no retry can fix (`ModelRefused`: the
key, the model name) and on a student call that failed: its batch is then not applied.

Resuming after a crash repeats no paid call: attempts are stored per (job, epoch, problem,
rollout), teacher solutions and chains are cached, and every call a job makes is keyed in the
ledger with its reply, which `Ledger.bind(..., key=…)` returns instead of calling again.
A batch is applied whole or not at all, so a crash, a cancel or a model failure never leaves
half of one in the library.
"""

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
from pydantic import BaseModel

from ted.citations import cited_ids
from ted.errors import Conflict, InvalidReply, ModelError, ModelRefused, TedError
from ted.ledger import Ledger, RecordedModel, Role
from ted.llm.base import Model
from ted.llm.capabilities import require_images
from ted.llm.registry import load_model
from ted.redaction import redact
from ted.runs import jobs
from ted.runs.datasets import Problem
from ted.runs.jobs import DistillParams, EpochProgress, Job, StepFailure, ValidationRound
from ted.runs.student import answer, read_tasks
from ted.runs.validation import Validation
from ted.store import Store
from ted.store.records import (
    MAX_ANSWER_CHARS,
    MAX_TRAJECTORY_CHARS,
    AttemptRecord,
    ExperiencePrompt,
    LibraryState,
    NewAttempt,
    Operation,
)
from ted.tasks import Task
from ted.teacher.compression import CompressionPlanned, Simulation, fallback, plan_compression, write_change
from ted.teacher.critique import chains_for, critique_reply, critique_sources, record_critique, solve, vet_critique
from ted.teacher.replies import CritiqueReply

Progress = Callable[[Job], Awaitable[None]]
Ending = tuple[jobs.JobState, str | None]
StopCheck = Callable[[], Awaitable[Ending | None]]
Stats = dict[int, EpochProgress]
POLL_SECONDS = 0.5
TRAJECTORY_CHARS_PER_TOKEN = 8


class Proposal(BaseModel):
    problem: Problem
    attempts: list[AttemptRecord]
    reply: CritiqueReply | None = None
    failure: StepFailure | None = None


class BatchFailed(ModelError):
    """Too many of one batch's critiques could not be made: the job fails, the batch unapplied."""


@dataclass
class Distillation:
    store: Store
    ledger: Ledger
    job: Job
    student: Model
    teacher: Model
    tasks: dict[str, Task]
    solutions: dict[str, str] = field(default_factory=dict)
    on_progress: Progress | None = None
    validation: Validation | None = None

    @property
    def params(self) -> DistillParams:
        return self.job.params

    def _bind(self, role: Role, problem: Problem | None, key: str | None) -> RecordedModel:
        """A model for one step, keyed so a resumed job replays its reply. A rollout's ledger row
        waits to be written with the attempt it makes, in one transaction, and its reply is kept
        once, as the attempt's trajectory (a resumed job skips recorded rollouts)."""
        student = role == "student"
        return self.ledger.bind(
            self.student if student else self.teacher,
            role,
            library=self.params.library,
            task_id=self.tasks[problem.id].id if problem else None,
            job_id=self.job.id,
            key=key,
            settings=self.params.student_settings if student else self.params.teacher_settings,
            defer=student,
        )

    async def run(self, problems: list[Problem], stop: StopCheck | None = None) -> Ending:
        """Run the job's remaining batches; returns how it ended: done, or the reason `stop` gave."""
        size = self.params.concurrency
        batches = [problems[i : i + size] for i in range(0, len(problems), size)]
        stats = {s.epoch: s for s in self.job.epochs}
        first_epoch, first_batch = self.job.epoch, self.job.batch
        if stop is not None and (ending := await stop()) is not None:
            return ending
        # A library over budget before the job began (its budget lowered since) is compressed first.
        await self._compress_alone(max(first_epoch - (first_batch == 0), 0), stats)
        # A job stopped between a batch and its validation validates first.
        await self._validate_if_due(first_epoch * len(batches) + first_batch, len(batches), stats)
        for epoch in range(first_epoch, self.params.epochs):
            for index in range(first_batch if epoch == first_epoch else 0, len(batches)):
                if stop is not None and (ending := await stop()) is not None:
                    return ending
                await self._batch(epoch, index, batches, stats)
                await self._validate_if_due(epoch * len(batches) + index + 1, len(batches), stats)
                if self.on_progress:
                    self.job = await jobs.get(self.store, self.job.id)
                    await self.on_progress(self.job)
        return "done", None

    async def _validate_if_due(self, done: int, per_epoch: int, stats: Stats) -> None:
        """Validate after `done` batches if a round is due then and was not made yet."""
        if self.validation is None or done == 0:
            return
        total = per_epoch * self.params.epochs
        if done % (self.params.validation.every or per_epoch) and done != total:
            return
        if any(v.batches_done == done for s in stats.values() for v in s.validations):
            return
        epoch = (done - 1) // per_epoch
        epoch_stats = stats.get(epoch, EpochProgress(epoch=epoch)).model_copy(deep=True)

        def save(db: sqlite3.Connection, made: ValidationRound, rolled_back: tuple[int, int, int] | None) -> None:
            epoch_stats.validations.append(made)
            if rolled_back is not None:  # the library the job goes on with: the served version's lessons
                epoch_stats.version, epoch_stats.items, epoch_stats.tokens = rolled_back
            jobs.save_stats(db, self.job.id, _listed(stats, epoch_stats))

        await self.validation.run(epoch, done, save)
        stats[epoch] = epoch_stats

    async def _batch(self, epoch: int, index: int, batches: list[list[Problem]], stats: Stats) -> None:
        state = await self.store.library_state(self.params.library)
        batch = batches[index]
        # What the working version serves each problem, read before any rollout counts a use.
        prompts = {
            p.id: await self.store.experience_prompt(self.params.library, state.version, p.question) for p in batch
        }
        proposals: list[Proposal | None] = [None] * len(batch)

        async def propose(i: int, problem: Problem) -> None:
            proposals[i] = await self._propose(epoch, problem, state, prompts[problem.id])

        async with anyio.create_task_group() as tg:
            for i, problem in enumerate(batch):
                tg.start_soon(propose, i, problem)
        # The cursor after this batch: the next one, or the first of the next epoch.
        cursor = (epoch, index + 1) if index + 1 < len(batches) else (epoch + 1, 0)
        done = epoch * sum(map(len, batches)) + sum(map(len, batches[: index + 1]))
        made = [p for p in proposals if p]
        self._check_failures(made, epoch, index)
        for tries_left in (2, 1, 0):
            try:
                return await self._apply(epoch, index, made, stats, cursor, done)
            except Conflict:
                # Another client changed the library while the batch ran (a paid-for batch is not
                # thrown away for that): validate its operations again, against the library now.
                if not tries_left:
                    raise

    async def _propose(self, epoch: int, problem: Problem, state: LibraryState, prompt: ExperiencePrompt) -> Proposal:
        attempts = await self._rollouts(epoch, problem, prompt)
        if all(a.correct for a in attempts) and not self.params.critique_all:
            return Proposal(problem=problem, attempts=attempts)
        task, tag = self.tasks[problem.id], f"e{epoch}/{problem.id}"
        step: Role = "teacher-solve"
        # The solve keys name the problem, not the epoch: a solution is made once per problem.
        first, again = f"{problem.id}/solve", f"{problem.id}/solve-again"
        try:
            async with self._unless_unusable(first, again):
                solution = await solve(
                    self.store,
                    self._bind(step, problem, first),
                    task,
                    problem.answer,
                    self.solutions.get(problem.id),
                    again=self._bind(step, problem, again),
                )
            step = "summarise"
            async with self._unless_unusable(key := f"{tag}/{step}"):
                chains, reference = await chains_for(
                    self.store, self._bind(step, problem, key), task, attempts, solution
                )
            step = "critique"
            async with self._unless_unusable(key := f"{tag}/{step}"):
                reply = await critique_reply(
                    self._bind(step, problem, key),
                    task,
                    solution.note(problem.answer),
                    reference,
                    attempts,
                    chains,
                    state,
                )
        except ModelRefused:
            raise
        except ModelError as e:  # this problem's critique fails; the batch goes on
            failure = StepFailure(problem_id=problem.id, step=step, error=str(e))
            return Proposal(problem=problem, attempts=attempts, failure=failure)
        return Proposal(problem=problem, attempts=attempts, reply=reply)

    async def _rollouts(self, epoch: int, problem: Problem, prompt: ExperiencePrompt) -> list[AttemptRecord]:
        stored = {a.rollout: a for a in await self.store.job_attempts(self.job.id, epoch, problem.id)}
        task = self.tasks[problem.id]
        shown = [item.id for item in prompt.items]

        async def attempt(rollout: int) -> None:
            model = self._bind("student", problem, f"e{epoch}/{problem.id}/r{rollout}")
            reply = await answer(model, task, problem.answer, prompt.prompt)
            attempt = NewAttempt(
                task_id=task.id,
                task=problem.question,
                images=list(problem.images),
                # A student's reply is bounded by its max_tokens; a misbehaving endpoint's is cut
                # here, so no job writes more than that per attempt.
                trajectory=reply.text[
                    : min(MAX_TRAJECTORY_CHARS, TRAJECTORY_CHARS_PER_TOKEN * self.params.student_settings.output_tokens)
                ],
                answer=reply.answer and reply.answer[:MAX_ANSWER_CHARS],
                ground_truth=problem.answer,
                correct=reply.grade.correct,
                graded_by=reply.grade.method,
                model=self.student.name,
                job_id=self.job.id,
                epoch=epoch,
                problem_id=problem.id,
                rollout=rollout,
            )
            cited = cited_ids(reply.text, ())
            ledger_row = self.ledger.writer(*model.deferred)
            await self.store.record_attempt(self.params.library, attempt, cited, shown, also=ledger_row)

        missing = [r for r in range(self.params.rollouts) if r not in stored]
        if missing:
            async with anyio.create_task_group() as tg:
                for rollout in missing:
                    tg.start_soon(attempt, rollout)
            stored = {a.rollout: a for a in await self.store.job_attempts(self.job.id, epoch, problem.id)}
        return [stored[r] for r in range(self.params.rollouts)]

    def _check_failures(self, proposals: list[Proposal], epoch: int, index: int) -> None:
        """Fail the job, before anything of the batch is written, once too many of its critiques failed."""
        critiqued = [p for p in proposals if p.reply is not None or p.failure is not None]
        failed = [p.failure for p in proposals if p.failure is not None]
        if not failed or len(failed) < self.params.failure_share * len(critiqued):
            return
        first = failed[0]
        raise BatchFailed(
            f"{len(failed)} of the {len(critiqued)} critiques of batch {index + 1} in epoch {epoch + 1} could not be "
            f"made (the job fails at a share of {self.params.failure_share:g}); the first, problem "
            f"{first.problem_id} at {first.step}: {first.error} The batch was not applied: resume the job once the "
            "teacher answers again (no paid call is repeated)."
        )

    async def _validate(
        self, epoch: int, state: LibraryState, proposals: list[Proposal], epoch_stats: EpochProgress
    ) -> tuple[Simulation, list[Operation], list[tuple[str, Proposal, list]]]:
        """The batch's operations, validated in problem order against the library as each earlier
        problem leaves it; the critiques to record; the epoch's figures updated."""
        simulation = Simulation(state)  # the library as each problem's operations leave it, new ids included
        operations: list[Operation] = []
        critiques: list[tuple[str, Proposal, list]] = []
        claimed: dict[str, str] = {}  # lesson id → the critique of this batch that changed it first
        for proposal in proposals:
            epoch_stats.attempts += len(proposal.attempts)
            epoch_stats.correct += sum(bool(a.correct) for a in proposal.attempts)
            epoch_stats.all_correct_groups += all(a.correct for a in proposal.attempts)
            if proposal.failure is not None:
                epoch_stats.failures.append(proposal.failure)
            if proposal.reply is None:
                continue
            task = self.tasks[proposal.problem.id]
            critique_id = f"{self.job.id[4:]}.{epoch}.{proposal.problem.id}"
            provenance = {
                "source": "distill",
                "job_id": self.job.id,
                "epoch": epoch,
                "critique_id": critique_id,
                "task_id": task.id,
                "attempt_ids": [a.id for a in proposal.attempts],
                "teacher": self.teacher.name,
            }
            sources = critique_sources(task.text, proposal.attempts, proposal.problem.answer)
            active = {item.id: item.text for item in simulation.items}
            ops, rejected = await vet_critique(
                self.store, self.params.library, proposal.reply, active, sources, provenance, claimed
            )
            for op in ops:
                operations.append(simulation.apply(op))
                if op.op in ("rewrite", "delete"):
                    claimed[op.id] = critique_id
            critiques.append((critique_id, proposal, rejected))
            epoch_stats.critiques += 1
            epoch_stats.operations += len(ops)
            epoch_stats.rejected += len(rejected)
            epoch_stats.conflicts += sum(r.conflict_with is not None for r in rejected)
        return simulation, operations, critiques

    async def _apply(
        self, epoch: int, index: int, proposals: list[Proposal], stats: Stats, cursor: tuple[int, int], done: int
    ) -> None:
        """Validate the batch's operations, plan the compression they make necessary, then write
        both as one version with the critique records and the job's cursor."""
        state = await self.store.library_state(self.params.library)
        epoch_stats = stats.get(epoch, EpochProgress(epoch=epoch)).model_copy(deep=True)
        simulation, operations, critiques = await self._validate(epoch, state, proposals, epoch_stats)
        # Planned before anything is written, so the batch and its compression are one version.
        after = simulation.result() if operations else state
        planned = await self._plan_compression(after, f"e{epoch}/b{index}/compress/v{state.version}", epoch_stats)
        self._library_figures(epoch_stats, state, simulation, operations, planned)

        def record(db: sqlite3.Connection, version: int | None) -> None:
            for critique_id, proposal, rejected in critiques:
                record_critique(
                    db,
                    self.params.library,
                    critique_id,
                    self.tasks[proposal.problem.id].id,
                    self.teacher.name,
                    [a.id for a in proposal.attempts],
                    version,
                    proposal.reply,
                    rejected,
                    job_id=self.job.id,
                )
            jobs.advance(
                db, self.job.id, epoch=cursor[0], batch=cursor[1], done=done, stats=_listed(stats, epoch_stats)
            )

        # Shielded: a cancel or a reached cap lands before the batch is written or after, never during.
        with anyio.CancelScope(shield=True):
            reason = f"{self.job.id}: epoch {epoch + 1}, batch {index + 1} ({len(critiques)} critiques)"
            await write_change(
                self.store, state, operations, planned, reason, record, over_budget_ok=self.params.compression == "none"
            )
            stats[epoch] = epoch_stats

    def _library_figures(
        self,
        epoch_stats: EpochProgress,
        state: LibraryState,
        simulation: Simulation,
        operations: list[Operation],
        planned: CompressionPlanned | None,
    ) -> None:
        """The library's size and version once the batch (and its compression) is written."""
        compressing = planned is not None and bool(planned.operations)
        if compressing:
            result = planned.result(dry_run=True)
            epoch_stats.items, epoch_stats.tokens = result.items_after, result.tokens_after
            epoch_stats.compressions += 1
        else:
            epoch_stats.items, epoch_stats.tokens = len(simulation.items), simulation.tokens
        epoch_stats.version = state.version + (bool(operations) or compressing)

    async def _plan_compression(
        self, state: LibraryState, key: str, epoch_stats: EpochProgress
    ) -> CompressionPlanned | None:
        """A compression of `state` (written or simulated) if it is over budget and the job compresses;
        by priority alone, with the failure recorded, when the teacher's plan cannot be had."""
        if self.params.compression == "none" or not Simulation(state).over_budget:
            return None
        # Keyed by batch and version: a resumed job compressing the same library reuses the reply.
        teacher = self._bind("compress", None, key) if self.params.compression == "teacher" else None
        try:
            async with self._unless_unusable(key):
                return await plan_compression(
                    state, strategy=self.params.compression, teacher=teacher, seed=self.params.seed, store=self.store
                )
        except ModelRefused:
            raise
        except ModelError as e:
            epoch_stats.failures.append(StepFailure(problem_id=None, step="compress", error=str(e)))
            return fallback(state, str(e))

    async def _compress_alone(self, epoch: int, stats: Stats) -> None:
        """Compress the library as it stands, if it is over budget; the figures go to `epoch`."""
        state = await self.store.library_state(self.params.library)
        epoch_stats = stats.get(epoch, EpochProgress(epoch=epoch)).model_copy(deep=True)
        planned = await self._plan_compression(state, f"compress/v{state.version}", epoch_stats)
        if planned is None or not planned.operations:
            return
        self._library_figures(epoch_stats, state, Simulation(state), [], planned)

        def record(db: sqlite3.Connection, version: int | None) -> None:
            jobs.save_stats(db, self.job.id, _listed(stats, epoch_stats))

        try:
            await write_change(self.store, state, [], planned, f"{self.job.id}: the library was over budget", record)
        except Conflict:
            return  # another client changed the library since it was read: the next batch compresses that
        stats[epoch] = epoch_stats

    @asynccontextmanager
    async def _unless_unusable(self, *keys: str) -> AsyncIterator[None]:
        """A step whose reply, if unusable even after its repair, is not replayed when the job resumes."""
        try:
            yield
        except InvalidReply:
            with anyio.CancelScope(shield=True):  # a sibling's failure may be cancelling this task
                for key in keys:
                    await self.ledger.forget(self.job.id, key)
            raise


def _listed(stats: Stats, changed: EpochProgress) -> list[EpochProgress]:
    return sorted({**stats, changed.epoch: changed}.values(), key=lambda s: s.epoch)


async def run_job(
    store: Store,
    ledger: Ledger,
    models: Callable[[str], Model],
    job_id: str,
    *,
    owner: str | None = None,
    on_progress: Progress | None = None,
) -> Job:
    """Run (or resume) a job to its end: done, failed, cancelled or stopped by a cap.

    Returns the finished job. Raises only for a job that cannot start (finished, or leased by
    another live process); everything that goes wrong while it runs is the job's `error`.
    """
    owner = owner or jobs.this_process()
    job = await jobs.claim(store, job_id, owner)
    await ledger.begin(job_id)
    problems, solutions = await jobs.problems(store, job_id)
    held = await jobs.validation_problems(store, job_id)
    ending: tuple[jobs.JobState, str | None] = ("done", None)
    try:
        student, teacher = [await load_model(models, name) for name in (job.params.student, job.params.teacher)]
        await jobs.record_config(store, job_id, jobs.endpoints(student, teacher))
        tasks = await anyio.to_thread.run_sync(read_tasks, problems)
        held_tasks = await anyio.to_thread.run_sync(read_tasks, held)
        if any(task.images for task in [*tasks.values(), *held_tasks.values()]):  # refused before any call
            for model in (student, teacher):
                require_images(model.name, f"job {job_id}'s dataset")
        validation = Validation(store, ledger, student, job, held, held_tasks) if held else None
        distillation = Distillation(store, ledger, job, student, teacher, tasks, solutions, on_progress, validation)
        await store.ensure_library(job.params.library)
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                # Lease, cancel and caps are checked here, off the work's path, so a cancel or a
                # reached cap interrupts a batch in flight; the unfinished batch is never applied.
                nonlocal ending
                ticks = 0
                while True:
                    await anyio.sleep(POLL_SECONDS)
                    ticks += 1
                    reason = await _stop_reason(store, ledger, job)
                    if reason is None and ticks % 20 == 0 and not await jobs.renew(store, job_id, owner):
                        reason = ("failed", "Another process took this job over.")
                    if reason is not None:
                        ending = reason
                        tg.cancel_scope.cancel()
                        return

            async def work() -> None:
                nonlocal ending
                # Checked between batches too, so a cap or cancel that is already due stops the job
                # before it starts another batch, without waiting for the watcher's next look.
                ending = await distillation.run(problems, stop=lambda: _stop_reason(store, ledger, job))
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            tg.start_soon(work)
    except Exception as e:  # a job records why it died rather than dying silently
        # A model failure reaches here wrapped in the task groups' ExceptionGroups; the job's
        # error is its own message (which says the fix), not "unhandled errors in a TaskGroup".
        if (error := _ted_error(e)) is None:
            await jobs.finish(store, job_id, "failed", f"{type(e).__name__}: {redact(str(e))}")
            raise
        ending = ("failed", str(error))
    await jobs.finish(store, job_id, *ending)
    return await jobs.get(store, job_id)


def _ted_error(e: BaseException) -> TedError | None:
    """The TedError behind `e` when every error it carries is one (the first of them), else None."""
    if isinstance(e, BaseExceptionGroup):
        matched, rest = e.split(TedError)
        if matched is None or rest is not None:
            return None
        while isinstance(matched, BaseExceptionGroup):
            matched = matched.exceptions[0]
        return matched
    return e if isinstance(e, TedError) else None


async def _stop_reason(store: Store, ledger: Ledger, job: Job) -> tuple[jobs.JobState, str] | None:
    if await jobs.cancel_requested(store, job.id):
        return ("cancelled", "Cancelled on request; the batch in flight was not applied.")
    params = job.params
    if params.max_cost_usd is None and params.max_tokens is None:
        return None
    totals = await ledger.totals(job_id=job.id)
    cost = sum(t.cost_usd or 0.0 for t in totals)
    tokens = sum(t.input_tokens + t.output_tokens for t in totals)
    if params.max_cost_usd is not None and cost >= params.max_cost_usd:
        return (
            "stopped",
            f"The cost cap of ${params.max_cost_usd:g} was reached (${cost:.4f}); resume with a higher cap.",
        )
    if params.max_tokens is not None and tokens >= params.max_tokens:
        return "stopped", f"The token cap of {params.max_tokens:,} was reached ({tokens:,}); resume with a higher cap."
    return None
