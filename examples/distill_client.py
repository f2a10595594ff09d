"""Start a distillation with the `distill_batch` tool and follow it with `get_job` until it ends.

    python examples/distill_client.py --dataset examples/data/gsm8k_train_100.jsonl --library gsm8k
    python examples/distill_client.py --dataset … --library gsm8k --estimate       # calls and tokens only
    python examples/distill_client.py --url http://127.0.0.1:8765/mcp --dataset … --cancel-after 60
    python examples/distill_client.py --url http://127.0.0.1:8765/mcp --job job-…   # follow a running job

By default it launches the `ted-mcp` installed beside this interpreter over stdio; the job then
runs inside that server process, so it lives as long as this script. A job cut short (Ctrl-C,
--timeout) stays in the database until `ted distill --resume JOB` (or a `ted-mcp --resume-jobs`
on it) takes it up. With --url it talks to a running `ted-mcp --transport http`, where
the job carries on after the script exits and --job follows it again later.

The server needs a student and a teacher: the library's own (`ted config LIB --student …
--teacher …`), --student/--teacher here, or TED_STUDENT/TED_TEACHER, with the provider's key
(ANTHROPIC_API_KEY, OPENAI_API_KEY, TED_OPENAI_COMPATIBLE_BASE_URL for vLLM or Ollama).
Over stdio those variables are passed on to the server; an HTTP server reads its own.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

# The SDK starts a stdio server with a minimal environment (PATH, HOME…); the server needs
# these to find its database, its models and their keys.
PASSED_ON = ("TED_", "ANTHROPIC_", "OPENAI_", "OPENROUTER_")


def ted_mcp_command() -> str:
    """The `ted-mcp` installed beside this interpreter (the active venv), else the one on PATH."""
    beside = Path(sys.executable).parent / ("ted-mcp.exe" if os.name == "nt" else "ted-mcp")
    found = str(beside) if beside.exists() else shutil.which("ted-mcp")
    if not found:
        raise FileNotFoundError(
            "ted-mcp is not installed: run `pip install .` at the repository root, in this environment."
        )
    return found


def connect(options: argparse.Namespace) -> Client:
    if options.url:
        if not options.token:
            return Client(options.url)
        # The server wants the token as a bearer header whenever it listens beyond loopback.
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {options.token}"})
        return Client(streamable_http_client(options.url, http_client=http))
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ON)}
    args = ["--db", options.db] if options.db else []
    return Client(StdioServerParameters(command=ted_mcp_command(), args=args, env=env))


class ToolFailed(Exception):
    """A tool answered with an error: its message says what to fix."""


def run(main, *args) -> int:
    """`main` on an event loop; an error, however deep in the client's task groups, as one line."""
    try:
        return anyio.run(main, *args) or 0
    except Exception as e:  # a tool's error, a model's, a server that would not start
        while isinstance(e, ExceptionGroup):
            e = e.exceptions[0]
        print(f"{Path(sys.argv[0]).name}: {e}", file=sys.stderr)
        return 1


async def call(client: Client, tool: str, arguments: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments, **kwargs)
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise ToolFailed(f"{tool} failed: {' '.join(text.split())}")  # one line, however the server wrapped it
    return result.structured_content


def dataset_argument(options: argparse.Namespace) -> str | list[dict[str, Any]]:
    path = Path(options.dataset).expanduser()
    if not options.inline:
        # The server opens the file itself, from its own working directory: give it an absolute path.
        return str(path.resolve())
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"Cannot read {path}: {e.strerror}") from None
    return [json.loads(line) for line in lines if line.strip()]


async def start(client: Client, options: argparse.Namespace) -> str | None:
    """Call distill_batch; print its estimate and the job it started (None with --estimate)."""
    arguments = {
        "dataset": dataset_argument(options),
        "library": options.library,
        "epochs": options.epochs,
        "rollouts": options.rollouts,
        "concurrency": options.concurrency,
        "compression": options.compression,
        "estimate_only": options.estimate,
    }
    optional = {
        "student": options.student,
        "teacher": options.teacher,
        "limit": options.limit,
        "max_cost_usd": options.max_cost,
    }
    arguments |= {k: v for k, v in optional.items() if v is not None}
    started = await call(client, "distill_batch", arguments)
    guess = started["estimate"]
    print(
        f"estimate: {guess['problems']} problems × {options.epochs} epochs × {options.rollouts} rollouts: "
        f"at most {guess['student_calls']:,} student and {guess['teacher_calls']:,} teacher calls, "
        f"about {guess['input_tokens']:,} tokens in and {guess['output_tokens']:,} out"
    )
    if not started["started"]:
        return None
    job = started["job"]
    print(f"job {job['id']} started on library {job['library']}, student {job['student']}, teacher {job['teacher']}")
    return job["id"]


async def show_progress(progress: float, total: float | None, message: str | None) -> None:
    # Sent by the server after every batch, while get_job(wait=true) is waiting.
    of = f"/{total:.0f}" if total else ""
    print(f"  progress {progress:.0f}{of} problem-epochs: {message or ''}", flush=True)


