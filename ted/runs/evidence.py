"""Evidence per lesson: what each lesson of a version does to the student's accuracy.

For a version with L lessons the student answers every problem `samples` times with the whole
version and, for each lesson, with the version less that lesson (each problem given what that
library would serve it): L + 1 arms on the same problems. A lesson's evidence is the mean over
problems of its paired difference (score with the lesson − score without it) with its
percentile bootstrap interval (`ted.runs.report.paired_bootstrap`); a lesson whose removal
helped (evidence below 0) is flagged. Arms that give a problem the same prompt share their
answers (a lesson not served for a problem changes nothing there), so the calls are the distinct
prompts × problems × samples — counted before anything is called, so the estimate is exact and
a measurement over its budget is refused before it costs anything.

Answers are keyed in the ledger under one id per measurement (the version's lessons, the
problems, the samples, the student): the same measurement run again — after a client timed out,
say — pays only for what is missing. The figures are stored with each lesson
(`Store.record_evidence`) for `ted show`, `get_experiences` and compression by evidence.
Measuring changes no lesson and counts no usage.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import fmean

import anyio.to_thread
from pydantic import BaseModel, Field

from ted.errors import InvalidInput, ModelError
from ted.ledger import CostSummary, Ledger
from ted.llm.base import GenerationSettings, Model
from ted.llm.capabilities import require_images
from ted.prompts import experience_prompt
from ted.runs.datasets import Problem
from ted.runs.report import paired_bootstrap
from ted.runs.student import Question, grade_answers, prompt_key, read_tasks
from ted.store import Store
from ted.store.records import (
    BootstrapInterval,
    ExperienceItem,
    LessonEvidence,
    VersionChoice,
    text_sha,
)
from ted.store.selection import LessonIndex, select
from ted.tasks import Task

WHOLE = ""  # the arm with every lesson; the others are named by the lesson they leave out


class EvidenceEstimate(BaseModel):
    """What measuring a version's lessons will cost, before any call."""

    library: str
    version: int
    lessons: int
    problems: int
    samples: int
    calls: int = Field(description="Student answers needed: distinct prompts × problems × samples.")
    upper_bound: int = Field(description="(lessons + 1) × problems × samples, before shared prompts are counted once.")


class LessonMeasure(BaseModel):
    id: str
    text: str
    without_accuracy: float = Field(description="The student's accuracy with the version less this lesson.")
    difference: float = Field(description="Accuracy with the whole version minus without this lesson.")
    interval: BootstrapInterval
    flagged: bool = Field(description="Removing the lesson helped.")


class EvidenceReport(BaseModel):
    """`ted evidence`: each lesson of a version measured against its absence, on the same problems."""

    kind: str = "evidence"
    library: str
    version: int
    dataset: str
    student: str
    n_problems: int
    samples: int
    accuracy: float = Field(description="The student's accuracy with the whole version.")
    lessons: list[LessonMeasure] = Field(description="Best evidence first.")
    calls: int = Field(description="Answers the measurement needed (some may have been paid by an earlier run).")
    failed_calls: int
    cost: CostSummary
    created_at: datetime


@dataclass
class Measurement:
    """One measurement worked out before any call: every arm's prompt for every problem."""

    library: str
    version: int
    lessons: list[ExperienceItem]
    problems: list[Problem]
    samples: int
    prompts: dict[str, dict[str, str]]  # arm → problem id → prompt

    def ledger_id(self, student: str, settings: GenerationSettings | None) -> str:
        """The id its answers are kept under in the ledger: the same measurement replays them."""
        measured = [
            self.library,
            [(e.id, e.text) for e in self.lessons],
            [(p.id, p.question, p.answer, p.images) for p in self.problems],
            self.samples,
            student,
            (settings or GenerationSettings()).model_dump(),
        ]
        return "evidence-" + hashlib.sha256(json.dumps(measured).encode()).hexdigest()[:12]

    def estimate(self) -> EvidenceEstimate:
        distinct = sum(len({arm[p.id] for arm in self.prompts.values()}) for p in self.problems)
        return EvidenceEstimate(
            library=self.library,
            version=self.version,
            lessons=len(self.lessons),
            problems=len(self.problems),
            samples=self.samples,
            calls=distinct * self.samples,
            upper_bound=(len(self.lessons) + 1) * len(self.problems) * self.samples,
        )

    def within(self, max_calls: int) -> EvidenceEstimate:
        """The estimate, or InvalidInput when it is over the budget of `max_calls` answers."""
        guess = self.estimate()
        if max_calls < 1:
            raise InvalidInput(f"max_calls must be at least 1 (it was {max_calls}).")
        if guess.calls > max_calls:
            raise InvalidInput(
                f"Measuring the {guess.lessons} lessons of {self.library!r} v{self.version} on {guess.problems} "
                f"problems × {self.samples} samples takes {guess.calls:,} answers, over the budget of {max_calls:,}: "
                f"raise the budget, or use fewer problems (about {max_calls * guess.problems // guess.calls} fit) "
                "or samples. Nothing was called."
            )
        return guess

    def questions(self, tasks: dict[str, Task]) -> dict[tuple[str, str, int], Question]:
        """Each distinct (problem, prompt, sample) once."""
        return {
            (p.id, prompt_key(prompts[p.id]), k): Question(tasks[p.id], p.answer, prompts[p.id])
            for prompts in self.prompts.values()
            for p in self.problems
            for k in range(self.samples)
        }

    def scores(self, grades: dict[tuple[str, str, int], bool], arm: str) -> list[float]:
        """Each problem's score in one arm: the share of its samples graded correct."""
        return [
            fmean(grades[p.id, prompt_key(self.prompts[arm][p.id]), k] for k in range(self.samples))
            for p in self.problems
        ]

    def measures(self, grades: dict[tuple[str, str, int], bool], seed: int) -> list[LessonMeasure]:
        whole = self.scores(grades, WHOLE)
        measured = []
        for lesson in self.lessons:
            without = self.scores(grades, lesson.id)
            differences = [w - o for w, o in zip(whole, without, strict=True)]
            difference = fmean(differences)
            measured.append(
                LessonMeasure(
                    id=lesson.id,
                    text=lesson.text,
                    without_accuracy=fmean(without),
                    difference=difference,
                    interval=paired_bootstrap(differences, seed=seed),
                    flagged=difference < 0,
                )
            )
        return sorted(measured, key=lambda m: -m.difference)


