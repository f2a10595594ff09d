"""Reports: the figures that say whether a library helped, and the files a user shows.

**Evaluation.** Every held-out problem is solved k times with the library in the student's
system prompt and k times without. A problem's score in an arm is the fraction of its samples
graded correct; an arm's accuracy is the mean of those scores over problems, so each problem
weighs the same whatever its sample count, and the difference of the two accuracies is exactly
the mean of the per-problem paired differences (with − without).

Its interval is a percentile bootstrap over problems: draw n problems with replacement,
10,000 times, take each draw's mean paired difference, read the 2.5th and 97.5th percentiles.
Resampling problems, not samples, keeps each problem's two arms together, so how hard a problem
is cancels out of the difference, and the k samples of one problem are not counted as k
independent observations. The generator is seeded: one report, one interval, every time.

**Distillation.** One `EpochStats` per epoch: the accuracy of the student's rollouts (with the
library as it stood during that epoch), the library's size when the epoch ended and, for a job
with a validation set, each comparison of the working version with the served one on it and what
was decided (`ted.runs.validation`).

Writers put `report.json` (the record), `report.md` (a table a person reads) and `report.png`
(`ted.runs.plots`) in one folder. The files are small, so they are written with plain file I/O;
`ted.runs.report_files` writes these records as `report.json`, `report.md` and `report.png`.
"""

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, computed_field

from ted.errors import InvalidInput
from ted.ledger import CostSummary, Ledger, RoleTotals
from ted.prompts import experience_prompt
from ted.runs import jobs
from ted.runs.jobs import Job, StepFailure, ValidationRound
from ted.store import Store
from ted.store.records import BootstrapInterval
from ted.tokens import count_tokens

DEFAULT_RESAMPLES = 10_000
MAX_RESAMPLES = 1_000_000
# Resample in blocks of about this many drawn indices: one resamples × n matrix would need
# gigabytes for a large dataset, and blocks keep the draw vectorised.
_BLOCK_ELEMENTS = 2_000_000


class PairedOutcome(BaseModel):
    """The grades of one problem's samples in each arm."""

    problem_id: str
    with_library: list[bool] = Field(min_length=1)
    without_library: list[bool] = Field(min_length=1)

    @computed_field
    @property
    def difference(self) -> float:
        """This problem's score with the library minus its score without."""
        return _mean(self.with_library) - _mean(self.without_library)


class ArmStats(BaseModel):
    accuracy: float = Field(description="Mean over problems of the fraction of samples graded correct.")
    correct: int = Field(description="Samples graded correct.")
    samples: int = Field(description="Samples graded.")


class EvalReport(BaseModel):
    """`ted eval`: the student with and without a library, on the same problems."""

    kind: Literal["evaluation"] = "evaluation"
    id: str | None = Field(None, description="The evaluation's id (`eval-…`): its calls are in the ledger under it.")
    dataset: str
    student: str
    library: str
    library_version: int
    library_items: int | None = None
    library_tokens: int | None = None
    n_problems: int
    samples_per_problem: int | None = Field(description="k when every problem had k samples in both arms, else null.")
    with_library: ArmStats
    without_library: ArmStats
    difference: float = Field(description="Accuracy with minus without: the mean paired difference.")
    interval: BootstrapInterval
    improved: int = Field(description="Problems that scored higher with the library.")
    worsened: int = Field(description="Problems that scored lower with the library.")
    unchanged: int
    cost: CostSummary
    created_at: datetime
    problems: list[PairedOutcome] = Field(description="Every grade, so anyone can recompute the figures.")


class LibrarySize(BaseModel):
    version: int = 0
    items: int = 0
    tokens: int = 0


