"""Property tests: whatever the library and whatever the teacher proposes, compression applies
cleanly, keeps ids stable, sums counts on merge, and leaves the library within budget."""

import tempfile
from pathlib import Path

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ted.store import Store
from ted.store.records import AddOp, LibrarySettings
from ted.teacher.compression import fit_to_budget, validate_plan
from ted.teacher.replies import CompressionPlan, PlanDelete, PlanMerge, PlanRetain, PlanRewrite

WORDS = [
    "check",
    "units",
    "before",
    "adding",
    "rates",
    "per",
    "hour",
    "draw",
    "a",
    "table",
    "of",
    "cases",
    "verify",
    "the",
    "final",
    "answer",
    "against",
    "constraints",
    "estimate",
    "first",
    "then",
    "compute",
]

lesson = st.lists(st.sampled_from(WORDS), min_size=3, max_size=60).map(lambda ws: " ".join(ws).capitalize() + ".")
some_id = st.integers(min_value=1, max_value=40).map(lambda n: f"E{n}")  # ids past the library are unknown
plan_op = st.one_of(
    st.builds(PlanMerge, op=st.just("merge"), ids=st.lists(some_id, min_size=1, max_size=4), text=lesson),
    st.builds(PlanRewrite, op=st.just("rewrite"), id=some_id, text=lesson),
    st.builds(PlanDelete, op=st.just("delete"), id=some_id, reason=st.just("")),
    st.builds(PlanRetain, op=st.just("retain"), id=some_id),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(lesson, min_size=0, max_size=30),
    usage=st.lists(st.integers(min_value=0, max_value=50), min_size=30, max_size=30),
    budget=st.integers(min_value=50, max_value=1500),
    cap=st.integers(min_value=1, max_value=15),
    plan=st.lists(plan_op, max_size=12),
)
def test_any_plan_leaves_the_library_valid_and_within_budget(texts, usage, budget, cap, plan):
    anyio.run(_check, texts, usage, budget, cap, plan)


async def _check(texts, usage, budget, cap, plan):
    with tempfile.TemporaryDirectory() as tmp:
        async with Store.open(Path(tmp) / "ted.db") as store:
            if texts:
                # Learned under a larger budget, which was then lowered: no version is over its budget.
                await store.configure("p", token_budget=200_000, max_items=1000)
                ops = [AddOp(text=t, usage_count=usage[i], helpful_count=usage[i] // 2) for i, t in enumerate(texts)]
                await store.apply("p", ops, "import", "seed")
            await store.configure("p", token_budget=budget, max_items=cap)
            state = await store.library_state("p")
            before = {e.id: e for e in state.experiences}

            operations, dropped = validate_plan(CompressionPlan(operations=plan), state)
            final, removed = fit_to_budget(state, operations)
            # Every proposal is applied, dropped with a reason, or a retain (which applies nothing).
            retains = sum(op.op == "retain" for op in plan)
            assert len(plan) - retains <= len(operations) + len(dropped) <= len(plan)
            assert all(d.reason for d in dropped)
            if final:
                result = await store.apply("p", final, "compression", "property", expected_version=state.version)
                assert not result.over_budget
            prompt = await store.experience_prompt("p")
            settings_ = LibrarySettings(token_budget=budget, max_items=cap)
            assert prompt.tokens <= settings_.token_budget and len(prompt.items) <= settings_.max_items
            assert not prompt.over_budget

            after = {e.id: e for e in await store.experiences("p", active_only=False)}
            for op in (o for o in final if o.op == "merge"):
                if op.into in after:  # the merged lesson may itself have been removed for budget
                    assert after[op.into].usage_count == sum(before[i].usage_count for i in op.ids)
                    assert after[op.into].provenance == {"merged_from": op.ids}
                for id_ in op.ids:
                    assert after[id_].state == "retired" and after[id_].merged_into == op.into
            # Ids are stable: every surviving old lesson keeps its id; new ids come after the old ones.
            for item in prompt.items:
                assert item.id in before or int(item.id[1:]) > len(texts)
            assert set(removed) <= set(after)
