"""Distillation jobs inside the server: started in the lifespan's task group, followed by get_job.

A job outlives the tool call that started it (it runs in the server's task group, not the
request's), and its state is in SQLite, so `get_job` from any client — or from another
server process on the same database — sees the same progress. A client that chooses to wait
is sent MCP progress notifications as batches finish.

A server start never resumes an interrupted job by itself: every client that opens the
database (a desktop app, a one-off inspector call) starts a server, and a paid job must not
restart behind the user's back, nor fail in a process without its key. Interrupted jobs are
listed with the command that resumes them; `ted-mcp --resume-jobs` takes them over, each only
if this process reaches its models at the endpoints the job recorded.
"""

import sys
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from ted.errors import InvalidInput, TedError
from ted.ledger import Ledger
from ted.llm.base import Model
from ted.llm.registry import load_model
from ted.redaction import redact
from ted.runs import jobs
from ted.runs.distill import run_job
from ted.runs.jobs import Job
from ted.store import Store

# A job run by another process is only seen through the database; poll it this often.
POLL_SECONDS = 1.0


class JobRunner:
    def __init__(self, store: Store, ledger: Ledger, models: Callable[[str], Model], tg: TaskGroup):
        self.store, self.ledger, self.models, self._tg = store, ledger, models, tg
        self._running: set[str] = set()
        self._changed: dict[str, anyio.Event] = {}
        # Bumped on every change a job run here reports; a waiter that read the counter before
        # reading the job's state cannot miss a change that lands between the two.
        self._generations: dict[str, int] = {}

    async def interrupted(self, *, resume: bool) -> list[str]:
        """At server start: the jobs whose runner died (crash, restart), each said on stderr with how
        to resume it; with `resume`, those this process is configured to run are started here."""
        started = []
        for job_id in await jobs.interrupted(self.store):
            job = await jobs.get(self.store, job_id)
            why = await self._cannot_run(job) if resume else None
            if resume and why is None:
                self.start(job_id)
                started.append(job_id)
                continue
            how = (
                f"`ted distill --resume {job_id}`, distill_batch(resume={job_id!r}), or ted-mcp --resume-jobs"
                if why is None
                else f"`ted distill --resume {job_id}` where its models are reached (not here: {why})"
            )
            _say(
                f"job {job_id} (library {job.params.library}, {job.problems_done}/"
                f"{job.problems_total * job.params.epochs} problems) was interrupted; resume it with {how}"
            )
        return started

    async def _cannot_run(self, job: Job) -> str | None:
        """Why this process should not take `job` over by itself, or None."""
        try:
            models = [await load_model(self.models, name) for name in (job.params.student, job.params.teacher)]
            here = jobs.endpoints(*models)
        except TedError as e:
            return str(e)
        if job.config and here != job.config:
            return f"the job reached them at {job.config}, this process at {here}"
        return None

    def start(self, job_id: str) -> None:
        self._running.add(job_id)  # at once: a cancel_job right after distill_batch must wait for it
        self._tg.start_soon(self._run, job_id)

    async def resume(self, job_id: str, *, max_cost_usd: float | None, max_tokens: int | None) -> Job:
        """Resume a failed, stopped or interrupted job here, with new caps if given.

        Raises InvalidInput when it cannot be resumed: finished, or running here or in another
        live process.
        """
        if job_id in self._running:
            raise InvalidInput(f"Job {job_id} is already running in this server; follow it with get_job.")
        job = await jobs.reopen(
            self.store, job_id, jobs.this_process(), max_cost_usd=max_cost_usd, max_tokens=max_tokens
        )  # says who holds it, if anyone
        self.start(job_id)
        return job

    async def _run(self, job_id: str) -> None:
        try:
            await run_job(self.store, self.ledger, self.models, job_id, on_progress=self._notify)
        except TedError as e:  # leased elsewhere or already finished: nothing to do here
            _say(f"job {job_id} not run: {e}")
        except Exception as e:  # noqa: BLE001 — the job records its error; the server keeps serving
            _say(f"job {job_id} failed: {type(e).__name__}: {redact(str(e))}")
        finally:
            self._running.discard(job_id)
            await self._notify(None, job_id)

    async def _notify(self, job: Job | None, job_id: str | None = None) -> None:
        job_id = job_id or job.id
        self._generations[job_id] = self._generations.get(job_id, 0) + 1
        if (event := self._changed.pop(job_id, None)) is not None:
            event.set()

    def generation(self, job_id: str) -> int:
        """How many changes the job has reported here; pass it to `wait_for_change`."""
        return self._generations.get(job_id, 0)

    async def wait_for_change(self, job_id: str, since: int, timeout: float) -> None:
        """Return once the job (run here) has reported a change after `since`, or after `timeout`;
        a job run by another process is polled."""
        with anyio.move_on_after(timeout if job_id in self._running else min(timeout, POLL_SECONDS)):
            while self.generation(job_id) == since:
                await self._changed.setdefault(job_id, anyio.Event()).wait()

    async def cancel(self, job_id: str) -> Job:
        await jobs.request_cancel(self.store, job_id)
        # The job's own watcher sees the flag within a poll and stops it cleanly; this process
        # waits for that so the reply reports the final state.
        with anyio.move_on_after(10):
            while job_id in self._running:
                await self.wait_for_change(job_id, self.generation(job_id), 1.0)
        return await jobs.get(self.store, job_id)


def _say(message: str) -> None:
    print(f"ted-mcp: {message}", file=sys.stderr, flush=True)
