"""PNG plots of evaluation and distillation reports.

Figures are built with matplotlib's object API on an Agg canvas, never through `pyplot`:
pyplot keeps global state and picks a display backend, which a server with no screen, or a
worker thread, must not depend on, and a user's own pyplot session is left untouched.
matplotlib is imported inside the functions because it takes the better part of a second to
import, and only the report writers need it.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ted.runs.report import DistillReport, EvalReport

_WITH, _WITHOUT, _ITEMS, _TOKENS, _BUDGET = "#2a6fdb", "#9aa5b1", "#2a6fdb", "#e07b39", "#666666"


def plot_evaluation(report: "EvalReport", path: str | Path) -> Path:
    """Two bars: accuracy with and without the library, and the paired difference in the title."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.2), dpi=120, layout="constrained")
    ax = fig.subplots()
    arms = [
        (f"with {report.library} v{report.library_version}", report.with_library, _WITH),
        ("without library", report.without_library, _WITHOUT),
    ]
    bars = ax.bar([a[0] for a in arms], [a[1].accuracy for a in arms], color=[a[2] for a in arms], width=0.55)
    for bar, (_, arm, _) in zip(bars, arms, strict=True):
        ax.annotate(
            f"{arm.accuracy * 100:.1f} %\n({arm.correct}/{arm.samples})",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("accuracy")
    ci = report.interval
    ax.set_title(
        f"{report.student} on {report.dataset} ({report.n_problems} problems)\n"
        f"with − without: {report.difference * 100:+.1f} pp, "
        f"{ci.confidence * 100:g} % CI [{ci.low * 100:+.1f}, {ci.high * 100:+.1f}]",
        fontsize=9,
    )
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def plot_distillation(report: "DistillReport", path: str | Path) -> Path:
    """Rollout accuracy per epoch; library items and tokens per epoch, each against its cap."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.8), dpi=120, layout="constrained")
    accuracy_ax, items_ax, tokens_ax = fig.subplots(1, 3)

    scored = [e for e in report.epochs if e.accuracy is not None]
    accuracy_ax.plot([e.epoch for e in scored], [e.accuracy for e in scored], marker="o", color=_WITH)
    for e in scored:
        accuracy_ax.annotate(
            f"{e.accuracy * 100:.1f} %",
            (e.epoch, e.accuracy),
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    validated = [e for e in report.epochs if e.validated is not None]
    if validated:
        # Each epoch's last validation round: the served version and the working one on the same problems.
        for label, value, colour in (
            ("validation: served", lambda e: e.validated.figures.served_accuracy, _WITHOUT),
            ("validation: working", lambda e: e.validated.figures.working_accuracy, _TOKENS),
        ):
            accuracy_ax.plot(
                [e.epoch for e in validated], [value(e) for e in validated], marker="s", linestyle="--", color=colour
            )
            accuracy_ax.lines[-1].set_label(label)
        accuracy_ax.lines[0].set_label("training rollouts")
        accuracy_ax.legend(fontsize=7, loc="lower right")
    accuracy_ax.set_ylim(0, 1.05)
    accuracy_ax.set_ylabel("accuracy")
    accuracy_ax.set_title("Student: training rollouts" + (" and validation" if validated else ""), fontsize=10)

    # Epoch 0 is the library before training, so what epoch 1 added is visible. Items and
    # tokens get a panel each: on twin axes their two limits drew on top of each other.
    epochs = [0] + [e.epoch for e in report.epochs]
    sizes = [report.initial] + [e.library for e in report.epochs]
    for ax, values, limit, label, colour in (
        (items_ax, [s.items for s in sizes], report.max_items, "item cap", _ITEMS),
        (tokens_ax, [s.tokens for s in sizes], report.token_budget, "token budget", _TOKENS),
    ):
        ax.plot(epochs, values, marker="o", color=colour)
        ax.axhline(limit, color=_BUDGET, linestyle="--", linewidth=1)
        ax.annotate(
            f"{label} {limit:,}", (0, limit), xytext=(2, 3), textcoords="offset points", fontsize=8, color=_BUDGET
        )
        ax.set_ylim(0, max([limit, *values]) * 1.15)
        ax.set_ylabel("items" if ax is items_ax else "tokens")
        ax.set_xticks(epochs)
    items_ax.set_title(f"Library {report.library}: items", fontsize=10)
    tokens_ax.set_title(f"Library {report.library}: tokens ({report.compression} compression)", fontsize=10)
    accuracy_ax.set_xticks([e.epoch for e in report.epochs] or [1])
    for ax in (accuracy_ax, items_ax, tokens_ax):
        ax.set_xlabel("epoch")
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"{report.student} taught by {report.teacher} on {report.dataset}", fontsize=10)
    return _save(fig, path)


def _save(fig: "Figure", path: str | Path) -> Path:
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    fig.savefig(partial, format="png")  # Agg is the default canvas of a bare Figure
    os.replace(partial, path)
    return path
