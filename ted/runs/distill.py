"""The TED loop over a dataset, as a resumable job.

For each epoch, problems run in mini-batches of `concurrency`. Within a batch, every problem
goes through its steps concurrently: the student's `rollouts` attempts (in parallel), then,
unless every rollout was right, the teacher's solution (cached per problem and teacher),
the chains of the attempts, and the teacher's proposed operations — all made against the
library as it stood when the batch began. The batch's operations are then validated in
problem order against the library as it is now, as each problem leaves it (an operation on a
lesson an earlier problem of the batch deleted is dropped and reported); if they would leave
it over budget its compression is planned (the teacher called) before anything is written.
The batch is then written as ONE version together with its critique records and the job's
cursor, and the compression right after as its own version, so the next batch (and the
epoch's figures) always see a library within budget. `concurrency=1` is the paper's strict
sequential order.

Resuming after a crash repeats no paid call: attempts are stored per (job, epoch, problem,
rollout), teacher solutions and chains are cached, and every call a job makes is keyed in the
ledger with its reply, which `Ledger.bind(..., key=…)` returns instead of calling again.
A batch is applied whole or not at all, so a crash, a cancel or a model failure never leaves
half of one in the library.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from pydantic import BaseModel

from ted.citations import cited_ids
from ted.errors import Conflict, InvalidReply, TedError
from ted.ledger import Ledger
from ted.llm.base import Model
from ted.prompts import experience_prompt
from ted.runs import jobs
from ted.runs.datasets import Problem
from ted.runs.jobs import DistillParams, EpochProgress, Job
from ted.runs.student import answer
from ted.store import Store
from ted.store.records import AttemptRecord, LibraryState, NewAttempt, Operation
from ted.tasks import task_id_for
from ted.teacher.compression import CompressionPlanned, Simulation, plan_compression
from ted.teacher.critique import chains_for, critique_reply, record_critique, solve, validate_critique
from ted.teacher.replies import CritiqueReply

Progress = Callable[[Job], Awaitable[None]]
Ending = tuple[jobs.JobState, str | None]
StopCheck = Callable[[], Awaitable[Ending | None]]
Stats = dict[int, EpochProgress]
POLL_SECONDS = 0.5


class Proposal(BaseModel):
    problem: Problem
    attempts: list[AttemptRecord]
    reply: CritiqueReply | None = None


@dataclass
class Distillation:
    store: Store
    ledger: Ledger
    job: Job
    student: Model
    teacher: Model
    on_progress: Progress | None = None

    @property
    def params(self) -> DistillParams:
        return self.job.params

    def _bind(self, model: Model, role, problem: Problem | None, key: str):
        task_id = task_id_for(problem.question) if problem else None
        return self.ledger.bind(model, role, library=self.params.library, task_id=task_id, job_id=self.job.id, key=key)

    async def run(self, problems: list[Problem], stop: StopCheck | None = None) -> Ending:
        """Run the job's remaining batches; returns how it ended: done, or the reason `stop` gave."""
        size = self.params.concurrency
        batches = [problems[i : i + size] for i in range(0, len(problems), size)]
        stats = {s.epoch: s for s in self.job.epochs}
        first_epoch, first_batch = self.job.epoch, self.job.batch
        if stop is not None and (ending := await stop()) is not None:
            return ending
        # A batch is compressed as it is applied; this catches a library that a crash left between
        # those two writes, or one over budget before the job began.
        await self._compress_alone(max(first_epoch - (first_batch == 0), 0), stats)
        for epoch in range(first_epoch, self.params.epochs):
            for index in range(first_batch if epoch == first_epoch else 0, len(batches)):
                if stop is not None and (ending := await stop()) is not None:
                    return ending
                await self._batch(epoch, index, batches, stats)
                if self.on_progress:
                    self.job = await jobs.get(self.store, self.job.id)
                    await self.on_progress(self.job)
        await self._compress_alone(self.params.epochs - 1, stats)  # only if a compression lost a race
        return "done", None

    async def _batch(self, epoch: int, index: int, batches: list[list[Problem]], stats: Stats) -> None:
        state = await self.store.library_state(self.params.library)
        prompt = experience_prompt((e.id, e.text) for e in state.experiences)
        batch = batches[index]
        proposals: list[Proposal | None] = [None] * len(batch)

        async def propose(i: int, problem: Problem) -> None:
            proposals[i] = await self._propose(epoch, problem, state, prompt)

        async with anyio.create_task_group() as tg:
            for i, problem in enumerate(batch):
                tg.start_soon(propose, i, problem)
        # The cursor after this batch: the next one, or the first of the next epoch.
        cursor = (epoch, index + 1) if index + 1 < len(batches) else (epoch + 1, 0)
        done = epoch * sum(map(len, batches)) + sum(map(len, batches[: index + 1]))
        for tries_left in (2, 1, 0):
            try:
                return await self._apply(epoch, index, [p for p in proposals if p], stats, cursor, done)
            except Conflict:
                # Another client changed the library while the batch ran (a paid-for batch is not
                # thrown away for that): validate its operations again, against the library now.
                if not tries_left:
                    raise

    async def _propose(self, epoch: int, problem: Problem, state: LibraryState, prompt: str) -> Proposal:
        attempts = await self._rollouts(epoch, problem, prompt)
        if all(a.correct for a in attempts) and not self.params.critique_all:
            return Proposal(problem=problem, attempts=attempts)
        tag = f"e{epoch}/{problem.id}"
        solution = await solve(
            # The key names the problem: replies are looked up by (job, key) alone, so a bare "solve"
            # would hand the first problem's solution to every later one.
            self.store,
            self._bind(self.teacher, "teacher-solve", problem, f"{problem.id}/solve"),
            problem.question,
            problem.answer,
        )
        async with self._unless_unusable(f"{tag}/summarise"):
            chains, teacher_chain = await chains_for(
                self.store,
                self._bind(self.teacher, "summarise", problem, f"{tag}/summarise"),
                problem.question,
                attempts,
                solution,
            )
        async with self._unless_unusable(f"{tag}/critique"):
            reply = await critique_reply(
                self._bind(self.teacher, "critique", problem, f"{tag}/critique"),
                problem.question,
                problem.answer,
                teacher_chain,
                attempts,
                chains,
                state,
            )
        return Proposal(problem=problem, attempts=attempts, reply=reply)

    async def _rollouts(self, epoch: int, problem: Problem, prompt: str) -> list[AttemptRecord]:
        stored = {a.rollout: a for a in await self.store.job_attempts(self.job.id, epoch, problem.id)}

        async def attempt(rollout: int) -> None:
            model = self._bind(self.student, "student", problem, f"e{epoch}/{problem.id}/r{rollout}")
            reply = await answer(model, problem, prompt, max_tokens=self.params.student_max_tokens)
            attempt = NewAttempt(
                task_id=task_id_for(problem.question),
                task=problem.question,
                images=list(problem.images),
                trajectory=reply.text,
                answer=reply.answer,
                ground_truth=problem.answer,
                correct=reply.grade.correct,
                graded_by=reply.grade.method,
                model=self.student.name,
                job_id=self.job.id,
                epoch=epoch,
                problem_id=problem.id,
                rollout=rollout,
            )
            await self.store.record_attempt(self.params.library, attempt, cited_ids(reply.text, ()))

        missing = [r for r in range(self.params.rollouts) if r not in stored]
        if missing:
            async with anyio.create_task_group() as tg:
                for rollout in missing:
                    tg.start_soon(attempt, rollout)
            stored = {a.rollout: a for a in await self.store.job_attempts(self.job.id, epoch, problem.id)}
        return [stored[r] for r in range(self.params.rollouts)]

    async def _apply(
        self, epoch: int, index: int, proposals: list[Proposal], stats: Stats, cursor: tuple[int, int], done: int
    ) -> None:
        """Validate the batch's operations in problem order against the library as it is now, plan
        its compression if that leaves it over budget, then write both."""
        state = await self.store.library_state(self.params.library)
        simulation = Simulation(state)  # the library as each problem's operations leave it, new ids included
        epoch_stats = stats.get(epoch, EpochProgress(epoch=epoch)).model_copy()
        operations: list[Operation] = []
        critiques: list[tuple[str, Proposal, list]] = []
        for proposal in proposals:
            epoch_stats.attempts += len(proposal.attempts)
            epoch_stats.correct += sum(bool(a.correct) for a in proposal.attempts)
            epoch_stats.all_correct_groups += all(a.correct for a in proposal.attempts)
            if proposal.reply is None:
                continue
            critique_id = f"{self.job.id[4:]}.{epoch}.{proposal.problem.id}"
            attempt_ids = [a.id for a in proposal.attempts]
            provenance = {
                "source": "distill",
                "job_id": self.job.id,
                "epoch": epoch,
                "critique_id": critique_id,
                "task_id": task_id_for(proposal.problem.question),
                "attempt_ids": attempt_ids,
                "teacher": self.teacher.name,
            }
            sources = [proposal.problem.question, *(a.trajectory for a in proposal.attempts)]
            active = {item.id: item.text for item in simulation.items}  # what earlier problems left
            ops, rejected = validate_critique(proposal.reply, active, sources, provenance)
            for op in ops:
                simulation.apply(op)
            operations += ops
            critiques.append((critique_id, proposal, rejected))
            epoch_stats.critiques += 1
            epoch_stats.operations += len(ops)
            epoch_stats.rejected += len(rejected)
        after = simulation.result() if operations else state
        epoch_stats.items, epoch_stats.tokens = len(simulation.items), simulation.tokens
        epoch_stats.version = after.version
        # Planned before anything is written, so the batch and its compression are written together.
        planned = await self._plan_compression(after, f"e{epoch}/b{index}/compress/v{state.version}")

        async def record(db, version: int | None) -> None:
            for critique_id, proposal, rejected in critiques:
                await record_critique(
                    db,
                    self.params.library,
                    critique_id,
                    task_id_for(proposal.problem.question),
                    self.teacher.name,
                    [a.id for a in proposal.attempts],
                    version,
                    proposal.reply,
                    rejected,
                    job_id=self.job.id,
                )
            await jobs.advance(
                db, self.job.id, epoch=cursor[0], batch=cursor[1], done=done, stats=_listed(stats, epoch_stats)
            )

        # Shielded: a cancel or a reached cap lands before the batch or after its compression,
        # never in between (the writes take milliseconds).
        with anyio.CancelScope(shield=True):
            if operations:
                reason = f"{self.job.id}: epoch {epoch + 1}, batch {index + 1} ({len(critiques)} critiques)"
                await self.store.apply(
                    self.params.library, operations, "critique", reason, expected_version=state.version, also=record
                )
            else:
                async with self.store.transaction() as db:
                    await record(db, None)
            stats[epoch] = epoch_stats
            if planned is not None:
                await self._write_compression(planned, epoch, stats)

    async def _plan_compression(self, state: LibraryState, key: str) -> CompressionPlanned | None:
        """A compression of `state` (written or simulated) if it is over budget and the job compresses."""
        if self.params.compression == "none" or not Simulation(state).over_budget:
            return None
        # Keyed by batch and version: a resumed job compressing the same library reuses the reply.
        teacher = self._bind(self.teacher, "compress", None, key) if self.params.compression == "teacher" else None
        async with self._unless_unusable(key):
            return await plan_compression(
                state, strategy=self.params.compression, teacher=teacher, seed=self.params.seed
            )

    async def _write_compression(self, planned: CompressionPlanned, epoch: int, stats: Stats) -> None:
        """Apply a compression as its own version (so it can be rolled back), with the epoch's new size."""
        if not planned.operations:
            return
        result = planned.result(dry_run=False)
        epoch_stats = stats.get(epoch, EpochProgress(epoch=epoch)).model_copy()
        epoch_stats.compressions += 1
        epoch_stats.items, epoch_stats.tokens = result.items_after, result.tokens_after
        epoch_stats.version = planned.state.version + 1

        async def record(db, version: int) -> None:
            await jobs.save_stats(db, self.job.id, _listed(stats, epoch_stats))

        try:
            await planned.apply(self.store, also=record)
        except Conflict:
            return  # another client changed the library since it was read: the next check compresses that
        stats[epoch] = epoch_stats

    async def _compress_alone(self, epoch: int, stats: Stats) -> None:
        """Compress the library as it stands, if it is over budget; the stats go to `epoch`."""
        state = await self.store.library_state(self.params.library)
        if (planned := await self._plan_compression(state, f"compress/v{state.version}")) is not None:
            await self._write_compression(planned, epoch, stats)

    @asynccontextmanager
    async def _unless_unusable(self, key: str) -> AsyncIterator[None]:
        """A step whose reply, if unusable even after its repair, is not replayed when the job resumes."""
        try:
            yield
        except InvalidReply:
            with anyio.CancelScope(shield=True):  # a sibling's failure may be cancelling this task
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
    problems = await jobs.problems(store, job_id)
    ending: tuple[jobs.JobState, str | None] = ("done", None)
    try:
        distillation = Distillation(
            store, ledger, job, models(job.params.student), models(job.params.teacher), on_progress
        )
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
            await jobs.finish(store, job_id, "failed", f"{type(e).__name__}: {e}")
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
