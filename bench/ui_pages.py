"""How long each dashboard page takes to answer on a big database, against the HTTP floor.

    python bench/ui_pages.py [--requests 30] [--versions 1000] [--attempts 10000] [--keep DIR]

The database is built through ted's own write functions: a library "bench" of the 15 lessons of
`bench/lessons.py` whose every lesson came from a recorded critique of 5 attempts, rewritten
until it has `--versions` versions; a finished distillation job of `--attempts` attempts (2,000
problems × 5 rollouts), each with its model call in the ledger, and per-epoch figures; a
200-problem evaluation report; the library serving a version promoted on validation figures
halfway through, so the served and the working version differ; every lesson's measured evidence;
5 lessons the gate refused, waiting in quarantine. The installed `ted ui` serves it over
real HTTP; every page is requested `--requests` times, interleaved with the others (one request
to every page per round, after 3 warm-up rounds), and timed with perf_counter around the request.
The peer is the dashboard's stylesheet, a static file behind the same middleware: the floor of
the HTTP stack, so the ratio is what the page itself costs. Target: every page's p90 under 100 ms.
It prints figures and asserts nothing about time. Building the database takes about a minute.
"""

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx2
from lessons import LESSONS
from rich.console import Console
from rich.table import Table

from ted import agent
from ted.ledger import Call, Ledger
from ted.llm.base import Completion, GenerationSettings, Usage
from ted.runs import evaluations, jobs
from ted.runs.datasets import Problem
from ted.runs.jobs import DistillParams, EpochProgress
from ted.runs.report import evaluation_report
from ted.store import Store
from ted.store.records import (
    AddOp,
    BootstrapInterval,
    LessonEvidence,
    NewAttempt,
    RewriteOp,
    ValidationFigures,
    text_sha,
)
from ted.teacher.critique import record_critique
from ted.teacher.replies import CritiqueReply

LIBRARY = "bench"


async def build(path: Path, versions: int, attempts: int, console: Console) -> dict[str, str]:
    started = time.perf_counter()
    async with Store.open(path) as store:
        ledger = Ledger(store)
        job_id = await _job(store, ledger, attempts)
        first = await store.job_attempts(job_id, 0, "p0")
        critique_id = "bench-critique"
        reply = CritiqueReply(analysis="The attempts confused a rate with a total.", diagnoses={}, operations=[])
        await store.ensure_library(LIBRARY)
        await store.write(
            lambda db: record_critique(
                db, LIBRARY, critique_id, "t-bench", "bench:teacher", [a.id for a in first], None, reply, []
            )
        )
        provenance = {"source": "critique", "critique_id": critique_id, "attempt_ids": [a.id for a in first]}
        await store.apply(LIBRARY, [AddOp(text=t, provenance=provenance) for _, t in LESSONS], "add", "seed")
        rng = random.Random(0)
        for n in range(versions - 2):  # version 0 (create) and 1 (the seed) exist already
            target = f"E{rng.randrange(1, len(LESSONS) + 1)}"
            text = LESSONS[int(target[1:]) - 1][1] + f" (revision {n})"
            await store.apply(LIBRARY, [RewriteOp(id=target, text=text)], "manual", f"revision {n} of {target}")
            if n == versions // 2:
                await _promote(store, job_id, n + 2)
        await _evidence(store, versions - 1, rng)
        outcomes = [
            {"problem_id": f"p{i}", "with_library": [rng.random() < 0.7], "without_library": [rng.random() < 0.6]}
            for i in range(200)
        ]
        report = evaluation_report(
            outcomes,
            dataset="bench",
            student="bench:student",
            library=LIBRARY,
            library_version=versions - 1,
            report_id="eval-bench",
        )
        await evaluations.save(store, report)
        await store.configure(LIBRARY, quarantine=True)
        for n in range(5):
            await agent.add_experience(store, LIBRARY, f"See units-{n}.example.com for the units of every answer.")
    console.print(f"built {path} in {time.perf_counter() - started:.0f} s", markup=False)
    return {"job": job_id, "evaluation": report.id}


async def _promote(store: Store, job_id: str, version: int) -> None:
    """Serve `version` from now on, promoted on validation figures, as a distillation's round would."""
    interval = BootstrapInterval(low=0.02, high=0.14, confidence=0.95, resamples=10_000, seed=0)
    figures = ValidationFigures(
        problems=100,
        samples=1,
        served_version=0,
        served_accuracy=0.6,
        working_accuracy=0.68,
        difference=0.08,
        interval=interval,
        margin=0.0,
    )
    await store.promote(LIBRARY, version, by=job_id, reason="validation", figures=figures)


async def _evidence(store: Store, version: int, rng: random.Random) -> None:
    """Every lesson's effect, as `ted evidence` would keep it."""
    found = {}
    for e in await store.experiences(LIBRARY):
        difference = rng.uniform(-0.1, 0.2)
        found[e.id] = LessonEvidence(
            difference=difference,
            low=difference - 0.05,
            high=difference + 0.05,
            problems=100,
            flagged=difference < 0,
            version=version,
            dataset="bench",
            samples=1,
            interval=BootstrapInterval(
                low=difference - 0.05, high=difference + 0.05, confidence=0.95, resamples=10_000, seed=0
            ),
            measured_at=datetime.now(UTC),
            text_sha=text_sha(e.text),
        )
    await store.record_evidence(LIBRARY, found)


