"""A distillation killed, faulted and resumed ends exactly where an uninterrupted one does.

Everything real: the installed `ted` command in a subprocess (SIGKILLed mid-batch), the
OpenAI SDK over HTTP to the local model server, SQLite files read back with `sqlite3`. The
classroom's replies are pure functions of the request, so two runs of the same job agree on
every lesson, version, attempt and paid call, and a difference is a bug. The classroom library
is capped at one lesson so that every batch is followed by a compression: the subtraction
lesson is added by a critique and compressed away again, which exercises both kinds of
version, and both kinds of replayed call, in every batch.

`ted distill --resume` refusing a job another live process runs, and a finished one, is checked
inside the kill test: the live process is the one about to be killed, the finished job the
resumed one.
"""

import json
import os
import re
import signal
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from conftest import installed_command

from ted import cli
from ted.llm import ModelSettings
from ted.testing import ModelServer
from ted.testing.classroom import Classroom, problems, step_of
from ted.testing.model_server import RecordedRequest, Reply

pytestmark = pytest.mark.anyio

PROBLEMS = problems(12)
QUESTION = {p["id"]: p["question"] for p in PROBLEMS}
INDEX = {p["id"]: i for i, p in enumerate(PROBLEMS)}
# 12 problems in batches of 4 → 3 batches per epoch, 6 in all.
RUN = [
    "--library",
    "arith",
    "--student",
    "local:student",
    "--teacher",
    "local:teacher",
    "--epochs",
    "2",
    "--rollouts",
    "3",
    "--concurrency",
    "4",
]
_QUESTION = re.compile(r"What is \d+ [-+*] \d+\?")


def write_dataset(directory: Path) -> Path:
    path = directory / "arith.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


def kind(request: RecordedRequest) -> tuple[str, str | None]:
    """What a request asks for: the step (by its reply schema), and the problem it is about (None
    for a compression)."""
    name = step_of(request.output)
    question = _QUESTION.search(request.prompt) if name != "compress" else None
    return name, question.group(0) if question else None


def read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


@dataclass(frozen=True)
class Outcome:
    """A finished job's state, with what differs between two databases (job ids, row ids) left out."""

    lessons: list[tuple]  # (id, text, usage, helpful, harmful, state), in library order
    versions: list[tuple]  # (version, kind, reason without the job id, operations as (op, id, text))
    critiques: list[tuple]  # (epoch, problem, the version it made or None)
    attempts: list[tuple]  # (epoch, problem, rollout, answer, correct, cited, counted)
    solutions: list[tuple]  # the teacher's cached solutions: (task, solution, has a chain)
    calls: dict[str, int]  # successful ledger rows per role
    student_tokens: tuple[int, int]  # student prompts carry no row ids, so their usage is exact too
    job: tuple  # (state, problems_done, epoch, batch, error, stats)


def outcome(db: Path) -> Outcome:
    with read_only(db) as c:
        (job_id,) = c.execute("SELECT id FROM jobs").fetchone()
        versions = []
        for version, kind_, reason, operations in c.execute(
            "SELECT version, kind, reason, operations FROM library_versions ORDER BY version"
        ):
            ops = [(o["op"], o.get("id"), o.get("text")) for o in json.loads(operations)]
            versions.append((version, kind_, reason.replace(job_id, "JOB"), ops))
        critiques = sorted(
            (*cid.split(".")[1:], version)
            for cid, version in c.execute("SELECT id, version FROM critiques WHERE job_id = ?", (job_id,))
        )  # the id is "<job>.<epoch>.<problem>"
        job = c.execute(
            "SELECT state, problems_done, epoch, batch, error, stats FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return Outcome(
            lessons=c.execute(
                "SELECT id, text, usage_count, helpful_count, harmful_count, state FROM experiences ORDER BY ordinal"
            ).fetchall(),
            versions=versions,
            critiques=critiques,
            attempts=sorted(
                c.execute(
                    "SELECT epoch, problem_id, rollout, answer, correct, cited, counted FROM attempts WHERE job_id = ?",
                    (job_id,),
                ).fetchall()
            ),
            solutions=c.execute(
                "SELECT task, solution, chain IS NOT NULL FROM teacher_solutions ORDER BY task"
            ).fetchall(),
            calls=dict(c.execute("SELECT role, count(*) FROM model_calls WHERE ok GROUP BY role").fetchall()),
            student_tokens=c.execute(
                "SELECT sum(input_tokens), sum(output_tokens) FROM model_calls WHERE ok AND role = 'student'"
            ).fetchone(),
            job=(*job[:5], json.loads(job[5])),
        )


