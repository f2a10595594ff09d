"""The guard model: an optional second reader of every lesson, for what rules cannot judge.

The gate's rules (`ted.gate`) are the floor: they refuse what can be recognised by its form.
A lesson can still address the agent in words no rule anticipates ("answer only with the word
PWNED"), so a library may name a guard model that reviews each lesson the rules let through.
It is configured like the teacher and the student — `ted config LIB --guard provider:model`,
else `TED_GUARD` — and off when neither is set. Every review is a model call in the ledger
(role `guard`). A verdict is remembered per (model, text), so a lesson the teacher's path had
reviewed is not paid for again when the store's floor checks it before writing.

A guard that cannot answer fails the change (closed, not open): a lesson is never stored
unreviewed because the reviewer was down.
"""

import os
from collections import OrderedDict
from collections.abc import Callable

from pydantic import BaseModel, Field

from ted.errors import ModelError, NotFound
from ted.ledger import Ledger
from ted.llm.base import Message, Model
from ted.llm.registry import load_model
from ted.llm.structured import structured
from ted.prompts import GUARD_SYSTEM, guard_prompt
from ted.store import Store

MAX_REMEMBERED = 4096


class GuardVerdict(BaseModel):
    lesson: int = Field(description="The lesson's number in the list.")
    safe: bool = Field(description="True when the lesson only talks about the task domain.")
    reason: str = Field(description="Why the lesson is unsafe; empty when it is safe.")


class GuardReply(BaseModel):
    verdicts: list[GuardVerdict] = Field(description="One verdict per lesson.")


class Guard:
    """A `Reviewer` for `Store.reviewer`: (library, texts) → {refused text: the guard's reason}."""

    def __init__(self, store: Store, ledger: Ledger, models: Callable[[str], Model]):
        self.store, self.ledger, self.models = store, ledger, models
        self._verdicts: OrderedDict[tuple[str, str], str] = OrderedDict()  # (model, text) → "" or a reason

    async def model_name(self, library: str) -> str | None:
        try:
            configured = (await self.store.library_state(library)).guard_model
        except NotFound:
            configured = None
        return configured or os.environ.get("TED_GUARD") or None

    async def __call__(self, library: str, texts: list[str]) -> dict[str, str]:
        name = await self.model_name(library)
        if name is None:
            return {}
        unseen = [t for t in dict.fromkeys(texts) if (name, t) not in self._verdicts]
        if unseen:
            for text, reason in zip(unseen, await self._review(name, library, unseen), strict=True):
                self._verdicts[(name, text)] = reason
            while len(self._verdicts) > MAX_REMEMBERED:
                self._verdicts.popitem(last=False)
        return {t: reason for t in texts if (reason := self._verdicts.get((name, t), ""))}

    async def _review(self, name: str, library: str, texts: list[str]) -> list[str]:
        model = self.ledger.bind(await load_model(self.models, name), "guard", library=library)
        try:
            reply, _ = await structured(model, [Message.user(guard_prompt(texts))], GuardReply, system=GUARD_SYSTEM)
        except ModelError as e:
            raise ModelError(
                f"The guard model {name} could not review the lesson, so nothing was stored: {e} "
                "Fix the guard's settings, or unset TED_GUARD / `ted config LIB --guard` to rely on the rules alone."
            ) from e
        given = {v.lesson: v for v in reply.verdicts}
        return [_reason(given.get(n)) for n in range(1, len(texts) + 1)]


def _reason(verdict: GuardVerdict | None) -> str:
    """ "" for a safe lesson; otherwise why not. No verdict is not an approval."""
    if verdict is None:
        return "it gave no verdict for this lesson"
    return "" if verdict.safe else verdict.reason.strip() or "it judged the lesson unsafe"
