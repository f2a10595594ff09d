"""An agent that gets better at a kind of task through ted-mcp, with Claude or an OpenAI model.

    export ANTHROPIC_API_KEY=…  TED_TEACHER=anthropic:claude-sonnet-4-5
    python examples/agent_loop.py --limit 10 --library gsm8k
    OPENAI_API_KEY=… python examples/agent_loop.py --provider openai --model gpt-4.1-mini --limit 10

For each problem of the dataset (default: the GSM8K training slice in examples/data), in order:

1. get_experiences(library, task) → the library's prompt, put before the agent's system prompt;
2. the model solves the task, citing the lessons it applies as [E3], ending with 'Answer: …';
3. record_attempt(task, trajectory, answer, ground_truth, used_experience_ids, model) grades it
   and counts one use for every cited lesson;
4. request_critique(task_id) when the attempt was wrong: the server's teacher compares it with
   its own solution and the ground truth and turns the mistake into general lessons, which the
   next problem's get_experiences already returns.

The model is called with the official SDK, which reads its key and base URL from the
environment (ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL, OPENAI_API_KEY / OPENAI_BASE_URL); --provider
defaults to whichever key is set. The critique needs a teacher on the server's side: the
library's own (`ted config LIB --teacher …`) or TED_TEACHER, passed on with the other TED_*,
ANTHROPIC_* and OPENAI_* variables to the `ted-mcp` this script launches over stdio.
"""

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

DEFAULT_DATASET = Path(__file__).resolve().parent / "data" / "gsm8k_train_100.jsonl"
DEFAULT_MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4.1-mini"}
KEYS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
# The SDK starts a stdio server with a minimal environment; the server needs these for its
# database, its teacher model and that model's key.
PASSED_ON = ("TED_", "ANTHROPIC_", "OPENAI_", "OPENROUTER_")