class EpochStats(BaseModel):
    """One epoch of a distillation: how the rollouts went and what the library became."""

    epoch: int = Field(ge=1)
    problems: int = Field(ge=0)
    rollouts: int = Field(ge=0, description="Student attempts graded in this epoch.")
    correct: int = Field(ge=0)
    all_correct_groups: int = Field(0, ge=0, description="Problems whose every rollout was correct.")
    critiques: int = Field(0, ge=0)
    conflicts: int = Field(
        0, ge=0, description="Operations dropped: an earlier critique of their batch changed the lesson."
    )
    failures: list[StepFailure] = Field(
        default_factory=list, description="Critiques that could not be made (problem, step, error), and compressions."
    )
    compressions: int = Field(0, ge=0)
    library: LibrarySize = Field(description="The library when the epoch ended.")
    cost: CostSummary | None = Field(None, description="This epoch's model calls, when the caller split them.")
    validations: list[ValidationRound] = Field(
        default_factory=list, description="The working version against the served one, and each decision."
    )

    @computed_field
    @property
    def accuracy(self) -> float | None:
        """Fraction of this epoch's rollouts graded correct; null before any rollout."""
        return self.correct / self.rollouts if self.rollouts else None

    @property
    def validated(self) -> ValidationRound | None:
        """The epoch's last validation round, if it had one."""
        return self.validations[-1] if self.validations else None


class DistillReport(BaseModel):
    """`ted distill`: a library built over epochs, and what it cost."""

    kind: Literal["distillation"] = "distillation"
    dataset: str
    student: str
    teacher: str
    library: str
    job_id: str | None = None
    state: str = Field("finished", description="finished, cancelled or failed: a partial run is reported too.")
    epochs_planned: int
    rollouts_per_problem: int
    concurrency: int | None = None
    compression: Literal["none", "truncate", "random", "teacher"] = "teacher"
    token_budget: int
    max_items: int
    initial: LibrarySize = Field(default_factory=LibrarySize, description="The library before epoch 1.")
    validation_problems: int = Field(0, description="Problems held out to decide promotions (0: none).")
    served_version: int | None = Field(None, description="The version the library serves now.")
    epochs: list[EpochStats]
    cost: CostSummary
    created_at: datetime

    @computed_field
    @property
    def student_cache_share(self) -> float | None:
        """Of the student's input tokens, the share the provider served from its prompt cache."""
        student = [t for t in self.cost.by_role if t.role == "student"]
        tokens = sum(t.input_tokens for t in student)
        return sum(t.cache_read_tokens for t in student) / tokens if tokens else None