async def plan_evidence(
    store: Store, library: str, problems: list[Problem], *, version: VersionChoice = "served", samples: int = 1
) -> Measurement:
    """Every arm's prompt for every problem, and so the exact cost; nothing is called."""
    if samples < 1:
        raise InvalidInput(f"samples must be at least 1 (it was {samples}).")
    await store.library_state(library)  # a typo is not an empty library
    whole, settings = await store.whole_prompt(library, version)
    if not whole.items:
        raise InvalidInput(f"Version {whole.version} of {library!r} has no lessons to measure.")
    index = LessonIndex()  # this measurement's own: its arms must not push the served versions out

    def served(lessons: list[ExperienceItem], task: str) -> str:
        if settings.selection == "relevant":
            return select(lessons, task, settings, index).prompt
        return experience_prompt((e.id, e.text) for e in lessons)

    arms = {WHOLE: whole.items} | {e.id: [i for i in whole.items if i.id != e.id] for e in whole.items}
    prompts = {arm: {p.id: served(lessons, p.question) for p in problems} for arm, lessons in arms.items()}
    return Measurement(library, whole.version, whole.items, problems, samples, prompts)


async def measure_evidence(
    store: Store,
    ledger: Ledger,
    student: Model,
    measurement: Measurement,
    *,
    dataset: str,
    max_calls: int,
    concurrency: int = 8,
    settings: GenerationSettings | None = None,
    seed: int = 0,
    on_answer: Callable[[bool], None] | None = None,
) -> EvidenceReport:
    """Measure each lesson (`plan_evidence` made the measurement) and store the figures with the lessons.

    Refused, before any call, when it needs more than `max_calls` answers.
    """
    if concurrency < 1:
        raise InvalidInput(f"concurrency must be at least 1 (it was {concurrency}).")
    m, guess = measurement, measurement.within(max_calls)
    tasks = await anyio.to_thread.run_sync(read_tasks, m.problems)
    if any(task.images for task in tasks.values()):
        require_images(student.name, "this dataset")
    kept_as = m.ledger_id(student.name, settings)

    def bind(key: tuple[str, str, int]) -> Model:
        problem, prompt, sample = key
        return ledger.bind(
            student,
            "evidence",
            library=m.library,
            task_id=tasks[problem].id,
            job_id=kept_as,
            key=f"{prompt}/{problem}/s{sample}",
            settings=settings,
        )

    grades, failures = await grade_answers(bind, m.questions(tasks), limit=concurrency, on_answer=on_answer)
    if len(failures) == guess.calls:
        raise ModelError(f"Every call to {student.name} failed, so nothing was measured; the first: {failures[0]}")
    report = EvidenceReport(
        library=m.library,
        version=m.version,
        dataset=dataset,
        student=student.name,
        n_problems=guess.problems,
        samples=m.samples,
        accuracy=fmean(m.scores(grades, WHOLE)),
        lessons=m.measures(grades, seed),
        calls=guess.calls,
        failed_calls=len(failures),
        cost=CostSummary.from_totals(await ledger.totals(job_id=kept_as)),
        created_at=datetime.now(UTC),
    )
    await store.record_evidence(m.library, {lesson.id: _stored(lesson, report) for lesson in report.lessons})
    return report


def _stored(measure: LessonMeasure, report: EvidenceReport) -> LessonEvidence:
    return LessonEvidence(
        difference=measure.difference,
        low=measure.interval.low,
        high=measure.interval.high,
        problems=report.n_problems,
        flagged=measure.flagged,
        version=report.version,
        dataset=report.dataset,
        samples=report.samples,
        interval=measure.interval,
        measured_at=report.created_at,
        text_sha=text_sha(measure.text),
    )
