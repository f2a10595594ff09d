"""A deterministic student and teacher for tests and benchmarks of the whole TED loop.

The problems are arithmetic in three skills (addition, subtraction, multiplication). The
student always adds correctly, and subtracts or multiplies correctly only once the library in
its system prompt holds the helpful lesson about that skill (`LESSONS`). A harmful lesson
(`HARMFUL`, a rounding shortcut) makes it wrong on that lesson's skill and on addition, whatever
else the prompt holds. The teacher solves, summarises, critiques (proposing, for a wrong group,
the lesson `teaches` names for its skill: the helpful one unless told otherwise) and compresses
(dropping the least-used lesson). Every answer is a pure function of the request, so a run and a
resumed run see the same replies, and the same script serves an in-process `ScriptedModel` and
the HTTP `ModelServer`:

    classroom = Classroom()
    models = classroom.models()                         # name → ScriptedModel, for build_server
    with ModelServer(classroom.reply_to_request): ...   # the same, over real HTTP

It tells what a request asks for by its reply schema, never by the prompt's wording: no schema
is the student; `Solution`, `Summary`, `CritiqueReply` and `CompressionPlan` are the teacher's
steps, and the schema says the rest (the labels of the traces to summarise, the wrong attempts
to diagnose, the lesson ids in priority order). From the text it reads only data: the task's
question and the lessons' own words.

`models(before=hook)` awaits `hook(step, problem, text)` before each answer — `step` is one of
student, solve, summarise, critique, compress and `problem` the index `i` of `problems(n)[i]`
the request is about — so a test can delay, block, fail or interrupt any one call.
"""

import json
import operator
import re
from collections.abc import Awaitable, Callable
from typing import Any

from ted.llm.base import Message, OutputSchema
from ted.llm.scripted import ScriptedModel
from ted.testing.model_server import RecordedRequest

SKILLS = {"+": "addition", "-": "subtraction", "*": "multiplication"}
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
LESSONS = {
    "subtraction": "For subtraction, take the second number away from the first and check by adding it back.",
    "multiplication": "For multiplication, split the second factor into tens and units and add the partial products.",
    "addition": "For addition, line up the units before carrying.",
}
# Each spoils its own skill and addition ("the same shortcut works for sums").
HARMFUL = {
    "subtraction": "For subtraction, round both numbers to the nearest ten first; the same shortcut works for sums.",
    "multiplication": "For multiplication, round both factors to the nearest ten first; the same shortcut works for "
    "sums.",
    "addition": "For addition, round both numbers to the nearest ten first.",
}
STEPS = {"Solution": "solve", "Summary": "summarise", "CritiqueReply": "critique", "CompressionPlan": "compress"}
_QUESTION = re.compile(r"What is (\d+) ([-+*]) (\d+)\?")
Hook = Callable[[str, int | None, str], Awaitable[None]]


def step_of(output: OutputSchema | None) -> str:
    """Which step a request is, by its reply schema: student, solve, summarise, critique or compress."""
    return "student" if output is None else STEPS[output.name]


def problem_of(text: str) -> int | None:
    """The index i of the `problems(n)[i]` a request is about (it asks about 12 + 7i), if any."""
    found = _QUESTION.search(text)
    return None if found is None else (int(found.group(1)) - 12) // 7


def required(schema: dict[str, Any], field: str) -> list[str]:
    """The keys a reply schema requires in its object `field`: a Summary's trace labels
    (`chains`), a critique's wrong attempts (`diagnoses`)."""
    return list(schema["properties"][field]["required"])


def lesson_ids(schema: dict[str, Any]) -> list[str]:
    """The lesson ids a reply schema offers (the enum of an `id` property), in the order given."""
    for definition in schema.get("$defs", {}).values():
        if enum := definition.get("properties", {}).get("id", {}).get("enum"):
            return list(enum)
    return []


def chain(label: str) -> dict[str, Any]:
    return {"premises": [f"the numbers of {label}"], "steps": [f"combine them ({label})"], "conclusion": "the result"}


