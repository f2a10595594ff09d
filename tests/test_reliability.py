"""No request stalls the others, and every failure says what it was: grading in worker processes
with a hard deadline and a worker kept for interactive calls, test doubles refused unless asked
for, bounded job writes, credentials redacted on their way to a client, a log or the ledger,
and a database that is private, verified, and refused before anything listens when it cannot
be served."""

import json
import os
import sqlite3
import stat
import subprocess
import time

import anyio
import pytest
from conftest import dump_database, free_port, installed_command
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from ted import grading
from ted.errors import ModelError, StoreError
from ted.grading import GradingPool
from ted.ledger import Ledger
from ted.llm import ModelSettings, get_model
from ted.llm.scripted import ScriptedModel
from ted.redaction import redact
from ted.runs import jobs
from ted.runs.datasets import dataset_from_items
from ted.runs.distill import TRAJECTORY_CHARS_PER_TOKEN, run_job
from ted.runs.jobs import DistillParams
from ted.store import Store
from ted.store.records import MAX_TRAJECTORY_CHARS, AddOp
from ted.testing import ModelServer, Reply
from ted_server import build_server

pytestmark = pytest.mark.anyio

SLOW_TRUTH, SLOW_ANSWER = "(x+1)^{500}", "(x+1)^{600}"  # seconds of sympy


async def call(client, name, args=None):
    result = await client.call_tool(name, args or {})
    assert not result.is_error, result.content[0].text
    return result.structured_content


# -- grading off the event loop ----------------------------------------------------------------


@pytest.mark.slow
async def test_a_slow_grading_does_not_stall_other_clients(db_path):
    async with Client(build_server(db_path)) as client:
        await call(client, "add_experience", {"library": "math", "text": "Expand only what the question needs."})
        await call(
            client, "record_attempt", {"library": "math", "task": "warm", "trajectory": "1", "ground_truth": "2"}
        )
        finished: dict[str, float] = {}
        latencies: list[float] = []

        async def slow() -> None:
            args = {"library": "math", "task": "Expand.", "trajectory": "t", "answer": SLOW_ANSWER}
            graded = await call(client, "record_attempt", {**args, "ground_truth": SLOW_TRUTH})
            assert (graded["correct"], graded["graded_by"]) == (False, "math")
            finished["slow"] = time.monotonic()

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            await anyio.sleep(0.3)
            while "slow" not in finished:
                started = time.monotonic()
                await call(client, "get_experiences", {"library": "math"})
                latencies.append(time.monotonic() - started)
                await anyio.sleep(0.05)
    # Reads kept being answered while the grading ran, each far quicker than the grading.
    assert len(latencies) >= 10 and max(latencies) < 1.0, latencies


def test_a_grading_past_the_hard_deadline_kills_its_worker_and_grades_wrong(monkeypatch):
    monkeypatch.setattr(grading, "HARD_TIMEOUT_SECONDS", 1)
    pool = GradingPool(1)
    started = time.monotonic()
    assert pool.check(SLOW_ANSWER, SLOW_TRUTH) is False
    assert time.monotonic() - started < 10  # not the seconds sympy would have taken
    assert pool.check("\\frac{1}{2}", "0.5") is True  # a fresh worker took its place


@pytest.mark.slow
async def test_jobs_leave_a_worker_free_for_interactive_gradings():
    pool = GradingPool(2)
    async with anyio.create_task_group() as tg:  # both workers up before the race
        tg.start_soon(pool.math_equal, "1", "1")
        tg.start_soon(pool.math_equal, "2", "2")
    done: list[str] = []

    async def job_grading(n: int) -> None:
        await pool.math_equal(SLOW_ANSWER, SLOW_TRUTH, interactive=False)
        done.append(f"job{n}")

    async with anyio.create_task_group() as tg:
        for n in range(2):
            tg.start_soon(job_grading, n)
        await anyio.sleep(0.5)
        assert await pool.math_equal("\\frac{1}{2}", "0.5") is True
        done.append("interactive")
    assert done[0] == "interactive", done


# -- test doubles --------------------------------------------------------------------------------


