"""Promotion on held-out evidence: during a distillation, the working version against the served one.

After each epoch (or every `validation.every` batches, and after the last batch), the student
answers every validation problem `validation.samples` times with the working version's lessons
and as many times with the served version's — each problem given the lessons the version
serves for it — and the two are compared problem by problem: the difference is the mean of the
per-problem paired differences (working − served), with its percentile bootstrap interval
(`ted.runs.report.paired_bootstrap`, seeded with the job's seed). The working version is
promoted when the difference is at least `-margin` and every answer could be had; otherwise it
is refused and the served version stays served. With `keep="best"` a refusal also rolls the
working version back to the served one's lessons, so the job goes on from the best version.

An answer is keyed in the ledger by the prompt it was given, the problem and the sample: a prompt
asked before (the served version was the working one at an earlier round, or a rollback gave
back its lessons) is answered from the ledger, not paid again, and a resumed job pays for no
answer twice. So each round after the first costs one version's answers, and the two arms of a
problem whose prompts are the same are the same answers. The decision, the job's figures and
any rollback are written in one transaction.
"""

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from statistics import fmean

import anyio

from ted.errors import Conflict
from ted.ledger import Ledger
from ted.llm.base import Model
from ted.prompts import experience_prompt
from ted.runs.datasets import Problem
from ted.runs.jobs import Job, ValidationRound
from ted.runs.report import paired_bootstrap
from ted.runs.student import Question, grade_answers, prompt_key
from ted.store import Store, serving
from ted.store.records import LibraryState, SnapshotItem, ValidationFigures
from ted.tasks import Task
from ted.tokens import count_tokens

# Writes the round into the job's figures, inside the decision's transaction, with the library a
# rollback left (version, lessons, tokens), None when there was none.
Save = Callable[[sqlite3.Connection, ValidationRound, tuple[int, int, int] | None], None]


@dataclass
class Validation:
    store: Store
    ledger: Ledger
    student: Model
    job: Job
    problems: list[Problem]
    tasks: dict[str, Task]

    async def run(self, epoch: int, batches_done: int, save: Save) -> ValidationRound:
        """Compare the working version with the served one, decide, and write the decision."""
        params, library = self.job.params, self.job.params.library
        state = await self.store.library_state(library)
        served = state.version if state.served_version is None else state.served_version
        served_lessons = (await self.store.version(library, served)).snapshot
        figures = await self._compare(served, state.version)
        same = [(i.id, i.text) for i in served_lessons] == [(e.id, e.text) for e in state.experiences]
        if same:
            decision = "unchanged"
        elif figures.failed_calls == 0 and figures.difference >= -params.validation.margin:
            decision = "promoted"
        else:
            decision = "refused"
        made = ValidationRound(
            epoch=epoch, batches_done=batches_done, working_version=state.version, decision=decision, figures=figures
        )
        # Shielded, like a batch: a cancel lands before the decision is written or after it.
        with anyio.CancelScope(shield=True):
            if decision == "unchanged":
                await self.store.write(lambda db: save(db, made, None))
            elif decision == "refused" and params.validation.keep == "best":
                made = await self._roll_back(state, served, served_lessons, made, save)
            else:
                reason = f"{self.job.id}: validation after {batches_done} batches, {figures.describe()}"
                await self.store.promote(
                    library,
                    state.version,
                    by=self.job.id,
                    reason=reason,
                    decision=decision,
                    figures=figures,
                    also=lambda db: save(db, made, None),
                )
        return made

    async def _compare(self, served: int, working: int) -> ValidationFigures:
        """Both versions' answers to the validation problems, paired per problem."""
        params, library = self.job.params, self.job.params.library
        prompts: dict[tuple[int, str], str] = {}
        for version in dict.fromkeys((served, working)):
            for p in self.problems:
                prompts[version, p.id] = (await self.store.experience_prompt(library, version, p.question)).prompt
        questions = {
            (p.id, prompt_key(prompts[v, p.id]), k): Question(self.tasks[p.id], p.answer, prompts[v, p.id])
            for v in (served, working)
            for p in self.problems
            for k in range(params.validation.samples)
        }

        def bind(key: tuple[str, str, int]) -> Model:
            problem, prompt, sample = key
            return self.ledger.bind(
                self.student,
                "validation",
                library=library,
                task_id=self.tasks[problem].id,
                job_id=self.job.id,
                key=f"val/{prompt}/{problem}/s{sample}",
                settings=params.student_settings,
            )

        grades, failures = await grade_answers(bind, questions, limit=params.concurrency * params.rollouts)

        def score(version: int, p: Problem) -> float:
            fingerprint = prompt_key(prompts[version, p.id])
            return fmean(grades[p.id, fingerprint, k] for k in range(params.validation.samples))

        served_scores = [score(served, p) for p in self.problems]
        working_scores = [score(working, p) for p in self.problems]
        differences = [w - s for w, s in zip(working_scores, served_scores, strict=True)]
        return ValidationFigures(
            problems=len(self.problems),
            samples=params.validation.samples,
            served_version=served,
            served_accuracy=fmean(served_scores),
            working_accuracy=fmean(working_scores),
            difference=fmean(differences),
            interval=paired_bootstrap(differences, seed=params.seed),
            margin=params.validation.margin,
            failed_calls=len(failures),
        )

    async def _roll_back(
        self,
        state: LibraryState,
        served: int,
        lessons: list[SnapshotItem],
        made: ValidationRound,
        save: Save,
    ) -> ValidationRound:
        """Refuse the working version and give it back the served version's lessons, in one version;
        if another client changed the library meanwhile, only refuse (the job goes on from there)."""
        library, figures = self.job.params.library, made.figures
        refusal = f"{self.job.id}: validation after {made.batches_done} batches, {figures.describe()}"
        kept = made.model_copy(update={"continued_from": served})

        tokens = count_tokens(experience_prompt((i.id, i.text) for i in lessons), state.settings.encoding)

        def record(db: sqlite3.Connection, version: int | None) -> None:
            serving.decide(db, library, state.version, "refused", by=self.job.id, reason=refusal, figures=figures)
            save(db, kept, (version, len(lessons), tokens))

        reason = f"{self.job.id}: version {state.version} refused on validation; going on from served version {served}"
        try:
            await self.store.apply(
                library,
                serving.restore_operations(state.experiences, lessons),
                "rollback",
                reason,
                expected_version=state.version,
                also=record,
            )
        except Conflict:
            await self.store.promote(
                library,
                state.version,
                by=self.job.id,
                reason=refusal,
                decision="refused",
                figures=figures,
                also=lambda db: save(db, made, None),
            )
            return made
        return kept
