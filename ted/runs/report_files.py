"""Reports as files a user shows: `report.json` (the record), `report.md` (a table a person
reads) and `report.png` (`ted.runs.plots`), in one folder.

The files are small, so they are written with plain file I/O; each is written to a temporary
name and renamed, so a killed run never leaves half a report.
"""

import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from ted.ledger import CostSummary
from ted.pricing import format_cost
from ted.runs import plots
from ted.runs.evidence import EvidenceReport
from ted.runs.report import ArmStats, DistillReport, EvalReport


class ReportFiles(BaseModel):
    json_path: Path
    markdown_path: Path
    plot_path: Path


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


def write_evidence_report(report: EvidenceReport, directory: str | Path, *, stem: str = "report") -> ReportFiles:
    """report.json and report.md in `directory` (created if missing); no plot."""
    files = _files(directory, stem)
    _write(files.json_path, report.model_dump_json(indent=2) + "\n")
    _write(files.markdown_path, evidence_markdown(report))
    return files


def evidence_markdown(report: EvidenceReport) -> str:
    r = report
    rows = [
        ("Dataset", r.dataset),
        ("Student", r.student),
        ("Library", f"{r.library} v{r.version}"),
        ("Problems", f"{r.n_problems:,} × {r.samples} samples per arm"),
        ("Accuracy with every lesson", f"{r.accuracy * 100:.1f} %"),
        ("Answers", f"{r.calls:,}" + (f" ({r.failed_calls} failed)" if r.failed_calls else "")),
        *_cost_rows(r.cost),
    ]
    lessons = [
        (
            m.id,
            m.text,
            f"{m.without_accuracy * 100:.1f} %",
            f"{_pp(m.difference)}, [{_pp(m.interval.low)}, {_pp(m.interval.high)}]",
            "removal helped" if m.flagged else "",
        )
        for m in r.lessons
    ]
    header = ("Id", "Lesson", "Accuracy without it", "Evidence (with − without), 95 % CI", "")
    note = (
        "A lesson's evidence is the mean over problems of the student's score with the whole version minus its score "
        "with the version less that lesson; the interval is a percentile bootstrap over problems. Negative: the "
        "student did better without it."
    )
    parts = [f"# Evidence: {r.library} v{r.version} on {r.dataset}", "", _table(("", ""), rows), "", "## Lessons", ""]
    parts += [note, "", _table(header, lessons), "", f"_Generated {r.created_at:%Y-%m-%d %H:%M} UTC._", ""]
    return "\n".join(parts)


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
        *([("Served", f"v{r.served_version}")] if r.validation_problems else []),
        *([("Validation", f"{r.validation_problems:,} problems held out")] if r.validation_problems else []),
        ("Budget", f"{r.token_budget:,} tokens / {r.max_items} items, compression: {r.compression}"),
        ("Epochs", f"{len(r.epochs)} of {r.epochs_planned} ({r.state})"),
        ("Rollouts per problem", str(r.rollouts_per_problem)),
        *([("Concurrency", str(r.concurrency))] if r.concurrency is not None else []),
        *([("Job", r.job_id)] if r.job_id else []),
        *_cost_rows(r.cost),
        *_cache_rows(r),
    ]
    header = (
        "Epoch",
        "Problems",
        "Rollouts",
        "Rollout accuracy",
        "All-correct groups",
        "Critiques",
        "Failed",
        "Conflicts",
        "Compressions",
        "Library version",
        "Items",
        "Tokens",
    )
    validated = bool(r.validation_problems)
    if validated:
        header += ("Validation: served", "Validation: working", "Decision")
    start = ("0 (start)", *[""] * 8, str(r.initial.version), str(r.initial.items), f"{r.initial.tokens:,}")
    epochs = [start + ("", "", "") * validated]
    for e in r.epochs:
        accuracy = f"{e.accuracy * 100:.1f} % ({e.correct}/{e.rollouts})" if e.accuracy is not None else "–"
        row = (
            str(e.epoch),
            str(e.problems),
            str(e.rollouts),
            accuracy,
            str(e.all_correct_groups),
            str(e.critiques),
            str(len(e.failures)),
            str(e.conflicts),
            str(e.compressions),
            str(e.library.version),
            str(e.library.items),
            f"{e.library.tokens:,}",
        )
        if validated:
            last = e.validated
            row += (
                (_share(last.figures.served_accuracy), _share(last.figures.working_accuracy), last.decision)
                if last
                else ("", "", "")
            )
        epochs.append(row)
    parts = [f"# Distillation: {r.library} on {r.dataset}", "", _table(("", ""), rows), "", "## Per epoch", ""]
    parts += [_table(header, epochs), ""]
    parts += _promotions(r)
    parts += _failures(r)
    parts += _cost_by_role(r.cost)
    if plot_name:
        parts += [f"![Rollout accuracy and library size per epoch]({plot_name})", ""]
    parts += [f"_Generated {r.created_at:%Y-%m-%d %H:%M} UTC._", ""]
    return "\n".join(parts)


