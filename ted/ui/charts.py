"""Line charts as SVG coordinates, drawn by the templates: a distillation's rollout accuracy,
library size and validation accuracy per epoch, the same series `ted.runs.plots` draws in
report.png, but in the page itself, so they redraw with each refresh of a running job without a
plotting library in the request."""

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

from pydantic import BaseModel

from ted.runs.report import DistillReport, EpochStats

WIDTH, HEIGHT = 320, 190
LEFT, RIGHT, TOP, BOTTOM = 48, 14, 14, 30


class Line(NamedTuple):
    """One series: its name, a value per x, and optionally a mark per x (a promotion, a refusal)."""

    name: str
    ys: Sequence[float]
    marks: Sequence[str | None] = ()


class Point(BaseModel):
    x: float
    y: float
    label: str
    mark: str | None = None


class Series(BaseModel):
    name: str
    points: list[Point]

    @property
    def line(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


class Tick(BaseModel):
    at: float
    label: str


class Chart(BaseModel):
    title: str
    summary: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM
    series: list[Series]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    limit: Tick | None = None

    @property
    def points(self) -> list[Point]:
        return [p for s in self.series for p in s.points]


def line_chart(
    title: str,
    xs: Sequence[int],
    lines: Sequence[Line],
    *,
    top: float,
    label: Callable[[float], str],
    limit: tuple[float, str] | None = None,
    whole: bool = False,
) -> Chart:
    """A chart of each line over the epochs xs, from 0 to `top` (or the largest value, if larger),
    with four steps of scale; `whole` numbers (lessons) get whole steps."""
    ceiling = max([top, *(y for line in lines for y in line.ys)]) or 1.0
    step = max(1, math.ceil(ceiling / 4)) if whole else ceiling / 4
    if whole:
        ceiling = step * math.ceil(ceiling / step)
    first, last = (min(xs), max(xs)) if xs else (0, 1)
    span = (last - first) or 1

    def x(value: float) -> float:
        return LEFT + (value - first) / span * (WIDTH - LEFT - RIGHT) if last > first else (LEFT + WIDTH - RIGHT) / 2

    def y(value: float) -> float:
        return HEIGHT - BOTTOM - value / ceiling * (HEIGHT - TOP - BOTTOM)

    series = [
        Series(
            name=line.name,
            points=[
                Point(x=x(a), y=y(b), label=label(b), mark=(line.marks[i] if line.marks else None))
                for i, (a, b) in enumerate(zip(xs, line.ys, strict=True))
            ],
        )
        for line in lines
    ]
    return Chart(
        title=title,
        summary=f"{title}: {_said(xs, lines, label)}",
        series=series,
        x_ticks=[Tick(at=x(a), label=str(a)) for a in xs],
        y_ticks=[Tick(at=y(i * step), label=label(i * step)) for i in range(round(ceiling / step) + 1)],
        limit=Tick(at=y(limit[0]), label=limit[1]) if limit else None,
    )


def _said(xs: Sequence[int], lines: Sequence[Line], label: Callable[[float], str]) -> str:
    """The chart's figures in words, for a screen reader: `epoch 1: served 33 %, working 100 % (promoted)`."""
    named = len(lines) > 1
    epochs = []
    for i, a in enumerate(xs):
        values = [f"{line.name} {label(line.ys[i])}" if named else label(line.ys[i]) for line in lines]
        marks = [m for line in lines if line.marks and (m := line.marks[i])]
        epochs.append(f"epoch {a}: {', '.join(values)}" + (f" ({', '.join(marks)})" if marks else ""))
    return ", ".join(epochs) or "no figures yet"


def _decided(epoch: EpochStats) -> str | None:
    """What the epoch's validation decided: a promotion if any round promoted, else a refusal if any refused."""
    decisions = {v.decision for v in epoch.validations}
    return next((d for d in ("promoted", "refused") if d in decisions), None)


def _percent(value: float) -> str:
    return f"{value * 100:.0f} %"


def distillation(report: DistillReport) -> list[Chart]:
    """Rollout accuracy per epoch; lessons and tokens per epoch (0 = before the job), each against its cap."""
    scored = [e for e in report.epochs if e.accuracy is not None]
    epochs = [0] + [e.epoch for e in report.epochs]
    sizes = [report.initial] + [e.library for e in report.epochs]
    return [
        line_chart(
            "Rollout accuracy",
            [e.epoch for e in scored],
            [Line("rollouts", [e.accuracy for e in scored])],
            top=1.0,
            label=_percent,
        ),
        line_chart(
            "Lessons",
            epochs,
            [Line("lessons", [s.items for s in sizes])],
            top=report.max_items,
            label=lambda v: f"{v:.0f}",
            limit=(report.max_items, f"cap {report.max_items}"),
            whole=True,
        ),
        line_chart(
            "Tokens",
            epochs,
            [Line("tokens", [s.tokens for s in sizes])],
            top=report.token_budget,
            label=lambda v: f"{v:,.0f}",
            limit=(report.token_budget, f"budget {report.token_budget:,}"),
        ),
    ]


def validation(report: DistillReport) -> Chart | None:
    """With a validation set, each epoch's last round: the served and the working version's
    accuracy on the held-out problems, the working point marked where the epoch promoted or refused."""
    if not report.validation_problems:
        return None
    validated = [e for e in report.epochs if e.validated is not None]
    return line_chart(
        "Validation accuracy",
        [e.epoch for e in validated],
        [
            Line("served", [e.validated.figures.served_accuracy for e in validated]),
            Line(
                "working", [e.validated.figures.working_accuracy for e in validated], [_decided(e) for e in validated]
            ),
        ],
        top=1.0,
        label=_percent,
    )