async def _job(store: Store, ledger: Ledger, attempts: int) -> str:
    """A finished distillation of `attempts` attempts (5 rollouts a problem), with its ledger rows."""
    rollouts, problems = 5, attempts // 5
    params = DistillParams(library=LIBRARY, student="bench:student", teacher="bench:teacher", epochs=1, rollouts=5)
    items = [Problem(id=f"p{i}", question=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(problems)]
    job = await jobs.create(store, params, items, "bench.jsonl")
    settings = GenerationSettings()
    completion = Completion(text="Answer: 2", usage=Usage(input_tokens=400, output_tokens=120), model="bench:student")
    for problem in items:
        for rollout in range(rollouts):
            attempt = NewAttempt(
                task_id=f"t-{problem.id}",
                task=problem.question,
                trajectory="I add them. Answer: 2",
                answer="2",
                ground_truth=problem.answer,
                correct=problem.id == "p1",
                graded_by="math",
                model="bench:student",
                job_id=job.id,
                epoch=0,
                problem_id=problem.id,
                rollout=rollout,
            )
            await store.record_attempt(LIBRARY, attempt, [])
            scope = {"library": LIBRARY, "task_id": f"t-{problem.id}", "job_id": job.id}
            call = Call(
                role="student", model="bench:student", scope=scope, settings=settings, started=time.perf_counter()
            )
            await ledger.record(call, completion)
    stats = [EpochProgress(epoch=0, attempts=attempts, correct=attempts // 3, critiques=problems // 2, items=15)]
    await store.write(lambda db: jobs.advance(db, job.id, epoch=1, batch=0, done=problems, stats=stats))
    await jobs.finish(store, job.id, "done")
    return job.id


def serve(path: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ted = Path(sys.executable).parent / "ted"
    proc = subprocess.Popen([str(ted), "ui", "--db", str(path), "--port", str(port)], stdout=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/ui"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("ted ui did not start")


def measure(base: str, pages: dict[str, str], requests: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in pages}
    names = list(pages)
    with httpx2.Client(base_url=base, timeout=60) as http:
        for round_ in range(requests + 3):
            names = names[1:] + names[:1]  # rotate the order, so drift hits every page alike
            for name in names:
                started = time.perf_counter()
                response = http.get(pages[name])
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, (name, response.status_code, response.text[:300])
                if round_ >= 3:
                    times[name].append(elapsed)
    return times


def report(times: dict[str, list[float]], sizes: dict[str, int], console: Console) -> None:
    floor = statistics.median(times["static (peer)"])
    table = Table("page", "p50 ms", "p90 ms", "max ms", "p50 / peer", "bytes", title="dashboard pages over HTTP")
    for name, values in times.items():
        values = sorted(values)
        p90 = values[int(0.9 * (len(values) - 1))]
        table.add_row(
            name,
            f"{statistics.median(values):.1f}",
            f"{p90:.1f}",
            f"{values[-1]:.1f}",
            f"{statistics.median(values) / floor:.1f}",
            f"{sizes[name]:,}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--attempts", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="build the database here and keep it (reused if it exists)")
    args = parser.parse_args()
    console = Console(highlight=False)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ted-ui-bench-"))
    path = folder / "ted.db"
    ids_file = folder / "ids.json"
    if not ids_file.exists():
        ids_file.write_text(json.dumps(anyio.run(build, path, args.versions, args.attempts, console)))
    ids = json.loads(ids_file.read_text())
    pages = {
        "static (peer)": "/static/style.css",
        "libraries": "/",
        "library": f"/libraries/{LIBRARY}",
        "lesson + provenance": f"/libraries/{LIBRARY}/lessons/E3",
        "history (newest 50)": f"/libraries/{LIBRARY}/history",
        "history (v450-499)": f"/libraries/{LIBRARY}/history?before=500",
        f"diff v0 → v{args.versions - 1}": f"/libraries/{LIBRARY}/diff?from=0&to={args.versions - 1}",
        "jobs": "/jobs",
        "job": f"/jobs/{ids['job']}",
        "job (live part)": f"/jobs/{ids['job']}/live",
        "distillation report": f"/jobs/{ids['job']}/report",
        "reports": "/reports",
        "evaluation report": f"/reports/{ids['evaluation']}",
        "review": "/review",
    }
    proc, base = serve(path)
    try:
        with httpx2.Client(base_url=base) as http:
            sizes = {name: len(http.get(url).content) for name, url in pages.items()}
            started = time.perf_counter()
            http.get(f"/jobs/{ids['job']}/report.png")
            png = (time.perf_counter() - started) * 1000
        report(measure(base, pages, args.requests), sizes, console)
        console.print(f"report.png of the job, drawn by matplotlib on request: {png:.0f} ms", markup=False)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
