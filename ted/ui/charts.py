"""Line charts as SVG coordinates, drawn by the templates: the distillation's accuracy and library
size per epoch, the same series `ted.runs.plots` draws in report.png, but in the page itself, so
they redraw with each refresh of a running job without a plotting library in the request."""

import math
from collections.abc import Callable, Sequence

from pydantic import BaseModel

from ted.runs.report import DistillReport

WIDTH, HEIGHT = 320, 190
LEFT, RIGHT, TOP, BOTTOM = 48, 14, 14, 30


class Point(BaseModel):
    x: float
    y: float
    label: str


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
    points: list[Point]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    limit: Tick | None = None

    @property
    def line(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


def line_chart(
    title: str,
    xs: Sequence[int],
    ys: Sequence[float],
    *,
    top: float,
    label: Callable[[float], str],
    limit: tuple[float, str] | None = None,
    whole: bool = False,
) -> Chart:
    """A chart of ys over the epochs xs, from 0 to `top` (or the largest value, if larger), with
    four steps of scale; `whole` numbers (lessons) get whole steps."""
    ceiling = max([top, *ys]) or 1.0
    step = max(1, math.ceil(ceiling / 4)) if whole else ceiling / 4
    if whole:
        ceiling = step * math.ceil(ceiling / step)
    first, last = (min(xs), max(xs)) if xs else (0, 1)
    span = (last - first) or 1

    def x(value: float) -> float:
        return LEFT + (value - first) / span * (WIDTH - LEFT - RIGHT) if last > first else (LEFT + WIDTH - RIGHT) / 2

    def y(value: float) -> float:
        return HEIGHT - BOTTOM - value / ceiling * (HEIGHT - TOP - BOTTOM)

    points = [Point(x=x(a), y=y(b), label=label(b)) for a, b in zip(xs, ys, strict=True)]
    summary = ", ".join(f"epoch {a}: {label(b)}" for a, b in zip(xs, ys, strict=True)) or "no figures yet"
    return Chart(
        title=title,
        summary=f"{title}: {summary}",
        points=points,
        x_ticks=[Tick(at=x(a), label=str(a)) for a in xs],
        y_ticks=[Tick(at=y(i * step), label=label(i * step)) for i in range(round(ceiling / step) + 1)],
        limit=Tick(at=y(limit[0]), label=limit[1]) if limit else None,
    )


def distillation(report: DistillReport) -> list[Chart]:
    """Rollout accuracy per epoch; lessons and tokens per epoch (0 = before the job), each against its cap."""
    scored = [e for e in report.epochs if e.accuracy is not None]
    epochs = [0] + [e.epoch for e in report.epochs]
    sizes = [report.initial] + [e.library for e in report.epochs]
    return [
        line_chart(
            "Rollout accuracy",
            [e.epoch for e in scored],
            [e.accuracy for e in scored],
            top=1.0,
            label=lambda v: f"{v * 100:.0f} %",
        ),
        line_chart(
            "Lessons",
            epochs,
            [s.items for s in sizes],
            top=report.max_items,
            label=lambda v: f"{v:.0f}",
            limit=(report.max_items, f"cap {report.max_items}"),
            whole=True,
        ),
        line_chart(
            "Tokens",
            epochs,
            [s.tokens for s in sizes],
            top=report.token_budget,
            label=lambda v: f"{v:,.0f}",
            limit=(report.token_budget, f"budget {report.token_budget:,}"),
        ),
    ]
