"""Grading an answer against a ground truth, without holding up anyone else.

Three graders, tried in this order:

- **choice**: the ground truth is a multiple-choice letter such as `(B)`; the answer's last
  option letter is compared.
- **exact**: both sides normalised (case, spacing, `\\boxed{}`, `$`, a leading "Answer:",
  a trailing period) and compared as strings; right for yes/no, true/false, word lists.
- **math**: math-verify parses both sides (LaTeX and plain expressions) and checks
  equivalence with sympy, so `0.5`, `1/2` and `\\frac{1}{2}` agree. Used only when the ground
  truth looks like mathematics; otherwise a failed exact match stands.

The first two take microseconds and run where they are called. The third can take seconds
(`(x+1)^{500}` against `(x+1)^{600}` is about six of sympy), so it runs in a small pool of
worker processes: the event loop only waits, and every other request goes on. Each worker does
the work on its own main thread, where math-verify's own timeout (`signal.alarm`) works, and a
hard deadline backs it: a worker that has not answered by then is killed and replaced, and the
answer is graded wrong, as math-verify grades a check that runs out of time. Jobs use at most
all workers but one, so an agent's `record_attempt` always finds one free
(`TED_GRADING_WORKERS`, default 2).
"""

import asyncio
import functools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, NamedTuple

GRADE_TIMEOUT_SECONDS = 5  # math-verify's own limit, per parse and per check
HARD_TIMEOUT_SECONDS = 30  # then the worker is killed

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


def math_equal(answer: str, ground_truth: str) -> bool | None:
    """True/False when the ground truth parses as mathematics, None when it does not.

    Slow and blocking: call it in a worker (`grade` does), where math-verify's timeout works."""
    from math_verify import parse, verify  # sympy takes a second to import: only when grading

    timeout = GRADE_TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None
    gold = parse(ground_truth, parsing_timeout=timeout) or parse(f"${ground_truth}$", parsing_timeout=timeout)
    if not gold:
        return None
    prediction = parse(answer, parsing_timeout=timeout) or parse(f"${answer}$", parsing_timeout=timeout)
    return bool(prediction) and verify(gold, prediction, timeout_seconds=timeout)


# ---- the worker processes ------------------------------------------------------------------
# A worker is `python -m ted.grading`: a fresh interpreter (never a fork of a process with threads
# and open databases, and never a re-import of the caller's main script, which multiprocessing's
# spawn would do), speaking one JSON line per request and per answer on its stdin and stdout.


def _serve() -> None:
    """A worker's main loop: [answer, ground truth] in, true/false/null out, until stdin closes."""
    import math_verify  # noqa: F401 — loaded before the first request, not during it

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server, which stops its workers
    print('"ready"', flush=True)
    for line in sys.stdin:
        try:
            answer, ground_truth = json.loads(line)
            result = math_equal(answer, ground_truth)
        except Exception:  # noqa: BLE001 — a parser crash is a failed match, not a dead worker
            result = False
        print(json.dumps(result), flush=True)


class _Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ted.grading"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # A thread reads the replies, so waiting for one can have a deadline on any platform.
        self.replies: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, name="ted-grader-reader", daemon=True).start()
        if self._reply(HARD_TIMEOUT_SECONDS * 2) != "ready":
            self.kill()
            raise RuntimeError("A grading worker did not start; check that math-verify is installed.")

    def _read(self) -> None:
        for line in self.process.stdout:
            self.replies.put(line)
        self.replies.put("")  # the worker is gone

    def _reply(self, timeout: float) -> object:
        line = self.replies.get(timeout=timeout)  # queue.Empty when it does not answer in time
        if not line:
            raise EOFError
        return json.loads(line)

    def ask(self, answer: str, ground_truth: str) -> bool | None:
        self.process.stdin.write(json.dumps([answer, ground_truth]) + "\n")
        self.process.stdin.flush()
        return self._reply(HARD_TIMEOUT_SECONDS)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)


class GradingPool:
    """Worker processes for math-verify, shared by every event loop of the process."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._started = 0
        self._lock = threading.Lock()
        # Threads that wait on workers: jobs get one fewer than there are workers, so one stays free.
        self._interactive = ThreadPoolExecutor(8, thread_name_prefix="ted-grade")
        self._jobs = ThreadPoolExecutor(max(1, self.size - 1), thread_name_prefix="ted-grade-job")

    def _take(self) -> _Worker:
        """An idle worker, or a new one while there are fewer than `size`; else wait for one."""
        while True:
            with self._lock:
                try:
                    return self._idle.get_nowait()
                except queue.Empty:
                    start = self._started < self.size
                    self._started += start
            if start:
                try:
                    return _Worker()
                except BaseException:
                    with self._lock:
                        self._started -= 1
                    raise
            try:  # woken by a worker coming back; the timeout notices one that was killed instead
                return self._idle.get(timeout=0.2)
            except queue.Empty:
                continue

    def check(self, answer: str, ground_truth: str) -> bool | None:
        """math_equal in a worker; blocking, with the hard deadline."""
        worker = self._take()
        try:
            result = worker.ask(answer, ground_truth)
        except (queue.Empty, EOFError, OSError, ValueError):
            worker.kill()
            with self._lock:
                self._started -= 1
            return False
        self._idle.put(worker)
        return result

    async def math_equal(self, answer: str, ground_truth: str, *, interactive: bool = True) -> bool | None:
        executor = self._interactive if interactive else self._jobs
        # A cancelled caller stops waiting at once; its worker finishes and goes back to the pool.
        return await asyncio.wrap_future(executor.submit(self.check, answer, ground_truth))

    def warm(self) -> None:
        """Start a worker now (blocking), so the first grade does not wait for one; more start on demand."""
        self._idle.put(self._take())


@functools.cache
def pool() -> GradingPool:
    return GradingPool(int(os.environ.get("TED_GRADING_WORKERS") or 2))


# ---- grading -----------------------------------------------------------------------------------


async def grade(answer: str, ground_truth: str, *, interactive: bool = True) -> Grade:
    """The grade of `answer`; `interactive=False` for a job's gradings, which leave a worker free."""
    if choice := _CHOICE.match(ground_truth.strip()):
        return Grade(_choice(answer) == choice.group(1), "choice")
    if normalise(answer) == normalise(ground_truth):
        return Grade(True, "exact")
    if not _LOOKS_MATHEMATICAL.search(ground_truth):
        return Grade(False, "exact")
    math = await pool().math_equal(answer, ground_truth, interactive=interactive)
    if math is None:
        return Grade(False, "exact")
    return Grade(math, "math")


async def grade_attempt(
    ground_truth: str, trajectory: str, answer: str | None = None, *, interactive: bool = True
) -> Grade:
    """An attempt's grade: its `answer`, else the one its trajectory commits to; no answer is wrong."""
    candidate = answer if answer is not None else final_answer(trajectory)
    if candidate is None:
        return Grade(False, "exact")
    return await grade(candidate, ground_truth, interactive=interactive)


_ANSWER_LINE = re.compile(r"\b(?:final\s+)?answer\s*[:=]\s*(.+?)\s*$", re.I | re.M)


def final_answer(trajectory: str) -> str | None:
    """The answer a trajectory commits to: its last 'Answer: …' line, else its last `\\boxed{}`."""
    if lines := _ANSWER_LINE.findall(trajectory):
        return lines[-1]
    if boxed := re.findall(r"\\boxed\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", trajectory):
        return boxed[-1]
    return None


if __name__ == "__main__":
    _serve()
