"""Distillation jobs inside the server: started in the lifespan's task group, followed by get_job.

A job outlives the tool call that started it (it runs in the server's task group, not the
request's), and its state is in SQLite, so `get_job` from any client — or from another
server process on the same database — sees the same progress. A client that chooses to wait
is sent MCP progress notifications as batches finish.
"""

import sys
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from ted import jobs
from ted.distill import run_job
from ted.errors import TedError
from ted.jobs import Job
from ted.ledger import Ledger
from ted.llm.base import Model
from ted.store import Store

# A job run by another process is only seen through the database; poll it this often.
POLL_SECONDS = 1.0


class JobRunner:
    def __init__(self, store: Store, ledger: Ledger, models: Callable[[str], Model], tg: TaskGroup):
        self.store, self.ledger, self.models, self._tg = store, ledger, models, tg
        self._running: set[str] = set()
        self._changed: dict[str, anyio.Event] = {}

    async def resume_interrupted(self) -> list[str]:
        """Pick up the jobs whose runner died (crash, restart); called at server start."""
        ids = await jobs.resumable(self.store)
        for job_id in ids:
            self.start(job_id)
        return ids

    def start(self, job_id: str) -> None:
        self._tg.start_soon(self._run, job_id)

    async def _run(self, job_id: str) -> None:
        self._running.add(job_id)
        try:
            await run_job(self.store, self.ledger, self.models, job_id, on_progress=self._notify)
        except TedError as e:  # leased elsewhere or already finished: nothing to do here
            print(f"ted-mcp: job {job_id} not run: {e}", file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 — the job records its error; the server keeps serving
            print(f"ted-mcp: job {job_id} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        finally:
            self._running.discard(job_id)
            await self._notify(None, job_id)

    async def _notify(self, job: Job | None, job_id: str | None = None) -> None:
        event = self._changed.pop(job_id or job.id, None)
        if event is not None:
            event.set()

    async def wait_for_change(self, job_id: str, timeout: float) -> None:
        """Return when the job (run here) reports progress or ends, or after `timeout`."""
        with anyio.move_on_after(timeout if job_id in self._running else min(timeout, POLL_SECONDS)):
            await self._changed.setdefault(job_id, anyio.Event()).wait()

    async def cancel(self, job_id: str) -> Job:
        await jobs.request_cancel(self.store, job_id)
        # The job's own watcher sees the flag within a poll and stops it cleanly; this process
        # waits for that so the reply reports the final state.
        with anyio.move_on_after(10):
            while job_id in self._running:
                await self.wait_for_change(job_id, 1.0)
        return await jobs.get(self.store, job_id)
