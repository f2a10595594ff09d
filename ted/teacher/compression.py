"""Compression: keeping a library within its budget (tokens and item cap).

The teacher strategy shows the teacher every lesson with its priority (the paper's s(e) =
log(1 + usage), or its measured evidence when the library ranks by evidence), its
helpful/harmful counts and tokens, and asks for merge / rewrite / delete / retain. Its plan
is validated (unknown ids, an id used twice, unsafe text: dropped and reported), then the
resulting library is simulated exactly as the store will build it and counted with the real
tokenizer; while it is still over budget the lowest-priority lesson is removed. The plan and
those removals are applied as one version, so the library is never left over budget and the
whole compression can be rolled back. `truncate` and `random` reproduce the paper's ablations.

`plan_compression` works on any `LibraryState`, including one simulated from operations not yet
written, so a critique (or a batch of them) plans its compression before it writes anything and
`write_change` writes both as one version: no version is ever over budget.
"""

import random
import sqlite3
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from ted.errors import ConfigError
from ted.gate import normalise
from ted.llm.base import Message, Model
from ted.llm.structured import structured
from ted.prompts import compress_prompt, compress_system, experience_prompt
from ted.store import Store
from ted.store.records import (
    AddOp,
    AppliedOperations,
    ChangeResult,
    DeleteOp,
    Dropped,
    Experience,
    LibraryState,
    MergeOp,
    Operation,
    RewriteOp,
)
from ted.teacher.replies import CompressionPlan, PlanMerge, PlanRetain, PlanRewrite, compression_reply
from ted.tokens import count_tokens

Strategy = Literal["teacher", "truncate", "random"]


class CompressionResult(BaseModel):
    library: str
    strategy: Strategy
    dry_run: bool
    version_before: int
    version: int
    operations: AppliedOperations
    dropped: list[Dropped]
    budget_removals: list[str]
    items_before: int
    items_after: int
    tokens_before: int
    tokens_after: int
    token_budget: int
    max_items: int
    over_budget: bool


class Simulation:
    """The library as the store will hold it after some operations, with the same new ids and
    the same token count, so a plan can be checked (and planned further) before it is written."""

    def __init__(self, state: LibraryState):
        self.state = state
        self.items = [e.model_copy() for e in state.experiences]
        self.next_number = state.next_experience

    def _new(self, text: str, provenance: dict, usage: int, helpful: int, harmful: int) -> Experience:
        item = Experience(
            id=f"E{self.next_number}",
            text=text,
            tokens=count_tokens(text, self.state.settings.encoding),
            usage_count=usage,
            helpful_count=helpful,
            harmful_count=harmful,
            provenance=provenance,
            created_version=self.state.version + 1,
        )
        self.items.append(item)
        self.next_number += 1
        return item

    def apply(self, op: Operation) -> Operation:
        """Apply one operation; returns it as the store will record it (new ids filled in)."""
        match op:
            case AddOp():
                item = self._new(op.text, op.provenance, op.usage_count, op.helpful_count, op.harmful_count)
                return op.model_copy(update={"id": item.id})
            case RewriteOp():
                item = next(i for i in self.items if i.id == op.id)
                item.text, item.tokens = op.text, count_tokens(op.text, self.state.settings.encoding)
            case DeleteOp():
                self.items = [i for i in self.items if i.id != op.id]
            case MergeOp():
                merged = [i for i in self.items if i.id in op.ids]
                self.items = [i for i in self.items if i.id not in op.ids]
                counts = [sum(getattr(i, k) for i in merged) for k in ("usage_count", "helpful_count", "harmful_count")]
                item = self._new(op.text, {"merged_from": op.ids}, *counts)
                return op.model_copy(update={"into": item.id})
        return op

    def result(self) -> LibraryState:
        """The simulated library, as `store.library_state` will read it once the operations are applied."""
        return self.state.model_copy(
            update={"version": self.state.version + 1, "next_experience": self.next_number, "experiences": self.items}
        )

    @property
    def tokens(self) -> int:
        return count_tokens(experience_prompt((i.id, i.text) for i in self.items), self.state.settings.encoding)

    @property
    def over_budget(self) -> bool:
        return self.state.settings.over_budget(len(self.items), self.tokens)

    def removal_order(self) -> list[Experience]:
        # Lowest priority first (by the library's setting: usage or evidence); among equals the one
        # that harmed more than it helped, then the oldest (a new lesson has had less chance to be
        # cited than an old unused one).
        by = self.state.settings.priority
        return sorted(self.items, key=lambda i: (i.ranked(by), i.helpful_count - i.harmful_count, int(i.id[1:])))