def job_id(db: Path) -> str:
    with read_only(db) as c:
        return c.execute("SELECT id FROM jobs").fetchone()[0]


def repeated_keys(db: Path) -> list[tuple]:
    """Keys with more than one successful call: a paid call made twice."""
    with read_only(db) as c:
        return c.execute(
            "SELECT call_key, count(*) FROM model_calls WHERE ok AND call_key IS NOT NULL"
            " GROUP BY job_id, call_key HAVING count(*) > 1"
        ).fetchall()


async def ted(db: Path, *args: str) -> int:
    return await cli.run(["--db", str(db), *args])


async def distill(db: Path, directory: Path, *extra: str) -> int:
    await ted(db, "config", "arith", "--max-items", "1")
    return await ted(
        db, "distill", "--dataset", str(write_dataset(directory)), *RUN, "--report", str(directory / "report"), *extra
    )


@dataclass(frozen=True)
class Clean:
    outcome: Outcome
    requests: Counter  # kind(request) → how many the model server received


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Clean:
    """The same job run once, uninterrupted and fault-free: what every other run must end as."""
    directory = tmp_path_factory.mktemp("clean")
    with ModelServer(Classroom().reply_to_request) as server, pytest.MonkeyPatch.context() as env:
        env.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        assert anyio.run(distill, directory / "ted.db", directory) == 0
    result = Clean(outcome(directory / "ted.db"), Counter(kind(r) for r in server.requests))
    # The job must be worth resuming: several batches, critiques and compressions, a lesson used.
    assert result.outcome.job[0] == "done"
    # Every batch is one version, its compression included (the library is never over budget).
    assert Counter(v[1] for v in result.outcome.versions) == {"create": 1, "critique": 6}
    assert all("compression (teacher)" in v[2] for v in result.outcome.versions[1:])
    assert result.outcome.calls["compress"] == 6 and result.outcome.calls["critique"] >= 6
    assert any(lesson[2] > 0 for lesson in result.outcome.lessons)
    # One solution per critiqued problem, each of its own problem.
    critiqued = {QUESTION[problem] for _, problem, _ in result.outcome.critiques}
    assert result.outcome.calls["teacher-solve"] == len(critiqued) == len(result.outcome.solutions)
    for task, solution, chained in result.outcome.solutions:
        assert task in critiqued and chained and solution.startswith(f"Work it out: {task[8:-1]} = ")
    assert all(not e["failures"] and not e["conflicts"] for e in result.outcome.job[5])
    return result


class Hang:
    """The classroom, except that the first request `matches` accepts hangs until the server stops."""

    def __init__(self, matches: Callable[[RecordedRequest], bool]):
        self.classroom, self.matches = Classroom(), matches
        self.hung: RecordedRequest | None = None

    def __call__(self, request: RecordedRequest) -> str | Reply:
        answer = self.classroom.reply_to_request(request)
        if self.hung is None and self.matches(request):
            self.hung = request
            return Reply.slow(600, answer)
        return answer


async def wait_for(condition: Callable[[], bool], what: str, log: Path) -> None:
    # A guard against a hang, not a timing assertion: the condition is reached in about a second.
    with anyio.move_on_after(60):
        while not condition():
            await anyio.sleep(0.01)
        return
    pytest.fail(f"gave up waiting for {what}; the run's stderr:\n{log.read_text()}")


