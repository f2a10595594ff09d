"""A scripted teacher for critique and compression tests: one ScriptedModel that answers each
teacher step (solve, summarise, critique, compress) by the reply schema it was asked for — its
name, the labels and ids the schema offers — never by the prompt's wording, and records which
steps were asked for, so a test can assert what was (not) called."""

import json
from collections.abc import Callable
from typing import Any

from ted.llm.base import Message, OutputSchema
from ted.llm.scripted import ScriptedModel
from ted.testing.classroom import STEPS, chain, required

SOLUTION = {"reasoning": "17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.", "answer": "391"}

# An entry of a step's queue: a reply object (sent as JSON), raw text, an exception to raise,
# or a function of (prompt, schema) returning one of those.
Entry = dict[str, Any] | str | BaseException | Callable[[str, dict], Any]


def chains_for(schema: dict[str, Any]) -> dict[str, Any]:
    """A valid Summary for every label the summary's schema requires."""
    return {"chains": {label: chain(label) for label in required(schema, "chains")}}


class Teacher:
    """`Teacher(critiques=[…], plans=[…]).model` is the Model to pass; `.steps` what it was asked."""

    def __init__(
        self,
        *,
        critiques: list[Entry] = (),
        plans: list[Entry] = (),
        summaries: list[Entry] = (),
        solutions: list[Entry] = (),
        name: str = "scripted:teacher",
    ):
        self.queues: dict[str, list[Entry]] = {
            "solve": list(solutions),
            "critique": list(critiques),
            "compress": list(plans),
            "summarise": list(summaries),
        }
        self.steps: list[str] = []
        self.prompts: dict[str, list[str]] = {step: [] for step in STEPS.values()}
        self.schemas: dict[str, list[dict]] = {step: [] for step in STEPS.values()}
        self.model = ScriptedModel(self._answer, name=name)

    def calls(self, step: str) -> int:
        return self.steps.count(step)

    def _answer(self, messages: list[Message], system: str | None, output: OutputSchema | None) -> str:
        step = STEPS[output.name]
        prompt = "\n".join(m.text for m in messages)
        self.steps.append(step)
        self.prompts[step].append(prompt)
        self.schemas[step].append(output.json_schema)
        queue = self.queues[step]
        if not queue:
            if step == "critique":
                raise AssertionError(f"the test scripted no reply for critique call {self.calls(step)}")
            defaults = {"solve": lambda: SOLUTION, "summarise": lambda: chains_for(output.json_schema)}
            return json.dumps(defaults.get(step, lambda: {"operations": []})())
        entry = queue.pop(0)
        if callable(entry) and not isinstance(entry, type):
            entry = entry(prompt, output.json_schema)
        if isinstance(entry, BaseException):
            raise entry
        return entry if isinstance(entry, str) else json.dumps(entry)


def critique(*operations: dict[str, Any], analysis: str = "A1 multiplied the tens wrongly.") -> Callable:
    """A critique reply with these operations, diagnosing every wrong attempt its schema asks about."""

    def reply(prompt: str, schema: dict) -> dict[str, Any]:
        diagnoses = {
            label: {"first_divergent_step": "Step 2: 17 * 3 = 41", "error_class": "calculation"}
            for label in required(schema, "diagnoses")
        }
        return {"analysis": analysis, "diagnoses": diagnoses, "operations": list(operations)}

    return reply


def add(text: str, rationale: str = "") -> dict[str, Any]:
    return {"op": "add", "text": text, "rationale": rationale}


def rewrite(id_: str, text: str, rationale: str = "") -> dict[str, Any]:
    return {"op": "rewrite", "id": id_, "text": text, "rationale": rationale}


def delete(id_: str, rationale: str = "") -> dict[str, Any]:
    return {"op": "delete", "id": id_, "rationale": rationale}


def plan(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"operations": list(operations)}


def without_ledger(dump: dict[str, list[tuple]]) -> tuple[dict[str, list[tuple]], int]:
    """A `dump_database` result without the ledger (its totals and AUTOINCREMENT counter), and the
    number of ledger rows: a paid model call is recorded even when nothing else may change."""
    dump = dict(dump)
    calls = dump.pop("model_calls", [])
    dump.pop("ledger_totals", None)
    dump["sqlite_sequence"] = [row for row in dump.get("sqlite_sequence", []) if row[0] != "model_calls"]
    return dump, len(calls)
