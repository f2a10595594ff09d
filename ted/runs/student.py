"""The student at work on one problem, with a library's lessons in its system prompt.

Distillation and evaluation ask the student the same way, so a library is measured with the
prompt it was trained under: [system prompt; experiences] as the system message, the task (its
images, then its text) as the user message, the answer read from the last "Answer:" line. The
trajectory kept is the reply with any reasoning the provider returned apart from it.
"""

from typing import NamedTuple

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


def read_tasks(problems: list[Problem]) -> dict[str, Task]:
    """Each problem's task, its images read once (blocking: run it in a worker thread)."""
    return {p.id: Task.read(p.question, p.images) for p in problems}
