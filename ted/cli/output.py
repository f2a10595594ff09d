"""How the `ted` commands print: tables that fit an 80-column terminal, JSON for scripts, and
the one-line reports of a change.

A table's columns are of four kinds. Numbers never wrap (a figure folded over two lines reads
as two figures), nor do labels (a role, a state, a job id: short and of known width); names
(libraries, models) fold when they must; text (a lesson, a reason) wraps at word boundaries and
keeps at least 20 columns.
"""

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import pydantic_core
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from ted.store.records import ChangeResult

Kind = Literal["number", "label", "name", "text"]


def table(*columns: tuple[str, Kind], **options) -> Table:
    cells = []
    for header, kind in columns:
        if kind in ("number", "label"):
            cells.append(Column(header, no_wrap=True, justify="right" if kind == "number" else "left"))
        elif kind == "name":
            cells.append(Column(header, overflow="fold"))
        else:  # in a narrow terminal rich squeezes the widest column first; the text is what people came for
            cells.append(Column(header, min_width=20, overflow="fold"))
    # One space between columns and none at the edges: two more columns for the names and text.
    return Table(*cells, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False, **options)


def report(out: Console, result: ChangeResult, done: str) -> None:
    out.print(
        f"{done}: now version {result.version}, {count(result.items, 'lesson')}, {result.tokens} tokens.", markup=False
    )
    warn_if_over_budget(out, result.over_budget, result.library)


def warn_if_over_budget(out: Console, over: bool, library: str) -> None:
    if over:
        out.print(
            Text(
                f"{library} is over its token or item budget: compress it with `ted compress {library}` (or the "
                "compress_library tool), or the student's prompt carries more than it should.",
                style="yellow",
            )
        )


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def indent(text: str) -> str:
    return text.replace("\n", "\n    ")


def print_json(value: BaseModel | Sequence[BaseModel] | dict) -> None:
    # Plain stdout, not rich: scripts parse this, and rich would wrap and colour it.
    sys.stdout.write(pydantic_core.to_json(value, indent=2).decode() + "\n")


def local_time(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")