async def test_a_client_cannot_name_a_test_double_unless_the_server_runs_for_tests(db_path):
    items = [{"id": "p1", "question": "What is 2 + 2?", "answer": "4"}]
    args = {"dataset": items, "student": "scripted:student", "teacher": "scripted:teacher"}
    async with Client(build_server(db_path), raise_exceptions=False) as client:
        before = dump_database(db_path)
        refused = await client.call_tool("distill_batch", args)
        assert refused.is_error and "is a test double" in refused.content[0].text
        assert "--allow-test-models" in refused.content[0].text
        assert dump_database(db_path) == before
    async with Client(build_server(db_path, allow_test_models=True)) as client:
        started = await call(client, "distill_batch", {**args, "epochs": 1, "rollouts": 1})
        assert started["started"]


@pytest.mark.slow
@pytest.mark.parametrize("flag", [[], ["--allow-test-models"]])
async def test_the_installed_server_offers_test_doubles_only_when_started_for_tests(db_path, flag):
    args = {"dataset": [{"question": "1+1?", "answer": "2"}], "student": "scripted:s", "teacher": "scripted:t"}
    params = StdioServerParameters(command=installed_command("ted-mcp"), args=["--db", str(db_path), *flag])
    async with Client(params, raise_exceptions=False) as client:
        result = await client.call_tool("distill_batch", {**args, "estimate_only": False, "epochs": 1})
    if flag:
        assert not result.is_error and result.structured_content["started"]
    else:
        assert result.is_error and "is a test double" in result.content[0].text


# -- a job's writes ----------------------------------------------------------------------------


async def test_a_job_stores_no_more_of_an_answer_than_its_token_cap_allows(db_path):
    flood = "x" * 2_000_000 + "\nAnswer: 4"
    models = {"scripted:student": ScriptedModel(lambda m, s, o: flood, name="scripted:student")}
    async with Store.open(db_path) as store:
        data = await dataset_from_items([{"id": "p1", "question": "What is 2 + 2?", "answer": "4"}])
        params = DistillParams(
            library="lib", student="scripted:student", teacher="scripted:teacher", epochs=1, rollouts=2
        )
        job = await jobs.create(store, params, data.problems, "inline")
        finished = await run_job(store, Ledger(store), lambda name: models.get(name) or ScriptedModel(), job.id)
    assert finished.state == "done", finished.error
    with sqlite3.connect(db_path) as db:
        lengths = [n for (n,) in db.execute("SELECT length(trajectory) FROM attempts")]
    assert (
        lengths == [min(MAX_TRAJECTORY_CHARS, TRAJECTORY_CHARS_PER_TOKEN * params.student_settings.output_tokens)] * 2
    )


# -- credentials -----------------------------------------------------------------------------