def _promotions(report: DistillReport) -> list[str]:
    rows = [
        (
            str(e.epoch),
            str(v.batches_done),
            f"v{v.working_version}",
            f"v{v.figures.served_version}",
            _share(v.figures.working_accuracy),
            _share(v.figures.served_accuracy),
            f"{_pp(v.figures.difference)} [{_pp(v.figures.interval.low)}, {_pp(v.figures.interval.high)}]",
            v.decision + (f" (back to v{v.continued_from})" if v.continued_from is not None else ""),
        )
        for e in report.epochs
        for v in e.validations
    ]
    if not rows:
        return []
    note = (
        "After each round the working version was promoted (served from then on) when its validation accuracy was "
        "at least the served version's minus the margin, paired per problem; the interval is a 95 % percentile "
        "bootstrap over problems. A refused version is not served."
    )
    header = ("Epoch", "After batch", "Working", "Served", "Working acc.", "Served acc.", "Difference", "Decision")
    return ["## Promotions", "", note, "", _table(header, rows), ""]


def _share(value: float) -> str:
    return f"{value * 100:.1f} %"


def _failures(report: DistillReport) -> list[str]:
    rows = [
        (str(e.epoch), f.problem_id or "(the batch's compression)", f.step, f.error)
        for e in report.epochs
        for f in e.failures
    ]
    if not rows:
        return []
    note = (
        "A critique that could not be made (the teacher's reply unusable after its repair, or its call failing) "
        "leaves its problem's attempts uncritiqued; the batch went on. A compression without the teacher's plan "
        "removed the lowest-priority lessons instead."
    )
    return ["## Failed critiques", "", note, "", _table(("Epoch", "Problem", "Step", "Error"), rows), ""]


def _accuracy(arm: ArmStats) -> str:
    return f"{arm.accuracy * 100:.1f} % ({arm.correct}/{arm.samples} samples)"


def _pp(value: float) -> str:
    # Round first so a difference of -0.0001 prints as +0.0, not -0.0.
    points = round(value * 100, 1) + 0.0
    return f"{points:+.1f} pp"


def _cache_rows(report: DistillReport) -> list[tuple[str, str]]:
    if report.student_cache_share is None:
        return []
    return [("Student input tokens served from the prompt cache", f"{report.student_cache_share:.1%}")]


def _cost_rows(cost: CostSummary) -> list[tuple[str, str]]:
    dollars = format_cost(cost.cost_usd)
    if cost.cost_usd is None:
        dollars += f": no price for {', '.join(cost.unpriced_models)} (set one in the price table)"
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
        (
            t.role,
            t.model,
            f"{t.calls:,}",
            f"{t.input_tokens:,}",
            f"{t.output_tokens:,}",
            format_cost(t.cost_usd),
        )
        for t in cost.by_role
    ]
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
