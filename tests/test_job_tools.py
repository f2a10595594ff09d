"""distill_batch, get_job, cancel_job and the ted://jobs/{id} resource through the SDK's in-memory
Client, in both protocol eras, with the classroom's student and teacher as the server's models
and a real SQLite file. A gate on the student keeps a job in flight until the test lets it go,
so nothing here depends on how fast anything runs."""

import json
import os
import socket
import sqlite3
import subprocess
import sys

import anyio
import pytest
from conftest import dump_database, installed_command
from mcp import Client, StdioServerParameters

from ted.runs import jobs
from ted.runs.datasets import dataset_from_items
from ted.runs.jobs import DistillParams
from ted.store import Store
from ted.testing import ModelServer
from ted.testing.classroom import Classroom, problems
from ted_server import build_server

pytestmark = pytest.mark.anyio

START = {
    "dataset": problems(6),
    "library": "arith",
    "student": "scripted:student",
    "teacher": "scripted:teacher",
    "epochs": 2,
    "rollouts": 2,
    "concurrency": 3,
}


@pytest.fixture(params=["auto", "legacy"])
def mode(request) -> str:
    return request.param


class Gate:
    """A `before` hook for the classroom: every student call waits until the gate is open."""

    def __init__(self):
        self.opened = anyio.Event()

    async def __call__(self, step: str, problem: int | None, text: str) -> None:
        if step == "student":
            await self.opened.wait()


def connect(db_path, mode: str = "auto", before=None) -> Client:
    return Client(build_server(db_path, models=Classroom().models(before)), mode=mode, raise_exceptions=False)


async def call(client: Client, name: str, args: dict, **kw) -> dict:
    result = await client.call_tool(name, args, **kw)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def error(client: Client, name: str, args: dict) -> str:
    result = await client.call_tool(name, args)
    assert result.is_error, result.structured_content
    return result.content[0].text


def job_rows(db_path) -> list[tuple]:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT id, state, owner FROM jobs").fetchall()


async def test_distill_batch_starts_a_job_that_get_job_follows_with_progress(db_path, mode):
    gate = Gate()
    async with connect(db_path, mode, gate) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["get_job"].annotations.read_only_hint and tools["cancel_job"].annotations.destructive_hint

        started = await call(client, "distill_batch", START)
        job, job_id = started["job"], started["job"]["id"]
        # It returned while the student is held at the gate: the job is only under way.
        assert started["started"] and job_id.startswith("job-")
        assert (job["state"] in ("queued", "running"), job["problems_done"], job["finished"]) == (True, 0, False)
        # Done and total count the same thing: problems over all epochs.
        assert (job["problems_total"], job["epochs_total"], job["library"], job["resumable"]) == (12, 2, "arith", False)
        assert started["estimate"]["student_calls"] == 6 * 2 * 2
        assert started["estimate"]["teacher_calls"] >= 6 + 2 * 6 * 2

        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))
            gate.opened.set()  # the first notification says get_job is waiting: let the job run

        done = await call(
            client, "get_job", {"job_id": job_id, "wait": True, "timeout": 60}, progress_callback=on_progress
        )
        assert (done["state"], done["finished"], done["error"], done["problems_done"]) == ("done", True, None, 12)
        assert (done["problems"], done["problems_total"], done["resumable"]) == (6, 12, False)
        assert done["library_version"] >= 1 and done["cost"]["calls"] > 6 * 2 * 2
        assert [e["attempts"] for e in done["epochs"]] == [12, 12]
        # The first notice says where the job stands at once: its runner may not have claimed it yet.
        assert progress[0][:2] == (0, 12) and progress[0][2] in (
            f"epoch 1/2, library v0, {s}" for s in ("queued", "running")
        )
        assert progress[-1][0] == 12 and progress[-1][2].endswith(", done") and "epoch 2/2" in progress[-1][2]
        assert [p[0] for p in progress] == sorted(p[0] for p in progress) and {p[1] for p in progress} == {12}

        # Waiting on a finished job returns at once, without notifications.
        notified = len(progress)
        again = await call(client, "get_job", {"job_id": job_id, "wait": True}, progress_callback=on_progress)
        assert again["state"] == "done" and len(progress) == notified
        resource = json.loads((await client.read_resource(f"ted://jobs/{job_id}")).contents[0].text)
        assert (resource["id"], resource["state"], resource["problems_done"]) == (job_id, "done", 12)
        experiences = await call(client, "get_experiences", {"library": "arith"})
        assert [i["text"].split(",")[0] for i in experiences["items"]] == ["For subtraction", "For multiplication"]