def paired_bootstrap(
    differences: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapInterval:
    """Percentile bootstrap interval of the mean of per-problem paired differences."""
    if not 0 < confidence < 1:
        raise InvalidInput(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}.")
    if not 1 <= resamples <= MAX_RESAMPLES:
        raise InvalidInput(f"resamples must be between 1 and {MAX_RESAMPLES:,}, got {resamples!r}.")
    import numpy as np  # a second of import time: only when a report is made

    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or d.size == 0:
        raise InvalidInput("A bootstrap needs at least one paired difference.")
    rng = np.random.default_rng(seed)
    n = d.size
    means = np.empty(resamples)
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return BootstrapInterval(low=float(low), high=float(high), confidence=confidence, resamples=resamples, seed=seed)


def evaluation_report(
    outcomes: Sequence[PairedOutcome | Mapping],
    *,
    dataset: str,
    student: str,
    library: str,
    library_version: int,
    report_id: str | None = None,
    library_items: int | None = None,
    library_tokens: int | None = None,
    cost: Sequence[RoleTotals] = (),
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> EvalReport:
    """Accuracies, paired difference and its bootstrap interval from every problem's grades.

    A sample that failed to produce an answer (a model error) should be passed as incorrect:
    dropping it would flatter whichever arm failed more.
    """
    try:
        pairs = [o if isinstance(o, PairedOutcome) else PairedOutcome.model_validate(o) for o in outcomes]
    except ValidationError as e:
        first = e.errors()[0]
        raise InvalidInput(
            f"A problem's outcome is malformed at {'.'.join(map(str, first['loc']))}: {first['msg']}. "
            "Each needs a problem_id and at least one grade in each arm."
        ) from None
    if not pairs:
        raise InvalidInput("An evaluation report needs at least one problem with grades in both arms.")
    if duplicates := sorted(i for i, n in Counter(p.problem_id for p in pairs).items() if n > 1):
        raise InvalidInput(f"Problems appear more than once: {', '.join(duplicates[:5])}; merge their samples.")
    differences = [p.difference for p in pairs]
    counts = {len(p.with_library) for p in pairs} | {len(p.without_library) for p in pairs}
    return EvalReport(
        id=report_id,
        dataset=dataset,
        student=student,
        library=library,
        library_version=library_version,
        library_items=library_items,
        library_tokens=library_tokens,
        n_problems=len(pairs),
        samples_per_problem=counts.pop() if len(counts) == 1 else None,
        with_library=_arm([p.with_library for p in pairs]),
        without_library=_arm([p.without_library for p in pairs]),
        difference=math.fsum(differences) / len(differences),
        interval=paired_bootstrap(differences, resamples=resamples, seed=seed, confidence=confidence),
        improved=sum(d > 0 for d in differences),
        worsened=sum(d < 0 for d in differences),
        unchanged=sum(d == 0 for d in differences),
        cost=CostSummary.from_totals(cost),
        created_at=datetime.now(UTC),
        problems=pairs,
    )


def epoch_stats(
    epoch: int,
    grades: Mapping[str, Sequence[bool]],
    *,
    library: LibrarySize,
    critiques: int = 0,
    compressions: int = 0,
    cost: Sequence[RoleTotals] | None = None,
) -> EpochStats:
    """An epoch's record from the grades of each problem's rollouts (problem id → grades)."""
    return EpochStats(
        epoch=epoch,
        problems=len(grades),
        rollouts=sum(len(g) for g in grades.values()),
        correct=sum(sum(map(bool, g)) for g in grades.values()),
        all_correct_groups=sum(1 for g in grades.values() if g and all(g)),
        critiques=critiques,
        compressions=compressions,
        library=library,
        cost=CostSummary.from_totals(cost) if cost is not None else None,
    )


def _mean(grades: Sequence[bool]) -> float:
    return sum(grades) / len(grades)


def _arm(grades: list[list[bool]]) -> ArmStats:
    return ArmStats(
        accuracy=math.fsum(_mean(g) for g in grades) / len(grades),
        correct=sum(sum(g) for g in grades),
        samples=sum(len(g) for g in grades),
    )


async def distill_report(store: Store, ledger: Ledger, job: Job) -> DistillReport:
    """The job as a distillation report: per-epoch accuracy and library size, and its cost."""
    state = await store.library_state(job.params.library)
    held = await jobs.validation_problems(store, job.id)
    start = await store.version(job.params.library, job.start_version) if job.start_version else None
    snapshot = start.snapshot if start else []
    initial = LibrarySize(
        version=job.start_version,
        items=len(snapshot),
        tokens=count_tokens(experience_prompt((i.id, i.text) for i in snapshot), state.settings.encoding),
    )
    return DistillReport(
        dataset=job.dataset,
        student=job.params.student,
        teacher=job.params.teacher,
        library=job.params.library,
        job_id=job.id,
        state={"done": "finished"}.get(job.state, job.state),
        epochs_planned=job.params.epochs,
        rollouts_per_problem=job.params.rollouts,
        concurrency=job.params.concurrency,
        compression=job.params.compression,
        token_budget=state.settings.token_budget,
        max_items=state.settings.max_items,
        initial=initial,
        validation_problems=len(held),
        served_version=state.version if state.served_version is None else state.served_version,
        epochs=[
            EpochStats(
                epoch=e.epoch + 1,
                problems=e.attempts // job.params.rollouts,
                rollouts=e.attempts,
                correct=e.correct,
                all_correct_groups=e.all_correct_groups,
                critiques=e.critiques,
                conflicts=e.conflicts,
                failures=e.failures,
                compressions=e.compressions,
                library=LibrarySize(version=e.version, items=e.items, tokens=e.tokens),
                validations=e.validations,
            )
            for e in job.epochs
        ],
        cost=CostSummary.from_totals(await ledger.totals(job_id=job.id)),
        created_at=datetime.now(UTC),
    )