async def test_kill_mid_batch_and_resume_equals_an_uninterrupted_run(tmp_path: Path, clean: Clean):
    exe = installed_command("ted")
    db = tmp_path / "ted.db"
    p4 = QUESTION["p4"]  # p4 and p7 are the problems of batch 2 whose subtraction fails
    # Batch 2 of epoch 1 hangs on p4's critique; the job is killed once p7's critique is stored too,
    # so the kill lands at a known point: batch 1 applied, batch 2's rollouts, solutions, chains and
    # one critique paid for but not applied, one call in flight.
    script = Hang(lambda r: kind(r) == ("critique", p4))
    async with ModelServer(script, latency=0.005) as server:
        env = {**os.environ, "TED_DB": str(db), "TED_OPENAI_COMPATIBLE_BASE_URL": server.openai_base_url}
        assert await ted(db, "config", "arith", "--max-items", "1") == 0
        log = tmp_path / "killed.log"
        with log.open("w") as err:
            process = await anyio.open_process(
                [exe, "distill", "--dataset", str(write_dataset(tmp_path)), *RUN, "--report", str(tmp_path / "r")],
                env=env,
                stdout=err,
                stderr=err,
            )

        def p7_critique_stored() -> bool:
            if script.hung is None or server.in_flight != 1 or not db.exists():
                return False
            with read_only(db) as c:
                return c.execute("SELECT 1 FROM model_calls WHERE call_key = 'e0/p7/critique' AND ok").fetchone()

        try:
            await wait_for(p7_critique_stored, "the job to stop at p4's critique with p7's stored", log)
            job = job_id(db)

            # While it runs, nobody else may resume it.
            before = len(server.requests)
            refused = await anyio.run_process([exe, "distill", "--resume", job], env=env, check=False)
            assert refused.returncode == 1
            assert refused.stderr.decode().startswith(f"ted: Job {job} is running in another process")
            assert f":{process.pid})" in refused.stderr.decode()
            assert len(server.requests) == before
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()  # reaped, so the lease's owner is seen to be gone

        killed = outcome(db)
        assert killed.job[:4] == ("running", 4, 0, 1)  # batch 1 applied, batch 2 in flight
        assert [v[1] for v in killed.versions] == ["create", "critique"]
        assert killed.critiques == [("0", "p1", 1), ("0", "p2", 1)]  # nothing of batch 2 applied
        assert len([a for a in killed.attempts if a[1] in ("p4", "p5", "p6", "p7")]) == 12
        assert killed.calls["critique"] == 3  # p1, p2 and p7's; p4's never got its answer recorded
        paid_before_kill = sum(killed.calls.values())
        requests_before_kill = Counter(kind(r) for r in server.requests)

        resumed = await anyio.run_process(
            [exe, "distill", "--resume", job, "--report", str(tmp_path / "r")], env=env, check=False
        )
        assert resumed.returncode == 0, resumed.stderr.decode()
        assert f"Job {job} done." in resumed.stdout.decode()
        requests_after_resume = Counter(kind(r) for r in server.requests) - requests_before_kill

        finished = await anyio.run_process([exe, "distill", "--resume", job], env=env, check=False)
        assert finished.returncode == 1
        assert finished.stderr.decode().startswith(f"ted: Job {job} is done; start a new job")

    assert outcome(db) == clean.outcome
    assert repeated_keys(db) == []
    assert ledger_totals(db) == ledger_sums(db)  # kept in the ledger rows' own transactions, kill or not
    # The resume asked the model for exactly what the killed run had not recorded: every call of
    # the clean run but the ones paid for before the kill. The single call asked twice over both
    # runs is the one in flight at the kill, whose answer never reached the database.
    assert sum(requests_after_resume.values()) == sum(clean.requests.values()) - paid_before_kill
    assert requests_before_kill + requests_after_resume - clean.requests == Counter({("critique", p4): 1})


def ledger_totals(db: Path) -> list[tuple]:
    """What `ted costs`, get_job and the cap checks read: the totals the triggers kept."""
    with read_only(db) as c:
        return c.execute(
            "SELECT job_id, library, role, model, calls, failed, input_tokens, output_tokens, cache_read_tokens,"
            " cache_write_tokens, round(cost_usd, 9), unpriced, latency_ms FROM ledger_totals ORDER BY 1, 2, 3, 4"
        ).fetchall()