async def test_get_job_without_wait_and_a_timeout(db_path):
    gate = Gate()  # never opened: the job stays at its first batch
    async with connect(db_path, before=gate) as client:
        job_id = (await call(client, "distill_batch", START))["job"]["id"]
        now = await call(client, "get_job", {"job_id": job_id})
        assert (now["finished"], now["problems_done"], now["epochs"]) == (False, 0, [])
        waited = await call(client, "get_job", {"job_id": job_id, "wait": True, "timeout": 0.2})
        assert waited["state"] == "running" and waited["problems_done"] == 0
        cancelled = await call(client, "cancel_job", {"job_id": job_id})
        assert cancelled["state"] == "cancelled"


async def test_cancel_job_stops_a_job_in_flight(db_path, mode):
    gate = Gate()
    async with connect(db_path, mode, gate) as client:
        job_id = (await call(client, "distill_batch", START))["job"]["id"]
        cancelled = await call(client, "cancel_job", {"job_id": job_id})
        assert (cancelled["state"], cancelled["finished"], cancelled["problems_done"]) == ("cancelled", True, 0)
        assert "not applied" in cancelled["error"] and cancelled["resumable"]
        history = json.loads((await client.read_resource("ted://libraries/arith/history")).contents[0].text)
        assert [v["kind"] for v in history] == ["create"]  # the batch in flight left nothing
        # Cancelling again is harmless; a cancel is not final: the job resumes and finishes.
        assert (await call(client, "cancel_job", {"job_id": job_id}))["state"] == "cancelled"
        gate.opened.set()
        resumed = await call(client, "distill_batch", {"resume": job_id})
        assert resumed["started"] and resumed["job"]["id"] == job_id
        done = await call(client, "get_job", {"job_id": job_id, "wait": True, "timeout": 60})
        assert (done["state"], done["error"], done["cancel_requested"], done["problems_done"]) == (
            "done",
            None,
            False,
            12,
        )
        assert "is done; start a new job" in await error(client, "distill_batch", {"resume": job_id})


async def test_cancel_job_that_lands_before_the_runner_claims_the_job(db_path, monkeypatch):
    # The runner claims a job a moment after distill_batch replies; here the claim is held until
    # the cancel has been asked for, the order a busy machine can produce.
    asked, claim, request_cancel = anyio.Event(), jobs.claim, jobs.request_cancel

    async def late_claim(*args, **kw):
        await asked.wait()
        return await claim(*args, **kw)

    async def cancel_then_let_claim(*args):
        job = await request_cancel(*args)
        asked.set()
        return job

    monkeypatch.setattr(jobs, "claim", late_claim)
    monkeypatch.setattr(jobs, "request_cancel", cancel_then_let_claim)
    async with connect(db_path) as client:
        job_id = (await call(client, "distill_batch", START))["job"]["id"]
        cancelled = await call(client, "cancel_job", {"job_id": job_id})
        assert (cancelled["state"], cancelled["finished"], cancelled["problems_done"]) == ("cancelled", True, 0)
        assert (await call(client, "get_job", {"job_id": job_id}))["cost"]["calls"] == 0


async def test_estimate_only_starts_nothing(db_path, mode):
    async with connect(db_path, mode) as client:
        before = dump_database(db_path)
        reply = await call(client, "distill_batch", {**START, "estimate_only": True, "library": "fresh"})
        assert (reply["started"], reply["job"]) == (False, None)
        assert reply["estimate"]["problems"] == 6 and reply["estimate"]["student_calls"] == 24
        assert dump_database(db_path) == before  # not even the library was created


