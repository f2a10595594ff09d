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
library as it stood during that epoch) and the library's size when the epoch ended.

Writers put `report.json` (the record), `report.md` (a table a person reads) and `report.png`
(`ted.plots`) in one folder. The files are small, so they are written with plain file I/O;
each is written to a temporary name and renamed, so a killed run never leaves half a report.
"""

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, computed_field

from ted import plots
from ted.errors import InvalidInput
from ted.ledger import RoleTotals

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


class BootstrapInterval(BaseModel):
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int
    method: str = "percentile bootstrap over problems (paired)"


class CostSummary(BaseModel):
    """Totals from the ledger, with the per-role rows they came from."""

    calls: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = Field(0.0, description="Null when some call's model has no price.")
    unpriced_models: list[str] = Field(default_factory=list)
    by_role: list[RoleTotals] = Field(default_factory=list)

    @classmethod
    def from_totals(cls, totals: Sequence[RoleTotals]) -> "CostSummary":
        """Sum `Ledger.totals(...)` rows; one unpriced model makes the total unknown, not low."""
        unpriced = sorted({t.model for t in totals if t.cost_usd is None})
        return cls(
            calls=sum(t.calls for t in totals),
            failed=sum(t.failed for t in totals),
            input_tokens=sum(t.input_tokens for t in totals),
            output_tokens=sum(t.output_tokens for t in totals),
            cost_usd=None if unpriced else sum(t.cost_usd or 0.0 for t in totals),
            unpriced_models=unpriced,
            by_role=list(totals),
        )


class EvalReport(BaseModel):
    """`ted eval`: the student with and without a library, on the same problems."""

    kind: Literal["evaluation"] = "evaluation"
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
    compressions: int = Field(0, ge=0)
    library: LibrarySize = Field(description="The library when the epoch ended.")
    cost: CostSummary | None = Field(None, description="This epoch's model calls, when the caller split them.")

    @computed_field
    @property
    def accuracy(self) -> float | None:
        """Fraction of this epoch's rollouts graded correct; null before any rollout."""
        return self.correct / self.rollouts if self.rollouts else None


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
    epochs: list[EpochStats]
    cost: CostSummary
    created_at: datetime


class ReportFiles(BaseModel):
    json_path: Path
    markdown_path: Path
    plot_path: Path


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
        difference=float(np.mean(differences)),
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


def write_eval_report(report: EvalReport, directory: str | Path, *, stem: str = "report") -> ReportFiles:
    """report.json, report.md and report.png in `directory` (created if missing)."""
    files = _files(directory, stem)
    _write(files.json_path, report.model_dump_json(indent=2) + "\n")
    _write(files.markdown_path, eval_markdown(report, plot_name=files.plot_path.name))
    plots.plot_evaluation(report, files.plot_path)
    return files


def write_distill_report(report: DistillReport, directory: str | Path, *, stem: str = "report") -> ReportFiles:
    """report.json, report.md and report.png in `directory` (created if missing)."""
    files = _files(directory, stem)
    _write(files.json_path, report.model_dump_json(indent=2) + "\n")
    _write(files.markdown_path, distill_markdown(report, plot_name=files.plot_path.name))
    plots.plot_distillation(report, files.plot_path)
    return files


def eval_markdown(report: EvalReport, *, plot_name: str | None = "report.png") -> str:
    r, ci = report, report.interval
    size = [f"{n:,} {unit}" for n, unit in ((r.library_items, "items"), (r.library_tokens, "tokens")) if n is not None]
    samples = f"{r.samples_per_problem} per arm" if r.samples_per_problem else "varies (see report.json)"
    level = f"{ci.confidence * 100:g} %"
    rows = [
        ("Dataset", r.dataset),
        ("Student", r.student),
        ("Library", f"{r.library} v{r.library_version}" + (f" ({', '.join(size)})" if size else "")),
        ("Problems", f"{r.n_problems:,}"),
        ("Samples per problem", samples),
        ("Accuracy with library", _accuracy(r.with_library)),
        ("Accuracy without library", _accuracy(r.without_library)),
        ("Difference (with − without)", f"{_pp(r.difference)}, {level} CI [{_pp(ci.low)}, {_pp(ci.high)}]"),
        ("Problems improved / worsened / unchanged", f"{r.improved} / {r.worsened} / {r.unchanged}"),
        *_cost_rows(r.cost),
    ]
    parts = [f"# Evaluation: {r.student} on {r.dataset}", "", _table(("", ""), rows), ""]
    parts += [
        (
            f"The interval is a {ci.method}: {ci.resamples:,} resamples, seed {ci.seed}. "
            "pp = percentage points. An interval that excludes 0 says the library changed accuracy "
            "on problems like these."
        ),
        "",
    ]
    parts += _cost_by_role(r.cost)
    if plot_name:
        parts += [f"![Accuracy with and without the library]({plot_name})", ""]
    parts += [f"_Generated {r.created_at:%Y-%m-%d %H:%M} UTC._", ""]
    return "\n".join(parts)