def problems(n: int, *, skills: str = "+-*", named: bool = False, first: int = 0) -> list[dict]:
    """`n` problems cycling through the skills, with their answers: dataset items. `named` adds the
    skill's name to the question ("What is 19 - 8? (subtraction)"); `first` starts at p<first>."""
    items = []
    for i in range(first, first + n):
        op = skills[i % len(skills)]
        a, b = 12 + 7 * i, 3 + (5 * i) % 17
        question = f"What is {a} {op} {b}?" + (f" ({SKILLS[op]})" if named else "")
        items.append({"id": f"p{i}", "question": question, "answer": str(OPERATORS[op](a, b))})
    return items


def spoiled(text: str) -> set[str]:
    """The skills the harmful lessons in `text` spoil: their own, and addition."""
    skills = {skill for skill, lesson in HARMFUL.items() if lesson in text}
    return skills | {"addition"} if skills else skills


class Classroom:
    def __init__(
        self,
        *,
        student: str = "scripted:student",
        teacher: str = "scripted:teacher",
        teaches: dict[str, str] | None = None,
    ):
        self.student, self.teacher = student, teacher
        self.teaches = {**LESSONS, **(teaches or {})}

    def reply(self, text: str, output: OutputSchema | None) -> str:
        """The answer to a request whose whole text (system prompt and messages) is `text`."""
        step = step_of(output)
        if step == "compress":
            return self._compress(output.json_schema)
        if step == "summarise":
            return json.dumps({"chains": {label: chain(label) for label in required(output.json_schema, "chains")}})
        if step == "critique":
            return self._critique(text, output.json_schema)
        a, op, b = _QUESTION.search(text).groups()
        right = OPERATORS[op](int(a), int(b))
        if step == "solve":
            return json.dumps({"reasoning": f"Work it out: {a} {op} {b} = {right}.", "answer": str(right)})
        skill = SKILLS[op]
        if skill in spoiled(text):
            shortcut = next(re.search(rf"\[(E\d+)\] {re.escape(h)}", text) for h in HARMFUL.values() if h in text)
            cited = f" [{shortcut.group(1)}]" if shortcut else ""
            return f"I round first{cited}: {a} {op} {b} is about {right + 1}.\nAnswer: {right + 1}"
        cited = re.search(rf"\[(E\d+)\] {re.escape(LESSONS[skill])}", text)
        if skill == "addition" or cited:
            citation = f" [{cited.group(1)}]" if cited else ""
            return f"I apply the method{citation}: {a} {op} {b} = {right}.\nAnswer: {right}"
        return f"I guess roughly: {a} {op} {b} is about {right + 1}.\nAnswer: {right + 1}"

    def _critique(self, text: str, schema: dict[str, Any]) -> str:
        skill = SKILLS[_QUESTION.search(text).group(2)]
        diagnoses = {
            label: {"first_divergent_step": "Step 1: combine them", "error_class": "wrong_method"}
            for label in required(schema, "diagnoses")
        }
        reply = {"analysis": f"The {skill} lesson exists.", "diagnoses": diagnoses, "operations": []}
        if self.teaches[skill] not in text:
            operation = {"op": "add", "text": self.teaches[skill], "rationale": f"The attempts got the {skill} wrong."}
            reply |= {"analysis": f"The student has no method for {skill}.", "operations": [operation]}
        return json.dumps(reply)

    def _compress(self, schema: dict[str, Any]) -> str:
        ids = lesson_ids(schema)  # lowest priority first
        if not ids:
            return json.dumps({"operations": []})
        return json.dumps(
            {
                "operations": [{"op": "delete", "id": ids[0], "reason": "least used"}]
                + [{"op": "retain", "id": id_} for id_ in ids[1:]]
            }
        )

    def reply_to_request(self, request: RecordedRequest) -> str:
        """The `ModelServer` script."""
        return self.reply(request.prompt, request.output)

    def model(self, name: str, before: Hook | None = None) -> ScriptedModel:
        async def answer(messages: list[Message], system: str | None, output: OutputSchema | None) -> str:
            text = "\n".join([system or "", *(m.text for m in messages)])
            if before is not None:
                await before(step_of(output), problem_of(text), text)
            return self.reply(text, output)

        return ScriptedModel(answer, name=name)

    def models(self, before: Hook | None = None) -> Callable[[str], ScriptedModel]:
        """A `models` resolver for `build_server` and `run_job`: the same classroom under any name,
        each name one model (so its `calls` count), with `before` awaited ahead of every answer."""
        cache: dict[str, ScriptedModel] = {}
        return lambda name: cache.setdefault(name, self.model(name, before))
