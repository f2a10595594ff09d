"""The providers' prompt cache: the system prompt (the student's library) marked for Anthropic's
cache and left to OpenAI's automatic one, cache reads and writes read from each wire format by the
real SDKs, kept in the ledger, priced, and reported as the share of the student's input tokens a
distillation got from the cache. The local model server answers caching as each provider does."""

import json

import pytest
from test_llm_adapters import make

from ted.ledger import Ledger
from ted.llm import GenerationSettings, Message
from ted.pricing import cost_usd
from ted.runs.datasets import dataset_from_items
from ted.runs.distill import run_job
from ted.runs.prepare import create_job, prepare_job
from ted.runs.report import distill_report
from ted.store import Store
from ted.testing import ModelServer
from ted.testing.classroom import Classroom, problems

pytestmark = pytest.mark.anyio

LIBRARY = "Lessons from earlier attempts.\n" + "\n".join(f"[E{i}] {'Check each step twice. ' * 12}" for i in range(30))
TOKENS = -(-len(LIBRARY) // 4)  # the model server's rule: 4 characters a token


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_a_long_system_prompt_is_written_once_then_read_from_the_cache(provider):
    assert TOKENS >= 1024
    async with ModelServer(["one", "two", "three"]) as server:
        model = make(provider, server)
        usages = [
            (await model.complete([Message.user(q)], system=LIBRARY, settings=GenerationSettings(max_tokens=20))).usage
            for q in ("first?", "second?", "third?")
        ]
        await model.aclose()
    whole = [r.input_tokens for r in server.requests]
    assert [u.input_tokens for u in usages] == whole  # every prompt token counted, cached or not
    reads = [u.cache_read_tokens for u in usages]
    writes = [u.cache_write_tokens for u in usages]
    if provider == "anthropic":
        assert all(r.body["system"][0]["cache_control"] == {"type": "ephemeral"} for r in server.requests)
        assert writes == [TOKENS, 0, 0] and reads == [0, TOKENS, TOKENS]
    else:  # OpenAI caches by itself, bills no write, and reads in blocks of 128 tokens
        assert writes == [0, 0, 0] and reads == [0, TOKENS // 128 * 128, TOKENS // 128 * 128]


async def test_a_short_system_prompt_is_not_cached():
    async with ModelServer(["a", "b"]) as server:
        model = make("anthropic", server)
        usages = [(await model.complete([Message.user("q")], system="Be brief.")).usage for _ in range(2)]
        await model.aclose()
    assert all(u.cache_read_tokens == u.cache_write_tokens == 0 for u in usages)


async def test_calls_in_flight_before_the_first_answer_each_write_the_cache():
    import anyio

    async with ModelServer(lambda r: "ok", latency=0.3) as server:
        model = make("anthropic", server)
        usages = []

        async def call() -> None:
            usages.append((await model.complete([Message.user("q")], system=LIBRARY)).usage)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(call)
        later = (await model.complete([Message.user("q")], system=LIBRARY)).usage
        await model.aclose()
    assert [u.cache_write_tokens for u in usages] == [TOKENS] * 3
    assert later.cache_read_tokens == TOKENS and later.cache_write_tokens == 0


def test_cache_reads_and_writes_have_their_own_prices(monkeypatch, tmp_path):
    # Anthropic: a read is a tenth of the input price, a write 1.25 times it.
    full = cost_usd("anthropic:claude-sonnet-4-5", 10_000, 1_000)
    cached = cost_usd("anthropic:claude-sonnet-4-5", 10_000, 1_000, cache_read_tokens=8_000)
    written = cost_usd("anthropic:claude-sonnet-4-5", 10_000, 1_000, cache_write_tokens=8_000)
    assert full == pytest.approx((10_000 * 3 + 1_000 * 15) / 1e6)
    assert cached == pytest.approx((2_000 * 3 + 8_000 * 0.3 + 1_000 * 15) / 1e6)
    assert written == pytest.approx((2_000 * 3 + 8_000 * 3.75 + 1_000 * 15) / 1e6)
    # OpenAI's gpt-4.1 family: a read is a quarter of the input price, and there is no write price.
    assert cost_usd("openai:gpt-4.1-mini", 10_000, 0, cache_read_tokens=8_000) == pytest.approx(
        (2_000 * 0.4 + 8_000 * 0.1) / 1e6
    )
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"local:": [1.0, 2.0, 0.5, 1.5], "local:two": [1.0, 2.0]}))
    monkeypatch.setenv("TED_PRICES", str(prices))
    assert cost_usd("local:x", 1_000, 0, cache_read_tokens=400, cache_write_tokens=200) == pytest.approx(
        (400 * 1.0 + 400 * 0.5 + 200 * 1.5) / 1e6
    )
    # Two prices given: a cached token costs what any input token does.
    assert cost_usd("local:two", 1_000, 0, cache_read_tokens=400) == pytest.approx(1_000 * 1.0 / 1e6)


async def test_a_distillation_reports_the_share_of_student_tokens_served_from_the_cache(tmp_path, monkeypatch):
    """The student's system prompt (instructions and library) is the same for every rollout of a
    batch, so all but the calls racing the first answer read it from the cache."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"local:": [1.0, 2.0, 0.1, 1.25]}))
    monkeypatch.setenv("TED_PRICES", str(prices))
    classroom = Classroom()
    async with (
        ModelServer(classroom.reply_to_request, cache_min_tokens=20) as server,
        Store.open(tmp_path / "ted.db") as store,
    ):
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        from ted.llm.registry import get_model

        data = await dataset_from_items(problems(6))
        prepared = await prepare_job(
            store,
            get_model,
            data,
            library="arith",
            student="local:student",
            teacher="local:teacher",
            epochs=2,
            rollouts=4,
            concurrency=3,
        )
        job = await run_job(store, Ledger(store), get_model, (await create_job(store, prepared)).id)
        report = await distill_report(store, Ledger(store), job)
    student = [r for r in server.requests if r.body["model"] == "student"]
    read = sum(r.cache_read_tokens for r in student)
    assert read > 0
    assert report.student_cache_share == pytest.approx(read / sum(r.input_tokens for r in student))
    [totals] = [t for t in report.cost.by_role if t.role == "student"]
    assert totals.cache_read_tokens == read
    # Priced as read: every student call's cost from its own usage.
    expected = sum(cost_usd("local:student", r.input_tokens, r.output_tokens, r.cache_read_tokens) for r in student)
    assert totals.cost_usd == pytest.approx(expected)
