"""One turn of the TED loop from a Python script, over stdio, against the installed `ted-mcp`.

    python examples/quickstart_client.py --db /tmp/ted-quickstart.db

It reads the experience library, adds a lesson if the library is empty, records an attempt
that cites the lesson as [E1] together with the ground truth, and prints the grade and the
usage counts the citation produced. Run it twice on one database and the count goes to 2.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

LESSON = "Before answering, write down which quantity the question asks for and the unit it must be given in."
TASK = "A train covers 60 km in 45 minutes. What is its average speed in km/h?"
ANSWER = "80"


def ted_mcp_command() -> str:
    """The `ted-mcp` installed beside this interpreter (the active venv), else the one on PATH."""
    beside = Path(sys.executable).parent / ("ted-mcp.exe" if os.name == "nt" else "ted-mcp")
    found = str(beside) if beside.exists() else shutil.which("ted-mcp")
    if not found:
        raise FileNotFoundError(
            "ted-mcp is not installed: run `pip install .` at the repository root, in this environment."
        )
    return found


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


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise ToolFailed(f"{tool} failed: {' '.join(text.split())}")  # one line, however the server wrapped it
    return result.structured_content


async def main(db: str | None, library: str) -> None:
    args = ["--db", db] if db else []
    # The SDK starts the server with a minimal environment; pass TED_DB on if it is set.
    env = {"TED_DB": os.environ["TED_DB"]} if "TED_DB" in os.environ else None
    params = StdioServerParameters(command=ted_mcp_command(), args=args, env=env)

    async with Client(params) as client:
        experiences = await call(client, "get_experiences", {"library": library, "task": TASK})
        print(
            f"library {library!r}, version {experiences['version']}: {len(experiences['items'])} lesson(s), "
            f"{experiences['tokens']}/{experiences['token_budget']} tokens"
        )
        if not experiences["items"]:
            added = await call(client, "add_experience", {"library": library, "text": LESSON})
            print(f"added {added['operations'][0]['id']} (library version {added['version']})")
            experiences = await call(client, "get_experiences", {"library": library, "task": TASK})
        lesson = experiences["items"][0]
        print(f"using [{lesson['id']}] {lesson['text']}")

        # What a student model would produce with `experiences["prompt"]` in its system prompt.
        trajectory = (
            f"[{lesson['id']}] The question asks for a speed in km/h, so convert the time to hours first: "
            f"45 minutes = 0.75 h. Speed = 60 km / 0.75 h = 80 km/h. \\boxed{{{ANSWER}}}"
        )
        attempt = await call(
            client,
            "record_attempt",
            {
                "library": library,
                "task": TASK,
                "task_id": experiences["task_id"],
                "trajectory": trajectory,
                "answer": ANSWER,
                "ground_truth": "80 km/h",
                "model": "quickstart-script",
            },
        )
        grade = {True: "correct", False: "wrong", None: "ungraded"}[attempt["correct"]]
        print(
            f"attempt {attempt['attempt_id']} on task {attempt['task_id']}: {grade} (graded by {attempt['graded_by']})"
        )
        counts = ", ".join(f"{id_}={n}" for id_, n in attempt["usage_counts"].items()) or "none"
        print(f"usage counts: {counts}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="SQLite file for the library (default: $TED_DB or the user data directory).")
    parser.add_argument("--library", default="quickstart", help="Library name (default: quickstart).")
    options = parser.parse_args()
    sys.exit(run(main, options.db, options.library))
