"""The ledger: one row per model call, the source of every cost and token figure.

`Ledger.bind(model, role, …, settings=…)` wraps a model so that each call through it — including
a structured reply's repair call, and calls that fail — is made with the role's generation
settings (max_tokens, temperature, top_p, seed) and timed and recorded with what it served and
the settings it was made with. Code that talks to models never records anything by hand.

With a `key` (a job's name for one step, e.g. "e0/p17/critique"), a successful call also stores
its reply, and a later call under the same job and key gets that reply back without calling the
model: a resumed job never pays twice. The n-th call through one bound model uses `key#n`
(n > 1), so a structured reply's repair call is replayed as the repair, not as the first reply.
"""

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from ted.errors import ModelError
from ted.llm.base import SAMPLING, Completion, GenerationSettings, Message, Model, OutputSchema, Usage
from ted.pricing import cost_usd, unpriced_models
from ted.store import Store
from ted.store.database import timestamp

# `check`: the one short call `ted setup` makes to see that a model answers; `guard`: a lesson review.
Role = Literal[
    "student", "teacher-solve", "summarise", "critique", "compress", "check", "guard", "validation", "evidence"
]


class RoleTotals(BaseModel):
    role: str
    model: str
    calls: int
    failed: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = Field(0, description="Of input_tokens, those read from the provider's prompt cache.")
    cache_write_tokens: int = Field(0, description="Of input_tokens, those written to the provider's prompt cache.")
    cost_usd: float | None
    latency_ms: int


class CostSummary(BaseModel):
    """Totals from the ledger, with the per-role rows they came from."""

    calls: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = Field(0.0, description="Null when some call's model has no price.")
    unpriced_models: list[str] = Field(default_factory=list)
    by_role: list[RoleTotals] = Field(default_factory=list)

    @classmethod
    def from_totals(cls, totals: Sequence[RoleTotals], models: Sequence[str] = ()) -> "CostSummary":
        """Sum `Ledger.totals(...)` rows; one unpriced model makes the total unknown, not low.

        `models` are the ones the work uses (a job's student and teacher): one without a price
        makes the total unknown before its first call too, not $0 until then.
        """
        unpriced = sorted({t.model for t in totals if t.cost_usd is None} | set(unpriced_models(models)))
        return cls(
            calls=sum(t.calls for t in totals),
            failed=sum(t.failed for t in totals),
            input_tokens=sum(t.input_tokens for t in totals),
            output_tokens=sum(t.output_tokens for t in totals),
            cache_read_tokens=sum(t.cache_read_tokens for t in totals),
            cache_write_tokens=sum(t.cache_write_tokens for t in totals),
            cost_usd=None if unpriced else sum(t.cost_usd or 0.0 for t in totals),
            unpriced_models=unpriced,
            by_role=list(totals),
        )


class RecordedModel:
    """A model whose every call is made with one role's settings and lands in the ledger."""

    def __init__(
        self,
        inner: Model,
        ledger: "Ledger",
        role: Role,
        scope: dict[str, str | None],
        key: str | None = None,
        settings: GenerationSettings | None = None,
        defer: bool = False,
    ):
        self.inner = inner
        self.name = inner.name
        self._ledger = ledger
        self._role = role
        self._scope = scope
        self._key = key
        self._settings = settings or GenerationSettings()
        self._calls = 0
        self._defer = defer
        # With `defer`, the rows of successful calls wait here for the caller to write them in its
        # own transaction (`Ledger.writer`): a student's reply and the attempt it became commit
        # together, and the reply is stored once, as the attempt's trajectory.
        self.deferred: list[dict[str, Any]] = []

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        output: OutputSchema | None = None,
        settings: GenerationSettings | None = None,
    ) -> Completion:
        self._calls += 1
        key = None if self._key is None else self._key if self._calls == 1 else f"{self._key}#{self._calls}"
        # A deferred call's reply is kept as what the caller writes with it, not replayed from here.
        replay = key is not None and not self._defer
        if replay and (stored := await self._ledger.stored_reply(self._scope["job_id"], key)) is not None:
            return stored.model_copy(update={"model": self.name})
        # Recorded as sent: without the sampling settings the provider does not take.
        settings = (
            (settings or GenerationSettings()).over(self._settings).keep(getattr(self.inner, "sampling", SAMPLING))
        )
        call = Call(role=self._role, model=self.name, scope=self._scope, settings=settings, started=time.perf_counter())
        try:
            completion = await self.inner.complete(messages, system=system, output=output, settings=settings)
        except ModelError as e:
            await self._ledger.record(call, None, error=str(e))
            raise
        if self._defer:
            self.deferred.append(self._ledger.row(call, completion, key=key, reply=False))
        else:
            await self._ledger.record(call, completion, key=key)
        return completion


class Call(BaseModel):
    """One model call being made: what the ledger row will say about it besides its outcome."""

    role: Role
    model: str
    scope: dict[str, str | None]
    settings: GenerationSettings
    started: float

    @property
    def settings_json(self) -> str:
        """The settings as sent, max_tokens always (its default made explicit)."""
        return self.settings.model_copy(update={"max_tokens": self.settings.output_tokens}).model_dump_json(
            exclude_none=True
        )


