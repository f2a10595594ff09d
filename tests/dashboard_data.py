"""A database as a real small distillation leaves it, for the dashboard's tests.

Everything goes through ted's own functions and the OpenAI SDK over HTTP to the local model
server answering as the classroom: a lesson written by hand, a two-epoch distillation that adds
the subtraction and multiplication lessons and compresses the library to its 2-lesson cap
(retiring a lesson), an evaluation of the result, and one lesson held for review.
"""

from dataclasses import dataclass
from pathlib import Path

from ted import agent
from ted.ledger import Ledger
from ted.llm import ModelSettings
from ted.llm.registry import get_model
from ted.runs.datasets import dataset_from_items
from ted.runs.distill import run_job
from ted.runs.evaluate import evaluate
from ted.runs.prepare import create_job, prepare_job
from ted.store import Store, review
from ted.testing.classroom import problems

LIBRARY = "arith"
HELD_TEXT = "When a question gives a total and a part, subtract the part before dividing the rest."


@dataclass
class Prepared:
    path: Path
    job_id: str
    evaluation_id: str
    held_id: int


def models_at(base_url: str):
    """`provider:model` → the OpenAI adapter on the local model server (local:student, local:teacher)."""
    settings = ModelSettings(base_url=base_url, max_retries=0)
    return lambda name: get_model(name, settings)


async def prepare(path: Path, base_url: str) -> Prepared:
    models = models_at(base_url)
    async with Store.open(path) as store:
        ledger = Ledger(store)
        await store.configure(LIBRARY, teacher="local:teacher", student="local:student", max_items=2)
        await agent.add_experience(store, LIBRARY, "Read the question twice before computing anything.")
        data = await dataset_from_items(problems(6))
        prepared = await prepare_job(store, models, data, library=LIBRARY, epochs=2, rollouts=2, concurrency=3)
        job = await run_job(store, ledger, models, (await create_job(store, prepared)).id)
        assert job.state == "done", job.error
        student = models("local:student")
        report = await evaluate(store, ledger, student, LIBRARY, data.problems, dataset="classroom-6")
        held = await review.hold(store, LIBRARY, HELD_TEXT, "mentions a rule the checks could not judge", "critique")
        for model in {models("local:student"), models("local:teacher")}:
            await model.aclose()
    return Prepared(path=path, job_id=job.id, evaluation_id=report.id, held_id=held.id)