NO_DATASET = {k: v for k, v in START.items() if k != "dataset"}


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({**START, "dataset": "/nowhere/train.jsonl"}, "not a readable file in the data folders"),
        (
            {
                **START,
                "dataset": [{"id": "a", "question": "What is 1 + 1?", "answer": "2"}, {"id": "b", "question": "?"}],
            },
            "items[1]",
        ),
        ({**START, "dataset": []}, "no problems"),
        (NO_DATASET, "Give a dataset"),
        ({**START, "epochs": 0}, "epochs"),
        ({**START, "rollouts": 65}, "rollouts"),
        ({"resume": "job-nope"}, "There is no job 'job-nope'"),
        ({**START, "max_cost_usd": 1.0, "student": "local:qwen"}, "local:qwen has none"),
    ],
    ids=["missing file", "bad item", "empty", "no dataset", "epochs", "rollouts", "unknown job", "unpriced cap"],
)
async def test_bad_arguments_are_tool_errors_and_start_nothing(db_path, arguments, says):
    async with connect(db_path) as client:
        before = dump_database(db_path)
        assert says in await error(client, "distill_batch", arguments)
        assert dump_database(db_path) == before


async def test_unknown_jobs(db_path, mode):
    async with connect(db_path, mode) as client:
        for tool in ("get_job", "cancel_job"):
            assert "There is no job 'job-nope'" in await error(client, tool, {"job_id": "job-nope"})
        with pytest.raises(Exception, match="There is no job 'job-nope'"):
            await client.read_resource("ted://jobs/job-nope")
    assert job_rows(db_path) == []


async def test_a_missing_key_names_its_variable_and_creates_no_job(db_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # checked before any cached model is looked up
    async with Client(build_server(db_path), raise_exceptions=False) as client:  # the real provider registry
        before = dump_database(db_path)
        says = await error(client, "distill_batch", {**START, "student": "anthropic:claude-sonnet-4-5"})
        assert "ANTHROPIC_API_KEY" in says
        assert dump_database(db_path) == before and job_rows(db_path) == []


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped), so none by that number exists."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def interrupted_jobs(db_path) -> tuple[str, str, str]:
    """Three running jobs: one whose owner died, one leased by a live process elsewhere, and one
    whose owner died but that reached its models at another endpoint."""
    async with Store.open(db_path) as store:
        data = await dataset_from_items(problems(6))
        params = DistillParams(
            library="arith", student="scripted:student", teacher="scripted:teacher", epochs=1, rollouts=2, concurrency=3
        )
        here = {"scripted:student": "in-process", "scripted:teacher": "in-process"}
        orphan = await jobs.create(store, params, data.problems, "inline", config=here)
        await jobs.claim(store, orphan.id, f"{socket.gethostname()}:{dead_pid()}")  # lease still valid
        elsewhere = await jobs.create(store, params, data.problems, "inline", config=here)
        await jobs.claim(store, elsewhere.id, "another-host:4242")  # alive, as far as anyone here can tell
        moved = await jobs.create(
            store, params, data.problems, "inline", config={"scripted:student": "http://gpu:8000"}
        )
        await jobs.claim(store, moved.id, f"{socket.gethostname()}:{dead_pid()}")
    return orphan.id, elsewhere.id, moved.id


async def test_a_server_start_lists_interrupted_jobs_and_resumes_none(db_path, mode, capsys):
    orphan, elsewhere, moved = await interrupted_jobs(db_path)
    before = job_rows(db_path)
    async with connect(db_path, mode) as client:
        status = await call(client, "get_job", {"job_id": orphan})
        assert (status["state"], status["problems_done"]) == ("running", 0)
        await anyio.sleep(0.2)
    assert job_rows(db_path) == before  # nobody was claimed, nothing ran
    said = capsys.readouterr().err
    for job_id in (orphan, moved):
        assert f"job {job_id} (library arith, 0/6 problems) was interrupted; resume it with" in said
        assert f"`ted distill --resume {job_id}`" in said and "--resume-jobs" in said
    assert elsewhere not in said  # its runner is alive


