"""A deterministic student and teacher for tests and benchmarks of the whole TED loop.

The problems are arithmetic in three skills (addition, subtraction, multiplication). The
student always adds correctly, and subtracts or multiplies correctly only once the library in
its system prompt holds a lesson about that skill; the teacher solves, summarises, critiques
(adding the missing skill's lesson) and compresses (dropping the least-used lesson). Every
answer is a pure function of the request, so a run and a resumed run see the same replies,
and the same script serves an in-process `ScriptedModel` and the HTTP `ModelServer`:

    classroom = Classroom()
    models = classroom.models()                         # name → ScriptedModel, for build_server
    with ModelServer(classroom.reply_to_request): ...   # the same, over real HTTP

`models(before=hook)` awaits `hook(step, problem, text)` before each answer — `step` is one of
student, solve, summarise, critique, compress and `problem` the index `i` of `problems(n)[i]`
the request is about — so a test can delay, block, fail or interrupt any one call.
"""

import json
import operator
import re
from collections.abc import Awaitable, Callable

from ted.llm.base import Message, OutputSchema
from ted.llm.scripted import ScriptedModel
from ted.prompts import COMPRESS_SYSTEM, CRITIQUE_SYSTEM, STUDENT_SYSTEM, SUMMARISE_SYSTEM, TEACHER_SOLVE_SYSTEM
from ted.testing.model_server import RecordedRequest

SKILLS = {"+": "addition", "-": "subtraction", "*": "multiplication"}
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
LESSONS = {
    "subtraction": "For subtraction, take the second number away from the first and check by adding it back.",
    "multiplication": "For multiplication, split the second factor into tens and units and add the partial products.",
    "addition": "For addition, line up the units before carrying.",
}
_QUESTION = re.compile(r"What is (\d+) ([-+*]) (\d+)\?")
_STEPS = (
    (COMPRESS_SYSTEM, "compress"),
    (CRITIQUE_SYSTEM, "critique"),
    (SUMMARISE_SYSTEM, "summarise"),
    (TEACHER_SOLVE_SYSTEM, "solve"),
)
Hook = Callable[[str, int | None, str], Awaitable[None]]


def step_of(text: str) -> str:
    """Which request a whole request text is: student, solve, summarise, critique or compress."""
    return next((name for marker, name in _STEPS if marker in text), "student")


def problem_of(text: str) -> int | None:
    """The index i of the `problems(n)[i]` a request is about (it asks about 12 + 7i), if any."""
    found = _QUESTION.search(text.split("## Task", 1)[-1])
    return None if found is None else (int(found.group(1)) - 12) // 7


def problems(n: int, *, skills: str = "+-*") -> list[dict]:
    """`n` problems cycling through the skills, with their answers: dataset items."""
    items = []
    for i in range(n):
        op = skills[i % len(skills)]
        a, b = 12 + 7 * i, 3 + (5 * i) % 17
        items.append({"id": f"p{i}", "question": f"What is {a} {op} {b}?", "answer": str(OPERATORS[op](a, b))})
    return items


class Classroom:
    def __init__(self, *, student: str = "scripted:student", teacher: str = "scripted:teacher"):
        self.student, self.teacher = student, teacher

    def reply(self, text: str) -> str:
        """The answer to a request whose whole text (system prompt and messages) is `text`."""
        if COMPRESS_SYSTEM in text:
            return self._compress(text)
        if CRITIQUE_SYSTEM in text:
            return self._critique(text)
        if SUMMARISE_SYSTEM in text:
            labels = re.search(r"labelled (.+)\.\s*$", text).group(1).split(", ")
            return json.dumps(
                {
                    "chains": [
                        {
                            "label": label,
                            "premises": ["the two numbers"],
                            "steps": ["combine them"],
                            "conclusion": "the result",
                        }
                        for label in labels
                    ]
                }
            )
        question = _QUESTION.search(text)
        a, op, b = question.groups()
        right = OPERATORS[op](int(a), int(b))
        if TEACHER_SOLVE_SYSTEM in text:
            return f"Work it out: {a} {op} {b} = {right}.\nAnswer: {right}"
        assert STUDENT_SYSTEM in text, "a request the classroom does not know"
        skill = SKILLS[op]
        cited = re.search(rf"\[(E\d+)\] For {skill}", text)
        if skill == "addition" or cited:
            citation = f" [{cited.group(1)}]" if cited else ""
            return f"I apply the method{citation}: {a} {op} {b} = {right}.\nAnswer: {right}"
        return f"I guess roughly: {a} {op} {b} is about {right + 1}.\nAnswer: {right + 1}"

    def _critique(self, text: str) -> str:
        task = text.split("## Task", 1)[1]
        skill = SKILLS[_QUESTION.search(task).group(2)]
        library = text.split("## Current library", 1)[1].split("## Task", 1)[0]
        if f"For {skill}" in library:
            return json.dumps({"analysis": f"The {skill} lesson exists.", "operations": []})
        operation = {"op": "add", "text": LESSONS[skill], "rationale": f"The attempts got the {skill} wrong."}
        return json.dumps({"analysis": f"The student has no method for {skill}.", "operations": [operation]})

    def _compress(self, text: str) -> str:
        items = re.findall(r"\[(E\d+)\] priority=([\d.]+) usage=(\d+)", text)
        if not items:
            return json.dumps({"operations": []})
        least = min(items, key=lambda item: (float(item[1]), int(item[0][1:])))[0]
        return json.dumps(
            {
                "operations": [{"op": "delete", "id": least, "reason": "least used"}]
                + [{"op": "retain", "id": id_} for id_, _, _ in items if id_ != least]
            }
        )

    def reply_to_request(self, request: RecordedRequest) -> str:
        """The `ModelServer` script."""
        return self.reply(request.prompt)

    def model(self, name: str, before: Hook | None = None) -> ScriptedModel:
        async def answer(messages: list[Message], system: str | None, output: OutputSchema | None) -> str:
            text = "\n".join([system or "", *(m.text for m in messages)])
            if before is not None:
                await before(step_of(text), problem_of(text), text)
            return self.reply(text)

        return ScriptedModel(answer, name=name)

    def models(self, before: Hook | None = None) -> Callable[[str], ScriptedModel]:
        """A `models` resolver for `build_server` and `run_job`: the same classroom under any name,
        each name one model (so its `calls` count), with `before` awaited ahead of every answer."""
        cache: dict[str, ScriptedModel] = {}
        return lambda name: cache.setdefault(name, self.model(name, before))