def validate_plan(plan: CompressionPlan, state: LibraryState) -> tuple[list[Operation], list[Dropped]]:
    """The plan's operations that fit the library, in order; each misfit dropped with a reason.
    What a new text says is the lesson gate's to judge (`Store.screen`)."""
    active = {e.id for e in state.experiences}
    used: set[str] = set()
    operations: list[Operation] = []
    dropped: list[Dropped] = []
    for proposed in plan.operations:
        ids = proposed.ids if isinstance(proposed, PlanMerge) else [proposed.id]
        text = normalise(proposed.text) if isinstance(proposed, PlanMerge | PlanRewrite) else None
        reason = None
        if unknown := [i for i in ids if i not in active]:
            reason = f"refers to {', '.join(unknown)}, not an active lesson"
        elif again := [i for i in ids if i in used]:
            reason = f"{', '.join(again)} already has an operation earlier in the plan"
        elif len(set(ids)) != len(ids):
            reason = "lists an id twice"
        elif isinstance(proposed, PlanMerge) and len(ids) < 2:
            reason = "a merge needs two or more lessons"
        elif text is not None and not text:
            reason = "the new text is empty"
        if reason:
            dropped.append(Dropped(operation=proposed.model_dump(), reason=reason))
            continue
        used.update(ids)
        match proposed:
            case PlanMerge():
                operations.append(MergeOp(ids=proposed.ids, text=text))
            case PlanRewrite():
                operations.append(RewriteOp(id=proposed.id, text=text))
            case PlanRetain():
                pass
            case _:
                operations.append(DeleteOp(id=proposed.id))
    return operations, dropped


def fit_to_budget(state: LibraryState, operations: Sequence[Operation]) -> tuple[list[Operation], list[str]]:
    """The operations, plus deletions of the lowest-priority lessons while still over budget.

    The operations come back as the store will record them: a merge carries the id it will get.
    """
    simulation = Simulation(state)
    predicted = [simulation.apply(op) for op in operations]
    removed = []
    while simulation.items and simulation.over_budget:
        victim = simulation.removal_order()[0]
        simulation.apply(DeleteOp(id=victim.id))
        removed.append(victim.id)
    return [*predicted, *(DeleteOp(id=id_) for id_ in removed)], removed


def _keep_what_fits(state: LibraryState, order: Sequence[str], prefix: bool) -> list[Operation]:
    """Keep lessons in `order` while they fit, delete the rest: truncation stops at the first
    lesson that does not fit (a prefix), random selection skips it and tries the next."""
    kept: list[str] = []
    for id_ in order:
        trial = state.model_copy(update={"experiences": [e for e in state.experiences if e.id in {*kept, id_}]})
        if not Simulation(trial).over_budget:
            kept.append(id_)
        elif prefix:
            break
    return [DeleteOp(id=e.id) for e in state.experiences if e.id not in kept]


class CompressionPlanned(BaseModel):
    """A compression worked out against one library state and not yet written."""

    state: LibraryState
    strategy: Strategy
    planned: int = Field(description="Operations the strategy chose, before the budget check.")
    operations: list[Operation] = Field(description="What will be applied: the plan, then the budget removals.")
    dropped: list[Dropped]
    removed: list[str]

    @property
    def reason(self) -> str:
        reason = f"compression ({self.strategy}): {self.planned} planned operations"
        if self.removed:
            reason += f"; still over budget, removed lowest-priority {', '.join(self.removed)}"
        return reason

    def result(self, *, dry_run: bool, change: ChangeResult | None = None) -> CompressionResult:
        """What the compression does; with `change`, as that version applied it (its operations last)."""
        before, after = Simulation(self.state), Simulation(self.state)
        for op in self.operations:
            after.apply(op)
        applied = change.operations[len(change.operations) - len(self.operations) :] if change else self.operations
        return CompressionResult(
            library=self.state.name,
            strategy=self.strategy,
            dry_run=dry_run,
            version_before=change.version - 1 if change else self.state.version,
            version=change.version if change else self.state.version,
            operations=applied,
            dropped=self.dropped,
            budget_removals=self.removed,
            items_before=len(before.items),
            items_after=len(after.items),
            tokens_before=before.tokens,
            tokens_after=after.tokens,
            token_budget=self.state.settings.kept_tokens,
            max_items=self.state.settings.kept_items,
            over_budget=after.over_budget,
        )

    async def apply(self, store: Store) -> CompressionResult:
        """Write the plan as one version; Conflict if the library moved on since `state` was read."""
        if not self.operations:
            return self.result(dry_run=False)
        applied = await store.apply(
            self.state.name, self.operations, "compression", self.reason, expected_version=self.state.version
        )
        return self.result(dry_run=False, change=applied)