async def test_resume_jobs_takes_over_what_this_process_can_run(db_path, mode, capsys):
    orphan, elsewhere, moved = await interrupted_jobs(db_path)
    server = build_server(db_path, models=Classroom().models(), resume_jobs=True)
    async with Client(server, mode=mode, raise_exceptions=False) as client:
        done = await call(client, "get_job", {"job_id": orphan, "wait": True, "timeout": 60})
        assert (done["state"], done["problems_done"], done["owner"]) == ("done", 6, None)
        other = await call(client, "get_job", {"job_id": elsewhere})
        assert (other["state"], other["owner"], other["problems_done"]) == ("running", "another-host:4242", 0)
        says = await error(client, "distill_batch", {"resume": elsewhere})
        assert "running in another process (another-host:4242)" in says
        # Cancelling a job another process runs asks that process to stop it.
        asked = await call(client, "cancel_job", {"job_id": elsewhere})
        assert (asked["state"], asked["cancel_requested"]) == ("running", True)
        # A job that reached its models elsewhere is left for a process configured like it…
        assert (await call(client, "get_job", {"job_id": moved}))["problems_done"] == 0
        said = capsys.readouterr().err
        assert f"resuming interrupted jobs {orphan}" in said
        assert f"job {moved} (library arith, 0/6 problems) was interrupted" in said and "http://gpu:8000" in said
        # …unless resumed on purpose, which records where this process reaches them.
        await call(client, "distill_batch", {"resume": moved})
        finished = await call(client, "get_job", {"job_id": moved, "wait": True, "timeout": 60})
        assert finished["state"] == "done" and finished["config"]["scripted:student"] == "in-process"


async def test_a_stopped_job_resumes_through_the_tool_with_a_higher_cap(db_path, mode):
    async with connect(db_path, mode) as client:
        job_id = (await call(client, "distill_batch", {**START, "max_tokens": 3000}))["job"]["id"]
        stopped = await call(client, "get_job", {"job_id": job_id, "wait": True, "timeout": 60})
        assert stopped["state"] == "stopped" and "token cap of 3,000" in stopped["error"]
        assert 0 < stopped["problems_done"] < 12

        resumed = await call(client, "distill_batch", {"resume": job_id, "max_tokens": 10**9})
        assert resumed["started"] and resumed["job"]["id"] == job_id
        done = await call(client, "get_job", {"job_id": job_id, "wait": True, "timeout": 60})
        assert done["params"]["max_tokens"] == 10**9
        assert (done["state"], done["error"], done["problems_done"]) == ("done", None, 12)
        assert "is done; start a new job" in await error(client, "distill_batch", {"resume": job_id})


@pytest.mark.slow
async def test_the_installed_server_resumes_an_interrupted_job_only_with_resume_jobs(db_path):
    async with ModelServer(Classroom().reply_to_request) as server:
        async with Store.open(db_path) as store:
            data = await dataset_from_items(problems(6))
            params = DistillParams(library="arith", student="local:student", teacher="local:teacher", epochs=1)
            where = {"local:student": server.openai_base_url, "local:teacher": server.openai_base_url}
            job = await jobs.create(store, params, data.problems, "inline", config=where)
            await jobs.claim(store, job.id, f"{socket.gethostname()}:{dead_pid()}")  # its process was killed
        env = {**os.environ, "TED_OPENAI_COMPATIBLE_BASE_URL": server.openai_base_url}

        def ted_mcp(*extra: str) -> Client:
            command = StdioServerParameters(
                command=installed_command("ted-mcp"), args=["--db", str(db_path), *extra], env=env
            )
            return Client(command)

        async with ted_mcp() as client:  # a desktop client opening, an inspector call
            status = await call(client, "get_job", {"job_id": job.id})
            await anyio.sleep(1)
            again = await call(client, "get_job", {"job_id": job.id})
        assert (status["state"], again["problems_done"], again["owner"]) == ("running", 0, status["owner"])
        assert server.requests == []  # nothing was paid for
        async with ted_mcp("--resume-jobs") as client:
            done = await call(client, "get_job", {"job_id": job.id, "wait": True, "timeout": 60})
        assert (done["state"], done["problems_done"]) == ("done", 6) and server.requests
