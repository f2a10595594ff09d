"""The ledger's replay of a job's keyed calls: a resumed job gets back what it paid for; a job
that never ran before is not made to look its replies up, call after call."""

import pytest

from ted.ledger import Ledger
from ted.llm import Message, ScriptedModel
from ted.store import Store

pytestmark = pytest.mark.anyio


class CountingReads:
    """Counts the store's reads while a job's calls are made."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        read = store.read

        async def counted(fn):
            self.count += 1
            return await read(fn)

        monkeypatch.setattr(store, "read", counted)


async def test_a_fresh_job_looks_up_no_reply_and_a_resumed_one_replays_them(db_path, monkeypatch):
    async with Store.open(db_path) as store:
        ledger = Ledger(store)
        await ledger.begin("job-1")
        reads = CountingReads(store, monkeypatch)
        model = ScriptedModel(["first", "second"], name="scripted:m")
        for n in range(2):
            completion = await ledger.bind(model, "student", job_id="job-1", key=f"k{n}").complete([Message.user("q")])
            assert completion.text == ("first", "second")[n]
        assert reads.count == 0  # no lookup for keys this process has not stored
        # The same key asked again in this run is replayed, not paid again.
        again = await ledger.bind(model, "student", job_id="job-1", key="k0").complete([Message.user("q")])
        assert again.text == "first" and reads.count == 1 and len(model.requests) == 2

        resumed = Ledger(store)  # another process resuming the job
        await resumed.begin("job-1")
        replayed = await resumed.bind(model, "student", job_id="job-1", key="k1").complete([Message.user("q")])
        assert replayed.text == "second" and len(model.requests) == 2
