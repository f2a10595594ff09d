"""Compression: keeping a library within its budget (tokens and item cap).

The teacher strategy shows the teacher every lesson with its priority s(e) = log(1 + usage),
its helpful/harmful counts and tokens, and asks for merge / rewrite / delete / retain. Its plan
is validated (unknown ids, an id used twice, unsafe text: dropped and reported), then the
resulting library is simulated exactly as the store will build it and counted with the real
tokenizer; while it is still over budget the lowest-priority lesson is removed. The plan and
those removals are applied as one version, so the library is never left over budget and the
whole compression can be rolled back. `truncate` and `random` reproduce the paper's ablations.
"""

import math
import random
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from ted.errors import ConfigError
from ted.llm.base import Message, Model
from ted.llm.structured import structured
from ted.models import DeleteOp, LibraryState, MergeOp, Operation, RewriteOp
from ted.prompts import COMPRESS_SYSTEM, compress_prompt, experience_prompt
from ted.replies import CompressionPlan, PlanMerge, PlanRetain, PlanRewrite
from ted.safety import lesson_problem
from ted.store import Store
from ted.tokens import count_tokens

Strategy = Literal["teacher", "truncate", "random"]


class Dropped(BaseModel):
    """A proposed operation that was not applied, and why."""

    operation: dict
    reason: str


class CompressionResult(BaseModel):
    library: str
    strategy: Strategy
    dry_run: bool
    version_before: int
    version: int
    operations: list[Operation]
    dropped: list[Dropped]
    budget_removals: list[str]
    items_before: int
    items_after: int
    tokens_before: int
    tokens_after: int
    token_budget: int
    max_items: int
    over_budget: bool


class _Item(BaseModel):
    id: str
    text: str
    usage_count: int
    helpful_count: int
    harmful_count: int


class Simulation:
    """The library as the store will hold it after some operations, with the same new ids."""

    def __init__(self, state: LibraryState):
        self.state = state
        self.items = [_Item(**e.model_dump()) for e in state.experiences]
        self.next_number = state.next_experience

    def apply(self, op: Operation) -> None:
        match op:
            case RewriteOp():
                next(i for i in self.items if i.id == op.id).text = op.text
            case DeleteOp():
                self.items = [i for i in self.items if i.id != op.id]
            case MergeOp():
                merged = [i for i in self.items if i.id in op.ids]
                self.items = [i for i in self.items if i.id not in op.ids]
                self.items.append(
                    _Item(
                        id=f"E{self.next_number}",
                        text=op.text,
                        **{k: sum(getattr(i, k) for i in merged) for k in ("usage_count", "helpful_count", "harmful_count")},
                    )
                )
                self.next_number += 1

    @property
    def tokens(self) -> int:
        return count_tokens(experience_prompt((i.id, i.text) for i in self.items), self.state.settings.encoding)

    @property
    def over_budget(self) -> bool:
        settings = self.state.settings
        return len(self.items) > settings.max_items or self.tokens > settings.token_budget

    def removal_order(self) -> list[_Item]:
        # Lowest priority first; among equals the one that harmed more than it helped, then the
        # oldest (a new lesson has had less chance to be cited than an old unused one).
        return sorted(
            self.items,
            key=lambda i: (math.log1p(i.usage_count), i.helpful_count - i.harmful_count, int(i.id[1:])),
        )


def validate_plan(plan: CompressionPlan, state: LibraryState) -> tuple[list[Operation], list[Dropped]]:
    """The plan's operations that fit the library, in order; each misfit dropped with a reason."""
    active = {e.id for e in state.experiences}
    used: set[str] = set()
    operations: list[Operation] = []
    dropped: list[Dropped] = []
    for proposed in plan.operations:
        ids = proposed.ids if isinstance(proposed, PlanMerge) else [proposed.id]
        reason = None
        if unknown := [i for i in ids if i not in active]:
            reason = f"refers to {', '.join(unknown)}, not an active lesson"
        elif again := [i for i in ids if i in used]:
            reason = f"{', '.join(again)} already has an operation earlier in the plan"
        elif len(set(ids)) != len(ids):
            reason = "lists an id twice"
        elif isinstance(proposed, PlanMerge | PlanRewrite) and (problem := lesson_problem(proposed.text)):
            reason = f"the new text {problem}"
        if reason:
            dropped.append(Dropped(operation=proposed.model_dump(), reason=reason))
            continue
        used.update(ids)
        match proposed:
            case PlanMerge():
                operations.append(MergeOp(ids=proposed.ids, text=proposed.text))
            case PlanRewrite():
                operations.append(RewriteOp(id=proposed.id, text=proposed.text))
            case PlanRetain():
                pass
            case _:
                operations.append(DeleteOp(id=proposed.id))
    return operations, dropped


def fit_to_budget(state: LibraryState, operations: Sequence[Operation]) -> tuple[list[Operation], list[str]]:
    """The operations, plus deletions of the lowest-priority lessons while still over budget."""
    simulation = Simulation(state)
    for op in operations:
        simulation.apply(op)
    removed = []
    while simulation.items and simulation.over_budget:
        victim = simulation.removal_order()[0]
        simulation.apply(DeleteOp(id=victim.id))
        removed.append(victim.id)
    return [*operations, *(DeleteOp(id=id_) for id_ in removed)], removed


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
    before = Simulation(state)
    dropped: list[Dropped] = []
    if strategy == "teacher":
        if teacher is None:
            raise ConfigError("Teacher compression needs a teacher model: set TED_TEACHER=provider:model.")
        items = [e.model_dump() for e in state.experiences]
        plan, _ = await structured(
            teacher,
            [Message.user(compress_prompt(items, state.settings.token_budget, state.settings.max_items, before.tokens))],
            CompressionPlan,
            system=COMPRESS_SYSTEM,
        )
        planned, dropped = validate_plan(plan, state)
    elif strategy == "truncate":
        planned = _keep_what_fits(state, [e.id for e in state.experiences], prefix=True)
    else:
        order = [e.id for e in state.experiences]
        random.Random(seed).shuffle(order)
        planned = _keep_what_fits(state, order, prefix=False)
    operations, removed = fit_to_budget(state, planned)

    after = Simulation(state)
    for op in operations:
        after.apply(op)
    version = state.version
    if operations and not dry_run:
        reason = f"compression ({strategy}): {len(planned)} planned operations"
        if removed:
            reason += f"; still over budget, removed lowest-priority {', '.join(removed)}"
        applied = await store.apply(library, operations, "compression", reason, expected_version=state.version)
        operations, version = applied.operations, applied.version
    return CompressionResult(
        library=library,
        strategy=strategy,
        dry_run=dry_run,
        version_before=state.version,
        version=version,
        operations=operations,
        dropped=dropped,
        budget_removals=removed,
        items_before=len(before.items),
        items_after=len(after.items),
        tokens_before=before.tokens,
        tokens_after=after.tokens,
        token_budget=state.settings.token_budget,
        max_items=state.settings.max_items,
        over_budget=after.over_budget,
    )