def ledger_sums(db: Path) -> list[tuple]:
    """The same figures summed from the ledger's rows."""
    with read_only(db) as c:
        return c.execute(
            "SELECT coalesce(job_id, ''), coalesce(library, ''), role, model, count(*), sum(1 - ok),"
            " sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens),"
            " round(coalesce(sum(cost_usd), 0), 9), count(*) - count(cost_usd), sum(latency_ms)"
            " FROM model_calls GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        ).fetchall()


def with_faults(fault: Callable[[RecordedRequest], Reply | None]) -> Callable[[RecordedRequest], str | Reply]:
    """The classroom, with `fault`'s answer instead where it gives one; faults are counted."""
    classroom = Classroom()

    def script(request: RecordedRequest) -> str | Reply:
        answer = fault(request)
        if answer is None:
            return classroom.reply_to_request(request)
        script.faults += 1
        return answer

    script.faults = 0
    return script


async def test_transient_errors_are_retried_by_the_sdk_and_leave_no_trace(
    tmp_path: Path, clean: Clean, monkeypatch: pytest.MonkeyPatch
):
    # The first try of every other distinct request fails, alternately 500 and 429: each is retried
    # by the SDK (after the reply's short retry-after) and then answered.
    seen: dict[str, int] = {}

    def flaky(request: RecordedRequest) -> Reply | None:
        body = json.dumps(request.body, sort_keys=True)
        tries = seen[body] = seen.get(body, 0) + 1
        distinct = len(seen)
        if tries == 1 and distinct % 2 == 0:
            return Reply.error(429 if distinct % 4 == 0 else 500)
        return None

    script = with_faults(flaky)
    async with ModelServer(script) as server:
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        assert await distill(tmp_path / "ted.db", tmp_path) == 0

    assert script.faults >= 20
    assert Counter(r.status for r in server.requests) == {
        200: sum(clean.requests.values()),
        429: script.faults // 2,
        500: script.faults - script.faults // 2,
    }
    # The retries happen inside the SDK: the ledger has one successful row per call and no failed one.
    assert outcome(tmp_path / "ted.db") == clean.outcome
    with read_only(tmp_path / "ted.db") as c:
        assert c.execute("SELECT count(*) FROM model_calls WHERE NOT ok").fetchone() == (0,)


def after(n: int, matches: Callable[[RecordedRequest], bool], reply: Callable[[], Reply]):
    """A fault for every request `matches` accepts from the (n+1)-th on."""
    count = 0

    def fault(request: RecordedRequest) -> Reply | None:
        nonlocal count
        if not matches(request):
            return None
        count += 1
        return reply() if count > n else None

    return fault


FAULTS = {
    # The student's calls at p9 in epoch 2 fail with 500 through all of the SDK's retries.
    "server error past the retries": (
        lambda: after(3, lambda r: kind(r) == ("student", QUESTION["p9"]), lambda: Reply.error(500)),
        "ted: The job ended failed: local:student: the provider failed with HTTP 500 after 4 retries",
    ),
    # The teacher's key is refused at p7's critique in epoch 2: no retry, no later batch fixes that.
    "a refused key": (
        lambda: after(1, lambda r: kind(r) == ("critique", QUESTION["p7"]), lambda: Reply.error(401)),
        "ted: The job ended failed: local:teacher: ",
    ),
    # Every critique of batch 2 in epoch 1 is unusable, and so is each repair: the job's
    # failure_share (all of them, by default) is reached.
    "every critique of a batch unusable": (
        lambda: after(
            0, lambda r: kind(r)[0] == "critique" and INDEX[problem(r)] // 4 == 1, lambda: Reply(text="I'd rather not.")
        ),
        "ted: The job ended failed: 2 of the 2 critiques of batch 2 in epoch 1 could not be made",
    ),
}


def problem(request: RecordedRequest) -> str:
    """The id of the problem a request is about."""
    question = kind(request)[1]
    return next(p for p, q in QUESTION.items() if q == question)


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_failure_that_fails_the_job_leaves_whole_batches_and_resume_finishes_it(
    fault: str, tmp_path: Path, clean: Clean, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    make_fault, message = FAULTS[fault]
    db = tmp_path / "ted.db"
    script = with_faults(make_fault())
    async with ModelServer(script) as server:
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        capsys.readouterr()
        assert await distill(db, tmp_path) == 1
        stderr = capsys.readouterr().err
    assert script.faults > 0
    job = job_id(db)
    assert stderr.startswith(message), stderr
    assert stderr.rstrip().endswith(f"Resume it with: ted distill --resume {job}")

    failed = outcome(db)
    assert failed.job[0] == "failed" and failed.job[4] in stderr
    with read_only(db) as c:
        errors = [error for (error,) in c.execute("SELECT error FROM model_calls WHERE NOT ok")]
    if fault == "every critique of a batch unusable":
        assert errors == [] and script.faults == 4  # both critiques and both repairs were answered, and paid for
    else:
        # The SDK's retries leave no row; a call that gave up leaves one failed row, after all its tries.
        # (Calls the failure cancelled in flight leave none: their answers never came. They may have
        # been part-way through their own retries, so the faults need not be a multiple of `tries`.)
        tries = 1 if fault == "a refused key" else 1 + ModelSettings().max_retries  # a 401 is not retried
        assert errors and set(errors) == {failed.job[4]}
        assert script.faults >= tries * len(errors)
    # Never half a batch: the library's history is the clean run's up to some batch (its version,
    # with every critique of the batch and its compression), and nothing more.
    done = failed.job[2] * 3 + failed.job[3]  # batches applied, by the job's cursor
    assert 0 < done < 6
    assert failed.versions == clean.outcome.versions[: len(failed.versions)]
    assert [v[2].split(";")[0] for v in failed.versions if v[1] == "critique"] == [
        f"JOB: epoch {e + 1}, batch {b + 1} ({n} critiques)" for e, b, n in batches(clean.outcome)[:done]
    ]
    assert failed.critiques == [c for c in clean.outcome.critiques if int(c[0]) * 3 + INDEX[c[1]] // 4 < done]

    # A resume refused for its arguments leaves the job as it was, not "running" with no runner.
    capsys.readouterr()
    assert await ted(db, "distill", "--resume", job, "--max-cost", "1") == 1
    assert capsys.readouterr().err.startswith("ted: A cost cap needs a price for every model")
    assert outcome(db).job == failed.job

    async with ModelServer(Classroom().reply_to_request) as server:  # the fault is gone
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        assert await ted(db, "distill", "--resume", job, "--report", str(tmp_path / "report")) == 0
    resumed = outcome(db)
    # The same library, history, attempts and critiques as a clean run. The only extra paid calls
    # are the unusable replies, which a resume must ask again rather than replay into the same error.
    assert resumed.lessons == clean.outcome.lessons
    assert resumed.versions == clean.outcome.versions
    assert resumed.critiques == clean.outcome.critiques
    assert resumed.attempts == clean.outcome.attempts
    assert resumed.solutions == clean.outcome.solutions
    assert resumed.job == clean.outcome.job
    extra = {"critique": 4} if fault == "every critique of a batch unusable" else {}
    assert resumed.calls == dict(Counter(clean.outcome.calls) + Counter(extra))
    assert repeated_keys(db) == []


async def test_one_problem_whose_teacher_replies_are_always_unusable_is_reported_and_the_job_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    db, report = tmp_path / "ted.db", tmp_path / "report"
    # p1's critique (and its repair) is never valid JSON. The library keeps its default budget,
    # so p1 shares its batch with p2's critique, and p4 and p7 teach the lesson p1 would have.
    script = with_faults(
        after(0, lambda r: kind(r) == ("critique", QUESTION["p1"]), lambda: Reply(text="I'd rather not."))
    )
    async with ModelServer(script) as server:
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        dataset = str(write_dataset(tmp_path))
        assert await ted(db, "distill", "--dataset", dataset, *RUN, "--report", str(report)) == 0
    finished = outcome(db)
    assert finished.job[0] == "done" and finished.job[4] is None
    failures = [(e["epoch"], f["problem_id"], f["step"]) for e in finished.job[5] for f in e["failures"]]
    assert failures == [(0, "p1", "critique")] and script.faults == 2  # the reply and its repair
    assert [c[1] for c in finished.critiques] == ["p2", "p4", "p7"]  # the batch went on without p1's
    assert [lesson[1].split(",")[0] for lesson in finished.lessons] == ["For multiplication", "For subtraction"]
    assert finished.job[5][0]["critiques"] == 3
    [reported] = [f for e in json.loads((report / "report.json").read_text())["epochs"] for f in e["failures"]]
    assert (reported["problem_id"], reported["step"]) == ("p1", "critique")
    assert "did not give a valid CritiqueReply reply" in reported["error"]
    assert (
        "| 1 | p1 | critique | local:teacher did not give a valid CritiqueReply" in (report / "report.md").read_text()
    )


async def test_a_compression_rate_limited_past_the_retries_falls_back_to_priority(
    tmp_path: Path, clean: Clean, monkeypatch: pytest.MonkeyPatch
):
    db = tmp_path / "ted.db"
    script = with_faults(after(3, lambda r: kind(r)[0] == "compress", lambda: Reply.error(429)))
    async with ModelServer(script) as server:
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        assert await distill(db, tmp_path) == 0
    finished = outcome(db)
    failures = [f for e in finished.job[5] for f in e["failures"]]
    assert [f["step"] for f in failures] == ["compress"] * 3 and all("HTTP 429" in f["error"] for f in failures)
    # The classroom's teacher drops the lowest-priority lesson, as the fallback does: the library
    # ends the same, only the reasons of the versions say how each compression was made.
    assert finished.lessons == clean.outcome.lessons
    assert [v[:2] for v in finished.versions] == [v[:2] for v in clean.outcome.versions]
    assert sum("removed lowest-priority" in v[2] for v in finished.versions) == 3


def batches(result: Outcome) -> list[tuple[int, int, int]]:
    """(epoch, batch, critiques applied) of each critique version, in order, from its reason."""
    found = [re.match(r"JOB: epoch (\d+), batch (\d+) \((\d+) critiques\)", v[2]) for v in result.versions]
    return [(int(m[1]) - 1, int(m[2]) - 1, int(m[3])) for m in found if m]