def test_redaction_takes_out_keys_passwords_and_tokens(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-123456789")
    text = (
        "https://user:hunter2@api.example/v1?api_key=abc123&x=1 Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl "
        "Incorrect API key provided: sk-proj-abcdefghijklmnop, AKIAABCDEFGHIJKLMNOP, and tok-123456789"
    )
    cleaned = redact(text)
    for secret in ("hunter2", "abc123", "eyJhbGciOi", "sk-proj-abc", "AKIAABCDEFGHIJKLMNOP", "tok-123456789"):
        assert secret not in cleaned, secret
    assert "api.example/v1" in cleaned and "Incorrect API key provided" in cleaned


@pytest.mark.slow
async def test_credentials_in_a_base_url_or_a_provider_message_reach_no_client_log_or_ledger(db_path, tmp_path):
    key = "sk-live-" + "k3y" * 8
    echo = Reply(status=400, text=f"Bad request with key {key} at https://user:pw-secret@gateway.example/v1")
    async with ModelServer([echo, echo]) as server:
        base = server.openai_base_url.replace("http://", "http://alice:pw-secret@")
        env = {
            **os.environ,
            "TED_TEACHER": "local:teacher",
            "TED_OPENAI_COMPATIBLE_BASE_URL": base,
            "TED_OPENAI_COMPATIBLE_API_KEY": key,
            "TED_MODEL_MAX_RETRIES": "0",
        }
        params = StdioServerParameters(command=installed_command("ted-mcp"), args=["--db", str(db_path)], env=env)
        with (tmp_path / "stderr.txt").open("w+") as log:
            async with Client(stdio_client(params, errlog=log), raise_exceptions=False) as client:
                args = {"library": "m", "task": "t?", "trajectory": "x", "task_id": "t", "ground_truth": "1"}
                await call(client, "record_attempt", args)
                result = await client.call_tool("request_critique", {"library": "m", "task_id": "t"})
                assert result.is_error
                message = result.content[0].text
            log.seek(0)
            logged = log.read()
    assert "HTTP 400" in message and "[redacted]" in message
    with sqlite3.connect(db_path) as db:
        ledger = json.dumps(db.execute("SELECT * FROM model_calls").fetchall())
    for place in (message, logged, ledger):
        assert key not in place and "pw-secret" not in place


async def test_a_model_error_never_carries_a_key_the_provider_echoed(monkeypatch):
    key = "sk-ant-" + "z" * 30
    async with ModelServer([Reply(status=401, text=f"invalid x-api-key {key}")]) as server:
        settings = ModelSettings(api_key=key, base_url=server.anthropic_base_url, max_retries=0)
        model = get_model("anthropic:claude-x", settings)
        try:
            with pytest.raises(ModelError) as failed:
                await model.complete([])
        finally:
            await model.aclose()  # its connections belong to this test's event loop
    assert key not in str(failed.value) and "refused the API key" in str(failed.value)


# -- the database file -----------------------------------------------------------------------


async def test_the_database_and_its_journal_files_are_private(tmp_path):
    path = tmp_path / "new" / "ted.db"
    async with Store.open(path) as store:
        await store.apply("lib", [AddOp(text="Check units.")], "add", "seed")
        for suffix in ("", "-wal", "-shm"):
            assert stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode) == 0o600, suffix
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def corrupt(path) -> None:
    """Overwrite a page in the middle of the file, as a failing disk would."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = DELETE")
        db.execute("CREATE TABLE filler (x)")
        db.executemany("INSERT INTO filler VALUES (?)", [("y" * 500,)] * 200)
    with open(path, "r+b") as file:
        file.seek(4096 * 3)
        file.write(b"\xde\xad" * 2048)


async def test_a_damaged_database_is_refused_with_what_to_do(db_path):
    async with Store.open(db_path):
        pass
    corrupt(db_path)
    with pytest.raises(StoreError, match="is damaged .* Restore it from a backup"):
        async with Store.open(db_path, verify=True):
            pass


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["damaged", "newer"])
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_the_server_refuses_a_database_it_cannot_serve_before_anything_listens(db_path, problem, transport):
    async def create() -> None:
        async with Store.open(db_path):
            pass

    anyio.run(create)
    if problem == "damaged":
        corrupt(db_path)
    else:
        with sqlite3.connect(db_path) as db:
            db.execute("INSERT INTO migrations VALUES (99, 'future', 'now')")
    port = free_port()
    args = ["--db", str(db_path)] + (["--transport", "http", "--port", str(port)] if transport == "http" else [])
    run = subprocess.run([installed_command("ted-mcp"), *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert ("is damaged" if problem == "damaged" else "newer ted-mcp") in run.stderr
    assert "serving" not in run.stderr and "experience store at" not in run.stderr


async def test_a_full_disk_is_a_clear_error_and_changes_nothing(db_path):
    async with Store.open(db_path) as store:
        await store.apply("lib", [AddOp(text="Check units.")], "add", "seed")
        before = dump_database(db_path)
        # The writer's connection may grow the file by no page more.
        await store.write(
            lambda db: db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        )
        with pytest.raises(StoreError, match="could not be written .*full.*nothing was changed"):
            await store.apply("lib", [AddOp(text=f"Lesson {n} " + "pad " * 150) for n in range(40)], "add", "fill")
    assert dump_database(db_path) == before
