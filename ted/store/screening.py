"""The lesson gate applied to a change: every lesson text in a list of operations, normalised,
checked by the rules (`ted.gate`) and then, if one is configured, by the guard model.

`Store.apply` runs this on every change before it writes (the floor no path can skip) and
`Store.screen` on a teacher's proposals before they are planned (so a refused lesson is
reported and the rest still applies). The rules' copy check compares a lesson with the
sources it came from and with the library's recent tasks and ground truths; a restored
lesson (a rollback) is only checked for what it says, since it was distilled long ago.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

import anyio.to_thread

from ted.gate import Refusal, check, normalise
from ted.store.records import AddOp, MergeOp, Operation, RefusedBy, RestoreOp, RewriteOp

# (library, lesson texts) → the texts the guard refused, with its reason for each.
Reviewer = Callable[[str, list[str]], Awaitable[dict[str, str]]]
Lesson = AddOp | RewriteOp | MergeOp | RestoreOp


class Refused(NamedTuple):
    index: int  # 1-based position in the operations
    operation: Operation
    refusal: Refusal
    by: RefusedBy


def normalised(op: Operation) -> Operation:
    return op.model_copy(update={"text": normalise(op.text)}) if isinstance(op, Lesson) else op


async def screen(
    library: str,
    operations: Sequence[Operation],
    *,
    known: Sequence[str],
    sources: Sequence[str],
    reviewer: Reviewer | None,
) -> tuple[list[Operation], list[Refused]]:
    """The operations that pass, lesson texts normalised and in order, and those refused."""
    ops = [normalised(op) for op in operations]

    def rules() -> list[Refusal | None]:
        return [
            check(op.text, () if isinstance(op, RestoreOp) else sources, known) if isinstance(op, Lesson) else None
            for op in ops
        ]

    # In a worker thread: the copy check reads whole trajectories, and the event loop serves others.
    verdicts = await anyio.to_thread.run_sync(rules)
    refused = [Refused(i, op, r, "rules") for i, (op, r) in enumerate(zip(ops, verdicts, strict=True), 1) if r]
    unchecked = [op.text for op, r in zip(ops, verdicts, strict=True) if isinstance(op, Lesson) and r is None]
    flagged = await reviewer(library, unchecked) if reviewer is not None and unchecked else {}
    refused += [
        Refused(i, op, Refusal(f"was refused by the guard model: {flagged[op.text]}"), "guard")
        for i, (op, r) in enumerate(zip(ops, verdicts, strict=True), 1)
        if r is None and isinstance(op, Lesson) and op.text in flagged
    ]
    out = {r.index for r in refused}
    return [op for i, op in enumerate(ops, 1) if i not in out], sorted(refused, key=lambda r: r.index)
