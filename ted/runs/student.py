"""The student at work on one problem, with a library's lessons in its system prompt.

Distillation and evaluation ask the student the same way, so a library is measured with the
prompt it was trained under: [system prompt; experiences] as the system message, the task (its
images, then its text) as the user message, the answer read from the last "Answer:" line. The
trajectory kept is the reply with any reasoning the provider returned apart from it.
"""

import hashlib
from collections.abc import Callable, Hashable, Mapping
from typing import NamedTuple, TypeVar

import anyio

from ted.errors import ModelError, ModelRefused
from ted.grading import Grade, final_answer, grade_attempt
from ted.llm.base import Model
from ted.prompts import student_system
from ted.runs.datasets import Problem
from ted.tasks import Task


class StudentAnswer(NamedTuple):
    text: str
    answer: str | None
    grade: Grade


async def answer(student: Model, task: Task, ground_truth: str, experiences: str) -> StudentAnswer:
    """The student's graded answer; raises ModelError when the call fails."""
    completion = await student.complete([task.message(task.text)], system=student_system(experiences))
    answer = final_answer(completion.text)
    grade = await grade_attempt(ground_truth, completion.text, answer, interactive=False)
    return StudentAnswer(completion.transcript, answer, grade)


K = TypeVar("K", bound=Hashable)


class Question(NamedTuple):
    """One answer to ask for: the task, its ground truth, the experience block in the prompt."""

    task: Task
    ground_truth: str
    experiences: str


async def grade_answers(
    student: Callable[[K], Model],
    questions: Mapping[K, Question],
    *,
    limit: int,
    on_answer: Callable[[bool], None] | None = None,
) -> tuple[dict[K, bool], list[ModelError]]:
    """Every question answered (through `student(key)`, `limit` at a time) and graded.

    A failed call counts as a wrong answer and is returned with the failures (dropping it would
    flatter whichever arm failed more); one no retry can fix (ModelRefused) ends it all.
    """
    grades: dict[K, bool] = {}
    failures: list[ModelError] = []
    limiter = anyio.CapacityLimiter(limit)

    async def ask(key: K, question: Question) -> None:
        async with limiter:
            try:
                reply = await answer(student(key), question.task, question.ground_truth, question.experiences)
                correct = reply.grade.correct
            except ModelRefused:
                raise
            except ModelError as e:
                failures.append(e)
                correct = False
        grades[key] = correct
        if on_answer:
            on_answer(correct)

    async with anyio.create_task_group() as tg:
        for key, question in questions.items():
            tg.start_soon(ask, key, question)
    return grades, failures


def prompt_key(experiences: str) -> str:
    """A short name for an experience block: answers to the same block are the same answers."""
    return hashlib.sha256(experiences.encode()).hexdigest()[:16]


def read_tasks(problems: list[Problem]) -> dict[str, Task]:
    """Each problem's task, its images read once (blocking: run it in a worker thread)."""
    return {p.id: Task.read(p.question, p.images) for p in problems}
