"""Grading an answer against a ground truth.

Three graders, tried in this order:

- **choice**: the ground truth is a multiple-choice letter such as `(B)`; the answer's last
  option letter is compared.
- **exact**: both sides normalised (case, spacing, `\\boxed{}`, `$`, a leading "Answer:",
  a trailing period) and compared as strings; right for yes/no, true/false, word lists.
- **math**: math-verify parses both sides (LaTeX and plain expressions) and checks
  equivalence with sympy, so `0.5`, `1/2` and `\\frac{1}{2}` agree. Used only when the ground
  truth parses as mathematics; otherwise a failed exact match stands.

math-verify bounds its own work with `signal.alarm`, which only works on the main thread.
The server grades on its event loop, which runs on the main thread, so the timeout stays on;
on any other thread it is switched off rather than crashing.
"""

import re
import threading
from typing import Literal, NamedTuple

GRADE_TIMEOUT_SECONDS = 5

_CHOICE = re.compile(r"^\(?([A-Z])\)?$")
_CHOICE_IN_ANSWER = re.compile(r"\(([A-Z])\)|^\s*([A-Z])\s*[.)]?\s*$|answer is\s*\(?([A-Z])\b")
_BOXED = re.compile(r"\\boxed\s*\{(.*)\}", re.S)
# Words such as "valid" parse as sympy symbols; only a ground truth with a digit, a LaTeX
# command or an operator is treated as mathematics.
_LOOKS_MATHEMATICAL = re.compile(r"[0-9\\^=+*/π∞√]")
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is)?\s*[:=]?\s*", re.I)


class Grade(NamedTuple):
    correct: bool
    method: Literal["math", "choice", "exact"]


def normalise(text: str) -> str:
    text = text.strip()
    if boxed := _BOXED.search(text):
        text = boxed.group(1)
    text = _ANSWER_PREFIX.sub("", text.strip()).strip().strip("$").strip()
    text = text.rstrip(".").strip()
    return " ".join(text.lower().split())


def _choice(answer: str) -> str | None:
    letters = [next(g for g in m.groups() if g) for m in _CHOICE_IN_ANSWER.finditer(answer.strip())]
    return letters[-1] if letters else None


def _math_equal(answer: str, ground_truth: str) -> bool | None:
    """True/False when the ground truth is mathematics, None when it is not."""
    if not _LOOKS_MATHEMATICAL.search(ground_truth):
        return None
    from math_verify import parse, verify  # sympy takes a second to import: only when grading

    timeout = GRADE_TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None
    gold = parse(ground_truth, parsing_timeout=timeout) or parse(f"${ground_truth}$", parsing_timeout=timeout)
    if not gold:
        return None
    prediction = parse(answer, parsing_timeout=timeout) or parse(f"${answer}$", parsing_timeout=timeout)
    return bool(prediction) and verify(gold, prediction, timeout_seconds=timeout)


def grade(answer: str, ground_truth: str) -> Grade:
    if choice := _CHOICE.match(ground_truth.strip()):
        return Grade(_choice(answer) == choice.group(1), "choice")
    if normalise(answer) == normalise(ground_truth):
        return Grade(True, "exact")
    math = _math_equal(answer, ground_truth)
    if math is None:
        return Grade(False, "exact")
    return Grade(math, "math")


def grade_attempt(ground_truth: str, trajectory: str, answer: str | None = None) -> Grade:
    """An attempt's grade: its `answer`, else the one its trajectory commits to; no answer is wrong."""
    candidate = answer if answer is not None else final_answer(trajectory)
    if candidate is None:
        return Grade(False, "exact")
    return grade(candidate, ground_truth)


_ANSWER_LINE = re.compile(r"\b(?:final\s+)?answer\s*[:=]\s*(.+?)\s*$", re.I | re.M)


def final_answer(trajectory: str) -> str | None:
    """The answer a trajectory commits to: its last 'Answer: …' line, else its last `\\boxed{}`."""
    if lines := _ANSWER_LINE.findall(trajectory):
        return lines[-1]
    if boxed := re.findall(r"\\boxed\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", trajectory):
        return boxed[-1]
    return None