def distill_markdown(report: DistillReport, *, plot_name: str | None = "report.png") -> str:
    r = report
    final = r.epochs[-1].library if r.epochs else r.initial
    rows = [
        ("Dataset", r.dataset),
        ("Student", r.student),
        ("Teacher", r.teacher),
        ("Library", f"{r.library} v{final.version} ({final.items} items, {final.tokens:,} tokens)"),
        ("Budget", f"{r.token_budget:,} tokens / {r.max_items} items, compression: {r.compression}"),
        ("Epochs", f"{len(r.epochs)} of {r.epochs_planned} ({r.state})"),
        ("Rollouts per problem", str(r.rollouts_per_problem)),
        *([("Concurrency", str(r.concurrency))] if r.concurrency is not None else []),
        *([("Job", r.job_id)] if r.job_id else []),
        *_cost_rows(r.cost),
    ]
    header = ("Epoch", "Problems", "Rollouts", "Rollout accuracy", "All-correct groups", "Critiques",
              "Compressions", "Library version", "Items", "Tokens")  # fmt: skip
    epochs = [("0 (start)", "", "", "", "", "", "", str(r.initial.version), str(r.initial.items),
               f"{r.initial.tokens:,}")]  # fmt: skip
    for e in r.epochs:
        accuracy = f"{e.accuracy * 100:.1f} % ({e.correct}/{e.rollouts})" if e.accuracy is not None else "–"
        epochs.append((str(e.epoch), str(e.problems), str(e.rollouts), accuracy, str(e.all_correct_groups),
                       str(e.critiques), str(e.compressions), str(e.library.version), str(e.library.items),
                       f"{e.library.tokens:,}"))  # fmt: skip
    parts = [f"# Distillation: {r.library} on {r.dataset}", "", _table(("", ""), rows), "", "## Per epoch", ""]
    parts += [_table(header, epochs), ""]
    parts += _cost_by_role(r.cost)
    if plot_name:
        parts += [f"![Rollout accuracy and library size per epoch]({plot_name})", ""]
    parts += [f"_Generated {r.created_at:%Y-%m-%d %H:%M} UTC._", ""]
    return "\n".join(parts)


def _mean(grades: Sequence[bool]) -> float:
    return sum(grades) / len(grades)


def _arm(grades: list[list[bool]]) -> ArmStats:
    return ArmStats(
        accuracy=float(np.mean([_mean(g) for g in grades])),
        correct=sum(sum(g) for g in grades),
        samples=sum(len(g) for g in grades),
    )


def _accuracy(arm: ArmStats) -> str:
    return f"{arm.accuracy * 100:.1f} % ({arm.correct}/{arm.samples} samples)"


def _pp(value: float) -> str:
    # Round first so a difference of -0.0001 prints as +0.0, not -0.0.
    points = round(value * 100, 1) + 0.0
    return f"{points:+.1f} pp"


def _cost_rows(cost: CostSummary) -> list[tuple[str, str]]:
    if cost.cost_usd is not None:
        dollars = f"${cost.cost_usd:,.4f}"
    else:
        dollars = f"unknown: no price for {', '.join(cost.unpriced_models)} (set one in the price table)"
    failed = f" ({cost.failed} failed)" if cost.failed else ""
    return [
        ("Model calls", f"{cost.calls:,}{failed}"),
        ("Tokens in / out", f"{cost.input_tokens:,} / {cost.output_tokens:,}"),
        ("Cost", dollars),
    ]


def _cost_by_role(cost: CostSummary) -> list[str]:
    if not cost.by_role:
        return []
    rows = [
        (t.role, t.model, f"{t.calls:,}", f"{t.input_tokens:,}", f"{t.output_tokens:,}",
         f"${t.cost_usd:,.4f}" if t.cost_usd is not None else "unknown")
        for t in cost.by_role
    ]  # fmt: skip
    return ["## Cost by role", "", _table(("Role", "Model", "Calls", "Tokens in", "Tokens out", "Cost"), rows), ""]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        # A '|' inside a model or dataset name would split the cell.
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def _files(directory: str | Path, stem: str) -> ReportFiles:
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return ReportFiles(
        json_path=folder / f"{stem}.json", markdown_path=folder / f"{stem}.md", plot_path=folder / f"{stem}.png"
    )


def _write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
