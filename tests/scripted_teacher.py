"""A scripted teacher for critique and compression tests: one ScriptedModel that answers each
teacher step (solve, summarise, critique, compress) by the system prompt it was sent, and
records which steps were asked for, so a test can assert what was (not) called."""

import json
import re
from collections.abc import Callable
from typing import Any

from ted.llm.base import Message, OutputSchema
from ted.llm.scripted import ScriptedModel
from ted.prompts import COMPRESS_SYSTEM, CRITIQUE_SYSTEM, SUMMARISE_SYSTEM, TEACHER_SOLVE_SYSTEM

STEPS = {
    TEACHER_SOLVE_SYSTEM: "solve",
    SUMMARISE_SYSTEM: "summarise",
    CRITIQUE_SYSTEM: "critique",
    COMPRESS_SYSTEM: "compress",
}
SOLUTION = "17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.\nAnswer: 391"

# An entry of a step's queue: a reply object (sent as JSON), raw text, an exception to raise,
# or a function of the prompt returning one of those.
Entry = dict[str, Any] | str | BaseException | Callable[[str], Any]


def chains_for(prompt: str) -> dict[str, Any]:
    """A valid ChainSet for every label the summarise prompt asks for."""
    labels = re.search(r"labelled (.+)\.\s*$", prompt).group(1).split(", ")
    return {
        "chains": [
            {
                "label": label,
                "premises": [f"premises of {label}"],
                "steps": [f"step of {label}"],
                "conclusion": f"conclusion of {label}",
            }
            for label in labels
        ]
    }


class Teacher:
    """`Teacher(critiques=[…], plans=[…]).model` is the Model to pass; `.steps` what it was asked."""

    def __init__(
        self,
        *,
        critiques: list[Entry] = (),
        plans: list[Entry] = (),
        summaries: list[Entry] = (),
        solution: str = SOLUTION,
        name: str = "scripted:teacher",
    ):
        self.queues: dict[str, list[Entry]] = {
            "critique": list(critiques),
            "compress": list(plans),
            "summarise": list(summaries),
        }
        self.solution = solution
        self.steps: list[str] = []
        self.prompts: dict[str, list[str]] = {step: [] for step in STEPS.values()}
        self.model = ScriptedModel(self._answer, name=name)

    def calls(self, step: str) -> int:
        return self.steps.count(step)

    def _answer(self, messages: list[Message], system: str | None, output: OutputSchema | None) -> str:
        step = STEPS[system]
        prompt = "\n".join(m.text for m in messages)
        self.steps.append(step)
        self.prompts[step].append(prompt)
        if step == "solve":
            return self.solution
        queue = self.queues[step]
        if not queue:
            if step == "summarise":
                return json.dumps(chains_for(messages[0].text))
            if step == "compress":
                return json.dumps({"operations": []})
            raise AssertionError(f"the test scripted no reply for {step} call {self.calls(step)}")
        entry = queue.pop(0)
        if callable(entry) and not isinstance(entry, type):
            entry = entry(prompt)
        if isinstance(entry, BaseException):
            raise entry
        return entry if isinstance(entry, str) else json.dumps(entry)


def critique(*operations: dict[str, Any], analysis: str = "A1 multiplied the tens wrongly.") -> dict[str, Any]:
    return {"analysis": analysis, "operations": list(operations)}


def add(text: str, rationale: str = "") -> dict[str, Any]:
    return {"op": "add", "text": text, "rationale": rationale}


def plan(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"operations": list(operations)}


def without_ledger(dump: dict[str, list[tuple]]) -> tuple[dict[str, list[tuple]], int]:
    """A `dump_database` result without the ledger (and its AUTOINCREMENT counter), and the
    number of ledger rows: a paid model call is recorded even when nothing else may change."""
    dump = dict(dump)
    calls = dump.pop("model_calls", [])
    dump["sqlite_sequence"] = [row for row in dump.get("sqlite_sequence", []) if row[0] != "model_calls"]
    return dump, len(calls)
