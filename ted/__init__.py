"""ted-mcp's library: TED experience libraries, their teacher, and runs over datasets.

    import ted

    async with ted.Store.open("ted.db") as store:
        await ted.add_experience(store, "gsm8k", "Write the units of every quantity before combining them.")
        prompt = await ted.get_experiences(store, "gsm8k")  # prompt.prompt goes before your system prompt

The names in `__all__` are the public API; the modules behind them are private and may change.
Nothing heavy is imported here: the provider SDKs, numpy, matplotlib and math-verify load on
first use.
"""

from ted.agent import (
    add_experience,
    diff,
    edit_experience,
    get_experiences,
    promote,
    record_attempt,
    remove_experience,
    rollback,
)
from ted.errors import ConfigError, Conflict, InvalidInput, InvalidReply, ModelError, NotFound, StoreError, TedError
from ted.ledger import Ledger
from ted.llm import Completion, GenerationSettings, Message, Model, ModelSettings, get_model
from ted.runs.datasets import Dataset, Problem, dataset_from_items, load_dataset
from ted.runs.distill import run_job
from ted.runs.evaluate import evaluate
from ted.runs.evidence import measure_evidence, plan_evidence
from ted.runs.prepare import create_job, prepare_job, prepare_resume
from ted.runs.report_files import write_distill_report, write_eval_report
from ted.store import Store
from ted.store.records import (
    AttemptResult,
    ChangeResult,
    Experience,
    ExperiencePrompt,
    LibrarySettings,
    LibraryState,
    LibraryVersion,
    Promotion,
)
from ted.tasks import Task
from ted.teacher.compression import compress_library
from ted.teacher.critique import critique_task

__all__ = [
    # what an agent or a person does to a library
    "get_experiences",
    "record_attempt",
    "Task",
    "add_experience",
    "edit_experience",
    "remove_experience",
    "rollback",
    "diff",
    "promote",
    # the store and its records
    "Store",
    "ExperiencePrompt",
    "Experience",
    "AttemptResult",
    "ChangeResult",
    "LibrarySettings",
    "LibraryState",
    "LibraryVersion",
    "Promotion",
    # models, and the ledger of their calls
    "get_model",
    "Model",
    "ModelSettings",
    "GenerationSettings",
    "Message",
    "Completion",
    "Ledger",
    # the teacher
    "critique_task",
    "compress_library",
    # runs over a dataset
    "load_dataset",
    "dataset_from_items",
    "Dataset",
    "Problem",
    "prepare_job",
    "prepare_resume",
    "create_job",
    "run_job",
    "evaluate",
    "plan_evidence",
    "measure_evidence",
    "write_eval_report",
    "write_distill_report",
    # errors
    "TedError",
    "InvalidInput",
    "NotFound",
    "Conflict",
    "StoreError",
    "ConfigError",
    "ModelError",
    "InvalidReply",
]