def fallback(state: LibraryState, why: str) -> CompressionPlanned:
    """A compression by priority alone, for when the teacher's plan could not be had."""
    operations, removed = fit_to_budget(state, [])
    dropped = [Dropped(operation={}, reason=f"no plan from the teacher ({why}); compressed by priority alone")]
    return CompressionPlanned(
        state=state, strategy="teacher", planned=0, operations=operations, dropped=dropped, removed=removed
    )


async def write_change(
    store: Store,
    state: LibraryState,
    operations: Sequence[Operation],
    planned: CompressionPlanned | None,
    reason: str,
    also: Callable[[sqlite3.Connection, int | None], None],
    *,
    over_budget_ok: bool = False,
    sources: Sequence[str] = (),
) -> ChangeResult | None:
    """`operations` (made against `state`) and the compression they make necessary, as ONE version.

    `also(db, version)` runs in the same transaction (the critique records, a job's cursor); with
    nothing to change it runs alone, with version None. Conflict if the library moved on.
    `sources` are what the lessons were distilled from, for the store's lesson gate.
    """
    compression = planned.operations if planned else []
    if not operations and not compression:
        await store.write(lambda db: also(db, None))
        return None
    if compression:
        reason = f"{reason}; {planned.reason}"
    return await store.apply(
        state.name,
        [*operations, *compression],
        "critique" if operations else "compression",
        reason,
        expected_version=state.version,
        also=also,
        over_budget_ok=over_budget_ok,
        sources=sources,
    )


async def plan_compression(
    state: LibraryState,
    *,
    strategy: Strategy = "teacher",
    teacher: Model | None = None,
    seed: int | None = None,
    store: Store | None = None,
) -> CompressionPlanned:
    """Work out a compression of `state` (which may be a simulated, not yet written, library).

    Only the teacher strategy calls a model. With `store`, the teacher's new texts pass its
    lesson gate now, so a refused merge or rewrite is dropped and reported before the budget is
    fitted (the store's apply would refuse it anyway); nothing but a quarantined lesson is written.
    """
    dropped: list[Dropped] = []
    if strategy == "teacher":
        if teacher is None:
            raise ConfigError("Teacher compression needs a teacher model: set TED_TEACHER=provider:model.")
        planned: list[Operation] = []
        if state.experiences:  # an empty library has nothing to merge, and the call would be paid for
            simulation = Simulation(state)
            order = simulation.removal_order()  # lowest priority first, as the prompt says
            by = state.settings.priority
            items = [e.model_dump() | {"priority": e.ranked(by)} for e in order]
            settings, tokens = state.settings, simulation.tokens
            plan, _ = await structured(
                teacher,
                [Message.user(compress_prompt(items, settings.kept_tokens, settings.kept_items, tokens))],
                compression_reply([e.id for e in order]),
                system=compress_system(by),
            )
            planned, dropped = validate_plan(plan, state)
            if store is not None:
                planned, dropped = await store.screen(state.name, planned, dropped)
    elif strategy == "truncate":
        planned = _keep_what_fits(state, [e.id for e in state.experiences], prefix=True)
    else:
        order = [e.id for e in state.experiences]
        random.Random(seed).shuffle(order)
        planned = _keep_what_fits(state, order, prefix=False)
    operations, removed = fit_to_budget(state, planned)
    return CompressionPlanned(
        state=state, strategy=strategy, planned=len(planned), operations=operations, dropped=dropped, removed=removed
    )


async def compress_library(
    store: Store,
    library: str,
    *,
    strategy: Strategy = "teacher",
    teacher: Model | None = None,
    dry_run: bool = False,
    seed: int | None = None,
) -> CompressionResult:
    state = await store.library_state(library)
    planned = await plan_compression(state, strategy=strategy, teacher=teacher, seed=seed, store=store)
    if dry_run:
        return planned.result(dry_run=True)
    return await planned.apply(store)