async def follow(client: Client, job_id: str, timeout: float) -> dict[str, Any]:
    """get_job(wait=true) until the job ends or `timeout` seconds have passed."""
    deadline = anyio.current_time() + timeout
    status = await call(client, "get_job", {"job_id": job_id})
    while not status["finished"] and (left := deadline - anyio.current_time()) > 0:
        # The server ends the wait itself at `timeout` and replies with the status then, fresher
        # than cancelling the call here would leave us; one wait is at most an hour.
        status = await call(
            client,
            "get_job",
            {"job_id": job_id, "wait": True, "timeout": min(left, 3600)},
            progress_callback=show_progress,
        )
    return status


async def cancel_later(client: Client, job_id: str, seconds: float) -> None:
    await anyio.sleep(seconds)
    # Once sent, see the reply through even if the job's end reaches get_job first.
    with anyio.CancelScope(shield=True):
        status = await call(client, "cancel_job", {"job_id": job_id})
    print(f"cancel requested after {seconds:g} s: job {status['state']}", flush=True)


def describe(status: dict[str, Any], library: dict[str, Any]) -> None:
    print(
        f"job {status['id']} {status['state']}: {status['problems_done']}/"
        f"{status['problems_total']} problem-epochs" + (f"; error: {status['error']}" if status["error"] else "")
    )
    for epoch in status["epochs"]:
        accuracy = f"{epoch['correct'] / epoch['attempts']:.0%}" if epoch["attempts"] else "–"
        print(
            f"  epoch {epoch['epoch'] + 1}: rollout accuracy {accuracy} ({epoch['correct']}/{epoch['attempts']}), "
            f"{epoch['critiques']} critiques, {epoch['compressions']} compressions"
        )
    print(
        f"library {library['library']} v{library['version']}: {len(library['items'])} lessons, "
        f"{library['tokens']}/{library['token_budget']} tokens"
    )
    cost = status["cost"]
    dollars = (
        f"${cost['cost_usd']:.4f}"
        if cost["cost_usd"] is not None
        else (f"cost unknown (no price for {', '.join(cost['unpriced_models'])})")
    )
    print(
        f"cost: {cost['calls']:,} model calls, {cost['input_tokens']:,} tokens in / "
        f"{cost['output_tokens']:,} out, {dollars}"
    )


async def main(options: argparse.Namespace) -> int:
    async with connect(options) as client:
        job_id = options.job or await start(client, options)
        if job_id is None:
            return 0
        async with anyio.create_task_group() as tg:
            if options.cancel_after is not None:
                tg.start_soon(cancel_later, client, job_id, options.cancel_after)
            status = await follow(client, job_id, options.timeout)
            tg.cancel_scope.cancel()  # a cancel not sent yet is not needed any more
        library = await call(client, "get_experiences", {"library": status["params"]["library"]})
        describe(status, library)
        if not status["finished"]:
            if options.url:
                print(
                    f"still {status['state']} after {options.timeout:g} s: the server carries it on; follow it "
                    f"with --job {job_id}"
                )
            else:
                print(
                    f"still {status['state']} after {options.timeout:g} s; resume it with `ted distill --resume "
                    f"{job_id}`"
                )
            return 2
        return 1 if status["state"] == "failed" else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="JSONL of {id, question, answer, images?}")
    parser.add_argument(
        "--inline",
        action="store_true",
        help="send the dataset's items in the call (for a server that cannot read the file)",
    )
    parser.add_argument("--library", default="default", help="library to distil into (default: default)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rollouts", type=int, default=5, help="student attempts per problem and epoch")
    parser.add_argument("--concurrency", type=int, default=8, help="problems in flight; 1 is the paper's order")
    parser.add_argument("--compression", choices=["teacher", "none", "truncate", "random"], default="teacher")
    parser.add_argument("--limit", type=int, help="use only the first N problems")
    parser.add_argument("--student", help="provider:model (default: the library's, else the server's TED_STUDENT)")
    parser.add_argument("--teacher", help="provider:model (default: the library's, else the server's TED_TEACHER)")
    parser.add_argument("--max-cost", type=float, help="stop the job cleanly at this many dollars")
    parser.add_argument("--estimate", action="store_true", help="print the estimate and start nothing")
    parser.add_argument("--job", help="follow this job instead of starting one")
    parser.add_argument("--cancel-after", type=float, metavar="SECONDS", help="cancel the job after this long")
    parser.add_argument("--timeout", type=float, default=3600, help="stop following after this many seconds")
    parser.add_argument("--url", help="a streamable HTTP server, e.g. http://127.0.0.1:8765/mcp (default: stdio)")
    parser.add_argument(
        "--token", default=os.environ.get("TED_HTTP_TOKEN"), help="bearer token for --url (default: $TED_HTTP_TOKEN)"
    )
    parser.add_argument("--db", help="SQLite file for a stdio server (default: $TED_DB or the user data directory)")
    options = parser.parse_args(argv)
    if not (options.dataset or options.job):
        parser.error("give --dataset FILE to start a job, or --job JOB to follow one")
    return options


if __name__ == "__main__":
    sys.exit(run(main, parse()))