SYSTEM_PROMPT = (
    "Solve the task. Reason step by step. Whenever one of the lessons above shapes a step, cite its id "
    "in square brackets at that step, e.g. [E3]. End with a line of the form 'Answer: <your final answer>'."
)
_ANSWER = re.compile(r"^\s*Answer:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)
_CITATION = re.compile(r"\[\s*(E\d+(?:\s*[,;]\s*E\d+)*)\s*\]")

Ask = Callable[[str, str], Awaitable[str]]  # (system prompt, task) → the model's reply


def model_caller(provider: str, model: str) -> Ask:
    """One async call to the provider's model. Only that SDK is imported: each takes seconds."""
    if provider == "anthropic":
        import anthropic

        claude = anthropic.AsyncAnthropic()

        async def ask_claude(system: str, task: str) -> str:
            reply = await claude.messages.create(
                model=model, max_tokens=2048, system=system, messages=[{"role": "user", "content": task}]
            )
            return "".join(block.text for block in reply.content if block.type == "text")

        return ask_claude

    import openai

    gpt = openai.AsyncOpenAI()

    async def ask_gpt(system: str, task: str) -> str:
        reply = await gpt.chat.completions.create(
            model=model,
            max_completion_tokens=2048,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": task}],
        )
        return reply.choices[0].message.content or ""

    return ask_gpt


def final_answer(reply: str) -> str | None:
    answers = _ANSWER.findall(reply)
    return answers[-1] if answers else None


def citations(reply: str) -> list[str]:
    """The ids cited as [E3] or [E3, E7], each once, in order."""
    ids = [i.strip() for group in _CITATION.findall(reply) for i in re.split(r"[,;]", group)]
    return list(dict.fromkeys(ids))


def load_problems(path: Path, limit: int | None) -> list[dict[str, Any]]:
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        raise ValueError(f"Cannot read the dataset {path}: {e.strerror}") from None
    return [json.loads(line) for line in lines[:limit]]


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


def describe_change(critique: dict[str, Any]) -> str:
    names = {"add": "added", "rewrite": "rewrote", "delete": "deleted", "merge": "merged", "restore": "restored"}
    changes = [f"{names[op['op']]} {op.get('id') or op.get('into') or ''}".strip() for op in critique["operations"]]
    return ", ".join(changes) or "no change"


async def solve_one(client: Client, ask: Ask, model: str, library: str, problem: dict[str, Any]) -> tuple[bool, str]:
    """One turn of the loop; returns (correct, what happened) for the log line."""
    question = problem["question"]
    experiences = await call(client, "get_experiences", {"library": library, "task": question})
    # As the tool's description asks: the lessons go before the agent's own instructions.
    system = f"{experiences['prompt']}\n\n{SYSTEM_PROMPT}" if experiences["prompt"] else SYSTEM_PROMPT
    reply = await ask(system, question)
    answer, cited = final_answer(reply), citations(reply)
    attempt = await call(
        client,
        "record_attempt",
        {
            "library": library,
            "task": question,
            "task_id": experiences["task_id"],
            "trajectory": reply,
            "ground_truth": str(problem["answer"]),
            "used_experience_ids": cited,
            "model": model,
            **({"answer": answer} if answer is not None else {}),
        },
    )
    correct = bool(attempt["correct"])
    counted = ", ".join(attempt["counted_ids"]) or "none"
    if attempt["unknown_ids"]:  # ids the model made up, or lessons retired since it read them
        counted += f"; unknown {', '.join(attempt['unknown_ids'])}"
    told = f"correct: answer {answer}" if correct else f"wrong: answer {answer}, expected {problem['answer']}"
    told += f" (cited {counted})"
    if not correct:
        critique = await call(client, "request_critique", {"library": library, "task_id": attempt["task_id"]})
        told += f" → critique: {describe_change(critique)}, library v{critique['version']}"
    return correct, told


async def main(options: argparse.Namespace) -> int:
    problems = load_problems(Path(options.dataset), options.limit)
    ask = model_caller(options.provider, options.model)
    model = f"{options.provider}:{options.model}"
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ON)}
    args = ["--db", options.db] if options.db else []
    right = 0
    async with Client(StdioServerParameters(command=ted_mcp_command(), args=args, env=env)) as client:
        # One problem at a time, on purpose: each critique changes the library the next problem reads.
        for n, problem in enumerate(problems, 1):
            try:
                correct, told = await solve_one(client, ask, model, options.library, problem)
            except ToolFailed as e:  # say which problem, and stop
                raise ToolFailed(f"[{n}/{len(problems)}] {problem['id']}: {e}") from None
            right += correct
            print(f"[{n}/{len(problems)}] {problem['id']} {told}", flush=True)
        final = await call(client, "get_experiences", {"library": options.library})
    print(
        f"{right}/{len(problems)} correct with {model}; library {options.library} v{final['version']}: "
        f"{len(final['items'])} lessons, {final['tokens']}/{final['token_budget']} tokens"
    )
    for item in final["items"]:
        print(f"  [{item['id']}] used {item['usage_count']}×: {item['text']}")
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--provider", choices=sorted(KEYS), help="whose model solves the tasks (default: the one whose API key is set)"
    )
    parser.add_argument("--model", help=f"model id (default: {DEFAULT_MODELS})")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="JSONL of {id, question, answer}")
    parser.add_argument("--limit", type=int, default=5, help="solve the first N problems (default 5)")
    parser.add_argument("--library", default="gsm8k", help="the experience library (default: gsm8k)")
    parser.add_argument("--db", help="SQLite file (default: $TED_DB or the user data directory)")
    options = parser.parse_args(argv)
    options.provider = options.provider or next((p for p, key in KEYS.items() if os.environ.get(key)), None)
    if options.provider is None:
        parser.error("set ANTHROPIC_API_KEY or OPENAI_API_KEY (or pass --provider)")
    if not os.environ.get(KEYS[options.provider]):
        parser.error(f"--provider {options.provider} needs {KEYS[options.provider]} in the environment")
    options.model = options.model or DEFAULT_MODELS[options.provider]
    return options


if __name__ == "__main__":
    sys.exit(run(main, parse()))
