"""Model calls and tokens of one critique and one compression on a 15-item library.

    /tmp/venv/bin/python bench/teacher_calls.py [--api openai|anthropic] [--rollouts 5] [--latency 0]

A library of the 15 benchmark lessons (bench/lessons.py, 40-80 words each, with usage counts)
sits at its item cap. The student has recorded `--rollouts` attempts at one task (about 250
words each, some right, some wrong, citing lessons). `critique_task` then runs the real code
path against the local model server (`ted.testing.ModelServer`, real SDK over real HTTP on
127.0.0.1): the teacher solves the task, summarises the attempts and its solution into chains,
critiques them (one new lesson, one rewrite), and — the library now over its cap — compresses it
(two merges, two rewrites, one deletion), written with the critique as one version. The replies
are scripted at the size a real teacher writes. The figures are the ledger's (`Ledger.totals`):
calls, tokens in/out and latency per role. Tokens are as the server reports them, 4 characters a
token of the system prompt and messages (a real provider also counts the JSON schema sent with
each structured call).
It prints figures; it asserts nothing. ~5 s, mostly imports.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from lessons import LESSONS  # noqa: E402

from ted import agent  # noqa: E402
from ted.ledger import Ledger  # noqa: E402
from ted.llm import AnthropicModel, ModelSettings, OpenAIModel  # noqa: E402
from ted.store import Store  # noqa: E402
from ted.store.records import AddOp  # noqa: E402
from ted.teacher.critique import critique_task  # noqa: E402
from ted.testing import ModelServer, RecordedRequest  # noqa: E402
from ted.testing.classroom import STEPS, lesson_ids, required  # noqa: E402

USAGE = [12, 9, 0, 4, 7, 1, 0, 3, 15, 2, 0, 6, 5, 1, 8]
TASK = (
    "A tank is filled by pipe A in 6 hours and by pipe B in 4 hours; pipe C empties the full tank in 12 "
    "hours. The tank starts one quarter full and all three pipes are opened at 9:00. At what time is the "
    "tank full? Give the answer as a clock time."
)
GROUND_TRUTH = "11:15"


def trajectory(n: int) -> tuple[str, str]:
    """An attempt of about 250 words; attempts 0 and 3 are right, the others make typical errors."""
    wrong = {
        1: ("1/6 + 1/4 + 1/12 = 1/2 per hour", "1.5 hours", "10:30"),
        2: ("1/6 + 1/4 - 1/12 = 1/3 per hour", "3 hours for the whole tank", "12:00"),
        4: ("6 + 4 - 12 = -2 hours", "the times do not combine", "no answer"),
    }
    rate, time_, answer = wrong.get(
        n,
        (
            "1/6 + 1/4 - 1/12 = 2/12 + 3/12 - 1/12 = 4/12 = 1/3 per hour",
            "(3/4) / (1/3) = 9/4 hours = 2 h 15 min",
            "11:15",
        ),
    )
    text = (
        f"Attempt {n + 1}. First I restate the question: we need the clock time at which the tank becomes full, "
        "not the number of hours, so the final answer must be a time of day [E2]. The units are tanks and "
        "hours; every rate will be in tanks per hour and the answer in hours added to 9:00 [E1]. "
        "Pipe A fills one tank in 6 hours, so its rate is 1/6 tank per hour. Pipe B fills one tank in 4 hours, "
        "so its rate is 1/4 tank per hour. Pipe C empties one tank in 12 hours, so its rate is 1/12 tank per "
        f"hour, and it works against the other two [E11]. Combining the rates: {rate}. "
        "The tank starts one quarter full, so three quarters of a tank remain to be filled; I must not forget "
        "the starting level, which is a common trap in these problems [E15]. "
        f"Time needed: {time_}. Checking against an estimate: the two filling pipes alone would take about "
        "2.4 hours for a whole tank, the draining pipe slows this down, and only three quarters are needed, so "
        "a little over two hours is plausible. Adding the time to 9:00 and writing it in the requested format "
        f"as a clock time [E13]. Answer: {answer}"
    )
    return text, answer


SOLUTION = {"answer": "11:15"}
SOLUTION["reasoning"] = (
    "Work in tanks per hour. Pipe A adds 1/6 of a tank each hour, pipe B adds 1/4, and pipe C removes 1/12. "
    "With all three open the net rate is 1/6 + 1/4 - 1/12. Over the common denominator 12 this is "
    "2/12 + 3/12 - 1/12 = 4/12 = 1/3 of a tank per hour. The rates add because the pipes work at the same "
    "time; the times 6, 4 and 12 hours must not be added or subtracted directly. "
    "The tank starts one quarter full, so the volume still to fill is 1 - 1/4 = 3/4 of a tank. "
    "At 1/3 of a tank per hour this takes (3/4) / (1/3) = 9/4 hours, which is 2 hours and 15 minutes. "
    "Check: in 2.25 hours pipe A adds 0.375 tank, pipe B adds 0.5625 tank, and pipe C removes 0.1875 tank, "
    "a net 0.75 tank, exactly the three quarters that were missing. "
    "Starting at 9:00, two hours and fifteen minutes later is 11:15."
)
ANALYSIS = (
    "Two of five attempts are right. Attempt 2 added the draining pipe's rate instead of subtracting it, "
    "treating every pipe as filling. Attempt 3 computed the net rate correctly but then filled a whole tank, "
    "ignoring the quarter already in it. Attempt 5 combined the times instead of the rates. The lessons on "
    "rates [E11] and on starting levels [E15] were cited by the failing attempts but did not prevent the sign "
    "error: E11 says to add rates without saying that an emptying agent contributes a negative rate."
)
NEW_LESSON = (
    "In filling and emptying problems give every agent a signed rate: positive for what fills, negative for "
    "what empties, in the same unit per time. Sum the signed rates, then divide only the amount still "
    "missing (total minus the starting level) by the net rate. Check the sign of the net rate before dividing."
)
REWRITE = (
    "In rate and work problems convert every statement into a rate per unit of time and add the rates of "
    "agents working at once, with a minus sign for agents that undo the work. Times never add; rates do."
)


def chain() -> dict:
    return {
        "premises": [
            "A fills 1 tank in 6 h, B in 4 h",
            "C empties 1 tank in 12 h",
            "the tank starts 1/4 full; all pipes open at 9:00",
        ],
        "steps": [
            "Convert each pipe to a rate in tanks per hour: 1/6, 1/4 and 1/12",
            "Combine the rates with C's rate taken as negative: 1/6 + 1/4 - 1/12 = 1/3",
            "The amount left to fill is 1 - 1/4 = 3/4 of a tank",
            "Time = (3/4) / (1/3) = 9/4 h = 2 h 15 min",
            "Check the net volume after 2.25 h: 0.375 + 0.5625 - 0.1875 = 0.75",
            "Add 2 h 15 min to 9:00",
        ],
        "conclusion": "11:15",
    }


def compression_plan(ids: list[str]) -> dict:
    merged = {ids[2], ids[6], ids[10], ids[14]}
    ops = [
        {
            "op": "merge",
            "ids": [ids[2], ids[6]],
            "text": "Before solving, restate exactly what is asked and list "
            "the assumptions the wording allows, such as independence, replacement or constant speed; check each "
            "assumption against the text before relying on it.",
        },
        {
            "op": "merge",
            "ids": [ids[10], ids[14]],
            "text": "End with the answer in exactly the requested form "
            "(simplified fraction, integer, rounding, option letter, clock time) and compare it with a rough "
            "estimate; a correct method reported in the wrong form is still graded wrong.",
        },
        {
            "op": "rewrite",
            "id": ids[0],
            "text": "Write the unit of every quantity and of the answer before "
            "computing; carry units through each step, and treat a unit mismatch as a sign of a confused rate.",
        },
        {
            "op": "rewrite",
            "id": ids[4],
            "text": "For arrangements with identical objects divide by the factorial "
            "of each group size; around a circle fix one object first, and halve if reflections are the same.",
        },
        {"op": "delete", "id": ids[3], "reason": "Never cited and overlaps the counting lessons."},
    ]
    touched = merged | {ids[0], ids[4], ids[3]}
    ops += [{"op": "retain", "id": id_} for id_ in ids if id_ not in touched]
    return {"operations": ops}


def teacher(request: RecordedRequest) -> str:
    """The teacher's replies, by the reply schema each request asks for."""
    step, schema = STEPS[request.output.name], request.output.json_schema
    if step == "solve":
        return json.dumps(SOLUTION)
    if step == "summarise":
        return json.dumps({"chains": {label: chain() for label in required(schema, "chains")}})
    if step == "critique":
        diagnosis = {"first_divergent_step": "Step 2: a rate with the wrong sign", "error_class": "wrong_method"}
        return json.dumps(
            {
                "analysis": ANALYSIS,
                "diagnoses": {label: diagnosis for label in required(schema, "diagnoses")},
                "operations": [
                    {"op": "add", "text": NEW_LESSON, "rationale": "Attempts 2 and 5 mishandled the emptying pipe."},
                    {"op": "rewrite", "id": "E11", "text": REWRITE, "rationale": "E11 was cited by the sign error."},
                ],
            }
        )
    return json.dumps(compression_plan(lesson_ids(schema)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", choices=["openai", "anthropic"], default="openai")
    parser.add_argument("--rollouts", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.0, help="Seconds the server waits per request.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        async with Store.open(Path(tmp) / "ted.db") as store, ModelServer(teacher, latency=args.latency) as server:
            ops = [
                AddOp(text=text, usage_count=u, helpful_count=u // 2, harmful_count=u % 3)
                for (_, text), u in zip(LESSONS, USAGE, strict=True)
            ]
            await store.apply("bench", ops, "import", "the 15 benchmark lessons")
            for n in range(args.rollouts):
                text, answer = trajectory(n % 5)
                await agent.record_attempt(
                    store,
                    library="bench",
                    task=TASK,
                    trajectory=text,
                    answer=answer,
                    ground_truth=GROUND_TRUTH,
                    task_id="tank",
                    model="student",
                )
            before = await store.experience_prompt("bench")
            settings = ModelSettings(api_key="bench", max_retries=0)
            if args.api == "openai":
                model = OpenAIModel(
                    "teacher", settings.model_copy(update={"base_url": server.openai_base_url}), name="local:teacher"
                )
            else:
                model = AnthropicModel(
                    "teacher",
                    settings.model_copy(update={"base_url": server.anthropic_base_url}),
                    name="anthropic:teacher",
                )
            ledger = Ledger(store)
            started = time.perf_counter()
            result = await critique_task(store, ledger, model, "bench", "tank")
            elapsed = time.perf_counter() - started
            after = await store.experience_prompt("bench")
            totals = await ledger.totals(library="bench")
            await model.aclose()

    print(
        f"ted-mcp teacher calls: one critique + the compression it triggers, {args.api} wire format, "
        f"{args.rollouts} attempts, server latency {args.latency:g} s"
    )
    print(
        f"library before: {len(before.items)} items, {before.tokens} tokens (cap {before.max_items}, "
        f"budget {before.token_budget})"
    )
    compression = result.compression
    print(f"critique: {len(result.operations)} operations applied, {len(result.rejected)} rejected")
    if compression:
        print(
            f"compression: {len(compression.operations)} operations, {len(compression.dropped)} dropped, "
            f"budget removals {compression.budget_removals or 'none'}"
        )
    print(f"both written as one version: {result.version}")
    print(f"library after: {len(after.items)} items, {after.tokens} tokens, over budget: {after.over_budget}")
    print(f"wall time {elapsed * 1000:.0f} ms; requests to the server: {len(server.requests)}\n")
    print(f"{'role':<14}{'calls':>6}{'failed':>8}{'tokens in':>11}{'tokens out':>12}{'latency ms':>12}")
    order = ["teacher-solve", "summarise", "critique", "compress"]
    for row in sorted(totals, key=lambda r: order.index(r.role) if r.role in order else len(order)):
        print(
            f"{row.role:<14}{row.calls:>6}{row.failed:>8}{row.input_tokens:>11}{row.output_tokens:>12}"
            f"{row.latency_ms:>12}"
        )
    print(
        f"{'total':<14}{sum(r.calls for r in totals):>6}{sum(r.failed for r in totals):>8}"
        f"{sum(r.input_tokens for r in totals):>11}{sum(r.output_tokens for r in totals):>12}"
        f"{sum(r.latency_ms for r in totals):>12}"
    )


if __name__ == "__main__":
    asyncio.run(main())
