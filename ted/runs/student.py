"""The student at work on one problem, with a library's lessons in its system prompt.

Distillation and evaluation ask the student the same way, so a library is measured with the
prompt it was trained under: [system prompt; experiences] as the system message, the problem
(its text and images) as the user message, the answer read from the last "Answer:" line.
"""

from typing import NamedTuple

from ted.grading import Grade, final_answer, grade_attempt
from ted.llm.base import ImagePart, Message, Model
from ted.prompts import student_system
from ted.runs.datasets import Problem


class StudentAnswer(NamedTuple):
    text: str
    answer: str | None
    grade: Grade


def student_messages(problem: Problem) -> list[Message]:
    images = [
        ImagePart(url=ref) if "://" in ref or ref.startswith("data:") else ImagePart.from_path(ref)
        for ref in problem.images
    ]
    return [Message.user(problem.question, *images)]


async def answer(student: Model, problem: Problem, experiences: str, *, max_tokens: int) -> StudentAnswer:
    """The student's graded answer; raises ModelError when the call fails."""
    completion = await student.complete(
        student_messages(problem), system=student_system(experiences), max_tokens=max_tokens
    )
    answer = final_answer(completion.text)
    return StudentAnswer(completion.text, answer, grade_attempt(problem.answer, completion.text, answer))