class Ledger:
    def __init__(self, store: Store):
        self.store = store
        # job id → the keys it stored in this process, for a job that had no keyed call before it
        # began here: any other key of it cannot have a stored reply, so none is looked up.
        self._fresh: dict[str, set[str]] = {}

    async def begin(self, job_id: str) -> None:
        """Before a job runs here: whether it has replies to replay at all (a resumed one)."""
        sql = "SELECT 1 FROM model_calls WHERE job_id = ? AND call_key IS NOT NULL LIMIT 1"
        if await self.store.read(lambda db: db.execute(sql, (job_id,)).fetchone()) is None:
            self._fresh[job_id] = set()
        else:
            self._fresh.pop(job_id, None)

    def bind(
        self,
        model: Model,
        role: Role,
        *,
        library: str | None = None,
        task_id: str | None = None,
        job_id: str | None = None,
        key: str | None = None,
        settings: GenerationSettings | None = None,
        defer: bool = False,
    ) -> RecordedModel:
        """`model`, called with `settings` and recording every call; with `key`, replaying the reply
        stored under (job_id, key); with `defer`, leaving successful calls' rows to the caller."""
        scope = {"library": library, "task_id": task_id, "job_id": job_id}
        return RecordedModel(model, self, role, scope, key, settings, defer)

    async def stored_reply(self, job_id: str | None, key: str) -> Completion | None:
        if job_id in self._fresh and key not in self._fresh[job_id]:
            return None
        sql = (
            "SELECT reply, reasoning, input_tokens, output_tokens FROM model_calls"
            " WHERE job_id IS ? AND call_key = ? AND ok AND reply IS NOT NULL ORDER BY id DESC LIMIT 1"
        )
        if (row := await self.store.read(lambda db: db.execute(sql, (job_id, key)).fetchone())) is None:
            return None
        usage = Usage(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"])
        return Completion(text=row["reply"], reasoning=row["reasoning"], usage=usage, model="")

    async def forget(self, job_id: str, key: str) -> None:
        """Stop replaying what was stored under `key` and its repair calls (`key#n`).

        For a reply that proved unusable even after its repair: replayed, it would fail the
        resumed job the same way forever, so the resumed job asks again. The rows stay, with
        their cost; they only lose the key.
        """
        sql = "UPDATE model_calls SET call_key = NULL WHERE job_id = ? AND (call_key = ? OR substr(call_key, 1, ?) = ?)"
        await self.store.write(lambda db: db.execute(sql, (job_id, key, len(key) + 1, f"{key}#")))

    async def record(
        self, call: Call, completion: Completion | None, *, error: str | None = None, key: str | None = None
    ) -> None:
        await self.store.write(self.writer(self.row(call, completion, error=error, key=key)))

    def writer(self, *rows: dict[str, Any]) -> Callable[[sqlite3.Connection], None]:
        """What writes these ledger rows, inside whatever transaction runs it."""

        def write(db: sqlite3.Connection) -> None:
            for row in rows:
                columns, marks = ", ".join(row), ", ".join("?" * len(row))
                db.execute(f"INSERT INTO model_calls ({columns}) VALUES ({marks})", tuple(row.values()))

        return write

    def row(
        self,
        call: Call,
        completion: Completion | None,
        *,
        error: str | None = None,
        key: str | None = None,
        reply: bool = True,
    ) -> dict[str, Any]:
        """The ledger row of a call, under `key`; with `reply`, holding the reply for a resumed job
        to replay."""
        usage = completion.usage if completion else Usage()
        tokens = usage.model_dump(include={"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"})
        row = {
            "role": call.role,
            "model": call.model,
            **tokens,
            "cost_usd": cost_usd(call.model, **tokens),
            "latency_ms": round((time.perf_counter() - call.started) * 1000),
            "ok": error is None,
            "error": error,
            **call.scope,
            "settings": call.settings_json,
            "created_at": timestamp(),
        }
        if key is not None:
            row["call_key"] = key
        if key is not None and completion is not None and reply:
            row |= {"reply": completion.text, "reasoning": completion.reasoning}
            if (stored := self._fresh.get(call.scope["job_id"])) is not None:
                stored.add(key)
        return row

    async def totals(self, *, library: str | None = None, job_id: str | None = None) -> list[RoleTotals]:
        """Calls, tokens and cost per (role, model), optionally for one library or job.

        Read from `ledger_totals`, which triggers keep as rows are recorded: as cheap at a million
        calls as at ten.
        """
        where, args = [], []
        for column, value in (("library", library), ("job_id", job_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = (
            "SELECT role, model, sum(calls) AS calls, sum(failed) AS failed, sum(input_tokens) AS input_tokens,"
            " sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens,"
            " sum(cache_write_tokens) AS cache_write_tokens,"
            " CASE WHEN sum(unpriced) = 0 THEN sum(cost_usd) END AS cost_usd,"
            " sum(latency_ms) AS latency_ms FROM ledger_totals"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " GROUP BY role, model ORDER BY role, model"
        )
        rows = await self.store.read(lambda db: db.execute(sql, args).fetchall())
        return [RoleTotals(**dict(row)) for row in rows]
