"""Typed records: what ted-mcp stores, what its tools accept and what they return.

The argument types (`LibraryName`, `TaskText`, …) carry their limits in the schema, so an
MCP client sees them in the tool's input schema and a bad value is refused by pydantic with
a message naming the field and the limit, before anything touches the database.
"""

import hashlib
import math
import os
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    computed_field,
    model_validator,
)

from ted.errors import ConfigError, InvalidInput
from ted.gate import MAX_LESSON_CHARS
from ted.llm.base import GenerationSettings

MAX_TASK_CHARS = 100_000
MAX_TRAJECTORY_CHARS = 1_000_000
MAX_ANSWER_CHARS = 10_000
MAX_EXPERIENCE_CHARS = 2_000
MAX_TASK_ID_CHARS = 200
MAX_CITED_IDS = 100
MAX_MODEL_NAME_CHARS = 200
# Versions and counts are SQLite integers; a client's 2**63 is refused with the limit, not an overflow.
MAX_VERSION = 2**31 - 1

LibraryName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9_-]{1,64}$",
        description="e.g. 'gsm8k'.",
    ),
]
_LIBRARY_NAME = TypeAdapter(LibraryName)


def library_name(name: str) -> str:
    """Check a library name that arrived without a schema (a URI, a prompt argument, the CLI)."""
    try:
        return _LIBRARY_NAME.validate_python(name)
    except ValidationError:
        raise InvalidInput(
            f"Library name {name!r} is invalid: use 1-64 characters from a-z, 0-9, '_' and '-', e.g. 'gsm8k'."
        ) from None


ExperienceId = Annotated[str, Field(pattern=r"^E[1-9][0-9]{0,8}$", description="An experience id such as 'E3'.")]
TaskText = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TASK_CHARS, pattern=r"\S", description="The task or problem statement."),
]
TaskId = Annotated[str, Field(min_length=1, max_length=MAX_TASK_ID_CHARS, pattern=r"^[^\s]+$")]
TrajectoryText = Annotated[
    str, Field(max_length=MAX_TRAJECTORY_CHARS, description="The reasoning, citing experiences as [E3].")
]


def _number_as_text(value: Any) -> Any:
    # Models and the Inspector send a numeric answer as a JSON number. It is stored as the text
    # it stands for; booleans are not numbers here, and anything else is left to the str check.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


AnswerText = Annotated[
    str,
    Field(max_length=MAX_ANSWER_CHARS),
    BeforeValidator(_number_as_text),
    WithJsonSchema({"anyOf": [{"type": "string", "maxLength": MAX_ANSWER_CHARS}, {"type": "number"}]}),
]
ExperienceText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_EXPERIENCE_CHARS,
        pattern=r"\S",
        description="A general lesson, useful for many tasks of this kind (not the answer to one task).",
    ),
]
# A lesson as a client writes it: the gate's cap, so the schema says the limit the gate applies.
LessonText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_LESSON_CHARS,
        pattern=r"\S",
        description="A general lesson about tasks of this kind, not one task's answer nor the agent's tools.",
    ),
]
# Strict: a destructive call must say exactly what it means; "0" or true is not a version.
Version = Annotated[int, Strict(), Field(ge=0, le=MAX_VERSION)]
Flag = Annotated[bool, Strict()]


Role = Literal["student", "teacher"]
Selection = Literal["all", "relevant"]
Priority = Literal["usage", "evidence"]


class LibrarySettings(BaseModel):
    token_budget: int = Field(4000, ge=50, le=200_000, description="Tokens of the prompt served.")
    max_items: int = Field(15, ge=1, le=1000, description="Lessons in the prompt served.")
    encoding: Literal["cl100k_base"] = "cl100k_base"
    student: GenerationSettings = Field(
        default_factory=GenerationSettings, description="How the student samples, unless a run says otherwise."
    )
    teacher: GenerationSettings = Field(
        default_factory=GenerationSettings, description="How the teacher samples, unless a run says otherwise."
    )
    quarantine: bool = Field(
        False,
        description="Keep a lesson the gate refuses for what it says, unserved, for `ted review`, instead of "
        "dropping it.",
    )
    selection: Selection = Field(
        "all",
        description="all: every lesson is served, the paper's prompt; relevant: the library keeps an archive and "
        "each task is served the lessons that fit it, within the prompt's budget.",
    )
    archive_items: int = Field(100, ge=1, le=10_000, description="With selection=relevant: lessons the library keeps.")
    archive_tokens: int = Field(
        40_000, ge=50, le=2_000_000, description="With selection=relevant: tokens of all the lessons the library keeps."
    )
    priority: Priority = Field(
        "usage",
        description="How lessons rank for compression and selection: usage, the paper's log(1 + usage count); "
        "evidence, their measured effect on accuracy (`ted evidence`).",
    )

    @model_validator(mode="after")
    def _archive_holds_a_prompt(self) -> "LibrarySettings":
        if self.selection == "relevant" and (
            self.archive_items < self.max_items or self.archive_tokens < self.token_budget
        ):
            raise ValueError(
                f"the archive ({self.archive_items} lessons, {self.archive_tokens} tokens) must hold at least one "
                f"prompt's budget ({self.max_items} lessons, {self.token_budget} tokens)"
            )
        return self

    @property
    def kept_items(self) -> int:
        """The most lessons the library keeps: the prompt's cap, or the archive's with selection=relevant."""
        return self.archive_items if self.selection == "relevant" else self.max_items

    @property
    def kept_tokens(self) -> int:
        """The most tokens all the library's lessons may count (the archive's with selection=relevant)."""
        return self.archive_tokens if self.selection == "relevant" else self.token_budget

    def over_budget(self, items: int, tokens: int) -> bool:
        """Whether a library of `items` lessons whose whole prompt counts `tokens` is over what it may keep."""
        return items > self.kept_items or tokens > self.kept_tokens

    def over_prompt_budget(self, items: int, tokens: int) -> bool:
        """Whether a prompt of `items` lessons and `tokens` tokens is over what one task is served."""
        return items > self.max_items or tokens > self.token_budget


class BootstrapInterval(BaseModel):
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int
    method: str = "percentile bootstrap over problems (paired)"


class LessonEffect(BaseModel):
    """A lesson's measured effect, as `get_experiences` shows it."""

    difference: float = Field(description="Accuracy with the lesson minus without it, on the same problems.")
    low: float = Field(description="The 95 % bootstrap interval of `difference`.")
    high: float
    problems: int
    flagged: bool = Field(description="Removing the lesson helped (difference below 0).")


class LessonEvidence(LessonEffect):
    """A lesson's evidence as stored with it: the measured effect and what it was measured on."""

    version: int = Field(description="The library version measured.")
    dataset: str
    samples: int = Field(description="Answers per problem and arm.")
    interval: BootstrapInterval
    measured_at: datetime
    text_sha: str = Field(description="The lesson's text when measured; a rewrite makes the evidence stale.")


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def priority_of(usage_count: int, evidence: LessonEffect | None, by: Priority) -> float:
    """A lesson's priority by the library's setting: the paper's s(e) = log(1 + usage), or its
    measured effect on accuracy (a lesson not measured counts as having none)."""
    if by == "evidence":
        return evidence.difference if evidence is not None else 0.0
    return math.log1p(usage_count)


class Experience(BaseModel):
    id: str
    text: str
    tokens: int
    usage_count: int = 0
    helpful_count: int = 0
    harmful_count: int = 0
    state: Literal["active", "retired"] = "active"
    merged_into: str | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)
    created_version: int
    evidence: LessonEvidence | None = Field(None, description="Its measured effect (`ted evidence`), if measured.")

    @computed_field
    @property
    def priority(self) -> float:
        """s(e) = log(1 + usage_count), the paper's ranking."""
        return math.log1p(self.usage_count)

    def ranked(self, by: Priority) -> float:
        return priority_of(self.usage_count, self.evidence, by)


class LibraryState(BaseModel):
    name: str
    settings: LibrarySettings
    version: int
    served_version: int | None = Field(None, description="Null while the working version is what is served.")
    next_experience: int
    teacher_model: str | None
    student_model: str | None
    experiences: list[Experience]
    guard_model: str | None = None

    def generation_for(self, role: Role, given: GenerationSettings | None = None) -> GenerationSettings:
        """A role's generation settings: those given, over the library's, over TED_<ROLE>_<SETTING>."""
        return (given or GenerationSettings()).over(getattr(self.settings, role)).over(generation_from_env(role))

    def model_for(self, role: Role, given: str | None = None) -> str:
        """The model for a role: the one given, else the library's own, else TED_TEACHER / TED_STUDENT."""
        name = given or getattr(self, f"{role}_model") or os.environ.get(f"TED_{role.upper()}")
        if not name:
            raise ConfigError(
                f"No {role} model is configured for library {self.name!r}: set TED_{role.upper()}=provider:model "
                "(e.g. anthropic:claude-sonnet-4-5 or openai:gpt-4.1) in the server's environment, or run "
                f"`ted config {self.name} --{role} provider:model`."
            )
        return name


def generation_from_env(role: Role) -> GenerationSettings:
    """TED_STUDENT_MAX_TOKENS, TED_TEACHER_TEMPERATURE, … (max_tokens, temperature, top_p, seed)."""
    names = {field: f"TED_{role.upper()}_{field.upper()}" for field in GenerationSettings.model_fields}
    given = {field: os.environ[name] for field, name in names.items() if os.environ.get(name)}
    try:
        return GenerationSettings.model_validate(given)
    except ValidationError as e:
        error = e.errors()[0]
        field = str(error["loc"][0])
        raise ConfigError(f"{names[field]}={given[field]!r}: {error['msg']}.") from None


class NewAttempt(BaseModel):
    """An attempt as the store records it: graded already, and placed in a job when a job made it.

    Bounded like the tool's arguments, so no writer (a job's student included) stores more.
    """

    task_id: Annotated[str, Field(max_length=MAX_TASK_ID_CHARS)]
    task: Annotated[str, Field(max_length=MAX_TASK_CHARS)]
    images: list[str] = Field(default_factory=list, max_length=64)
    trajectory: Annotated[str, Field(max_length=MAX_TRAJECTORY_CHARS)]
    answer: Annotated[str, Field(max_length=MAX_ANSWER_CHARS)] | None = None
    ground_truth: Annotated[str, Field(max_length=MAX_ANSWER_CHARS)] | None = None
    correct: bool | None = None
    graded_by: str | None = None
    model: Annotated[str, Field(max_length=MAX_MODEL_NAME_CHARS)] | None = None
    job_id: str | None = None
    epoch: int | None = None
    problem_id: str | None = None
    rollout: int | None = None


class CitationsCounted(BaseModel):
    """What recording an attempt did to the usage counts of the lessons it cited."""

    attempt_id: int
    counted_ids: list[str] = Field(description="Experiences whose usage count went up by one.")
    redirected: dict[str, str] = Field(description="Cited ids that were merged away → the id that was counted.")
    unknown_ids: list[str] = Field(description="Cited ids that are not lessons of this library as served; not counted.")
    not_served_ids: list[str] = Field(
        default_factory=list, description="Cited lessons that were not served for this task; not counted."
    )
    usage_counts: dict[str, int] = Field(description="Usage counts of the counted experiences after this attempt.")


class AttemptRecord(BaseModel):
    id: int
    task_id: str
    task: str
    images: list[str] = Field(default_factory=list, description="The task's images as named when it was recorded.")
    trajectory: str
    answer: str | None
    ground_truth: str | None
    correct: bool | None
    graded_by: str | None
    cited: list[str]
    counted: list[str]
    model: str | None
    library_version: int
    chain: str | None
    critiqued_at: datetime | None
    created_at: datetime
    rollout: int | None = None


class SnapshotItem(BaseModel):
    """An experience as it stood in one library version: enough to show, diff and restore it."""

    id: str
    text: str


# Operations on a library. Every change to a library is a list of these, applied in one
# transaction as a new version; the applied form records the ids they were given.
class AddOp(BaseModel):
    op: Literal["add"] = "add"
    text: ExperienceText
    id: str | None = Field(None, description="Filled in when applied.")
    provenance: dict[str, Any] = Field(default_factory=dict)
    usage_count: int = Field(0, ge=0, description="Carried over by an import.")
    helpful_count: int = Field(0, ge=0)
    harmful_count: int = Field(0, ge=0)


class RewriteOp(BaseModel):
    op: Literal["rewrite"] = "rewrite"
    id: ExperienceId
    text: ExperienceText


class DeleteOp(BaseModel):
    op: Literal["delete"] = "delete"
    id: ExperienceId


class MergeOp(BaseModel):
    op: Literal["merge"] = "merge"
    ids: list[ExperienceId] = Field(min_length=2)
    text: ExperienceText
    into: str | None = Field(None, description="The new id, filled in when applied.")


class RestoreOp(BaseModel):
    """Bring a retired experience back with the text it had; only rollback makes these."""

    op: Literal["restore"] = "restore"
    id: ExperienceId
    text: ExperienceText


Operation = Annotated[AddOp | RewriteOp | DeleteOp | MergeOp | RestoreOp, Field(discriminator="op")]
# How a reply shows the operations it applied: one object schema instead of the five models with
# their limits and descriptions, which, repeated in every tool that changes a library, made up a
# third of the tool list a client loads. The values are the same records; only the schema is loose.
APPLIED_OPERATION_SCHEMA = {
    "type": "object",
    "properties": {
        "op": {"enum": [m.model_fields["op"].default for m in (AddOp, RewriteOp, DeleteOp, MergeOp, RestoreOp)]},
        "id": {"type": ["string", "null"]},
        "text": {"type": "string"},
        "ids": {"type": "array", "items": {"type": "string"}},
        "into": {"type": ["string", "null"]},
    },
}
AppliedOperations = Annotated[list[Operation], WithJsonSchema({"type": "array", "items": APPLIED_OPERATION_SCHEMA})]
VersionKind = Literal["create", "add", "critique", "compression", "manual", "rollback", "import", "review"]
RefusedBy = Literal["rules", "guard"]


class Dropped(BaseModel):
    """A proposed operation that was not applied, and why."""

    operation: dict
    reason: str
    conflict_with: str | None = Field(
        None, description="The critique whose change to the same lesson, earlier in the batch, was applied instead."
    )
    refused_by: RefusedBy | None = Field(None, description="Set when the lesson gate or the guard model refused it.")
    quarantined: int | None = Field(None, description="Its quarantine id, when it was kept for `ted review`.")


class Quarantined(BaseModel):
    """A lesson the gate or the guard refused, kept unserved until a person approves or rejects it."""

    id: int
    library: str
    text: str
    reason: str
    refused_by: RefusedBy
    operation: Annotated[Operation, WithJsonSchema(APPLIED_OPERATION_SCHEMA)]
    source: str
    state: Literal["pending", "approved", "rejected"]
    version: int | None = Field(None, description="The library version its approval made.")
    created_at: datetime
    decided_at: datetime | None = None


VersionChoice = Annotated[
    Literal["served", "working"] | Version,
    Field(description="served, working (the newest) or a version number."),
]


class ValidationFigures(BaseModel):
    """What a promotion or refusal was decided on: the served and the working version answering the
    same validation problems, the same number of times, paired per problem."""

    problems: int
    samples: int = Field(description="Answers per problem and version.")
    served_version: int
    served_accuracy: float
    working_accuracy: float
    difference: float = Field(description="Working minus served: the mean of the per-problem paired differences.")
    interval: BootstrapInterval
    margin: float = Field(description="Promoted when `difference` is at least minus this margin.")
    failed_calls: int = Field(0, description="Answers that could not be had; any keeps a version from promotion.")

    def describe(self) -> str:
        ci = self.interval
        failed = f", {self.failed_calls} answers failed" if self.failed_calls else ""
        return (
            f"working {self.working_accuracy:.1%} vs served v{self.served_version} {self.served_accuracy:.1%} on "
            f"{self.problems} problems × {self.samples}: difference {self.difference:+.1%} (95% CI {ci.low:+.1%} "
            f"to {ci.high:+.1%}), margin {self.margin:g}{failed}"
        )


Decision = Literal["promoted", "refused"]


class Promotion(BaseModel):
    """A decision about which version a library serves: who made it, when, on what figures."""

    library: str
    version: int = Field(description="The version promoted (now served) or refused (not served).")
    decision: Decision
    served_before: int | None = Field(description="The version served before; null when it was the working one.")
    by: str = Field(description="Who decided: a job's id, `promote_version`, `ted promote`, `ted config`.")
    reason: str
    figures: ValidationFigures | None = Field(None, description="The validation behind it; null for a person's call.")
    created_at: datetime


class Promoted(BaseModel):
    """The reply of `promote_version`: what the library serves now (the decision is in its history)."""

    served_version: int
    served_before: int | None = Field(description="The version served before; null when it was the working one.")
    working_version: int


class LibraryVersion(BaseModel):
    library: str
    version: int
    kind: VersionKind
    reason: str
    operations: list[Operation]
    snapshot: list[SnapshotItem]
    created_at: datetime
    promotions: list[Promotion] = Field(
        default_factory=list, description="Every promotion or refusal of this version, oldest first."
    )


class CritiqueRecord(BaseModel):
    """A critique as it was recorded: the teacher's analysis and what became of its proposals."""

    id: str
    library: str
    task_id: str
    teacher: str
    attempt_ids: list[int]
    version: int | None = Field(description="The version its operations made; null when it changed nothing.")
    analysis: str
    proposed: list[dict[str, Any]] = Field(description="The operations the teacher proposed, as it sent them.")
    rejected: list[dict[str, Any]] = Field(description="Proposals refused by the checks, each with its reason.")
    job_id: str | None
    created_at: datetime


class ExperienceItem(BaseModel):
    """One experience as an agent sees it in `get_experiences`."""

    id: str
    text: str
    usage_count: int
    helpful_count: int
    harmful_count: int
    tokens: int
    # A loose schema: the reply schema is loaded with every tools/list, and `ted evidence` says the shape.
    evidence: Annotated[LessonEffect | None, WithJsonSchema({"type": ["object", "null"]})] = Field(
        None, description="Its measured effect (difference, low, high, problems, flagged), if measured."
    )

    def ranked(self, by: Priority) -> float:
        return priority_of(self.usage_count, self.evidence, by)


class ExperiencePrompt(BaseModel):
    """The reply of `get_experiences`: what to prepend to the system prompt, and its state."""

    library: str
    version: int = Field(description="The version these lessons are from; 0: the library is empty or does not exist.")
    served_version: int = Field(0, description="The version the library serves by default.")
    working_version: int = Field(0, description="The version critiques and distillations change (newest).")
    prompt: str = Field(description="Text to prepend to your system prompt; empty when there is nothing to apply.")
    # The item schema written out in place of a `$ref` into `$defs`: a client checks every reply
    # against this output schema (the Python SDK with jsonschema), and resolving the reference
    # once per item was a tenth of that check's cost.
    items: Annotated[
        list[ExperienceItem], WithJsonSchema({"type": "array", "items": ExperienceItem.model_json_schema()})
    ]
    tokens: int = Field(description="Tokens of `prompt`, counted with the library's encoding.")
    token_budget: int
    max_items: int
    over_budget: bool
    task_id: str | None = Field(None, description="The id `record_attempt` will give this task if you pass none.")

    def as_text(self) -> str:
        """The prompt and one line of where the library stands: what a model reads of the reply."""
        lessons = f"{len(self.items)} lesson{'s' * (len(self.items) != 1)}"
        state = f"library {self.library} v{self.version}: {lessons}, {self.tokens:,} of {self.token_budget:,} tokens"
        if self.task_id is not None:
            state += f"; task_id {self.task_id}"
        if not self.prompt:
            return f"No lessons yet ({state}). Solve the task as usual and record the attempt."
        return f"{self.prompt}\n\n({state})"


class AttemptResult(CitationsCounted):
    """The reply of `record_attempt`."""

    library: str
    task_id: str
    correct: bool | None = Field(description="The grade; null when there was no ground truth and no outcome.")
    graded_by: Literal["math", "choice", "exact", "caller"] | None


class LibrarySummary(BaseModel):
    name: str
    version: int = Field(description="The working version: the newest, which critiques and distillations change.")
    served_version: int = Field(description="The version get_experiences serves by default.")
    serves: Literal["working", "promoted"] = Field(
        description="working: the working version is served as it changes; promoted: only a version promoted on "
        "validation (or by hand) is."
    )
    items: int
    tokens: int
    token_budget: int
    max_items: int
    over_budget: bool
    flagged: int = Field(0, description="Lessons whose measured removal helped accuracy.")
    attempts: int
    updated_at: datetime


class LibraryList(BaseModel):
    libraries: list[LibrarySummary]
    next_after: str | None = Field(None, description="Pass as `after` for the next page; null on the last.")


class LibraryDeleted(BaseModel):
    """The reply of `delete_library`: what went with it."""

    library: str
    lessons: int = Field(description="Lessons deleted, retired ones included.")
    versions: int
    attempts: int


class ChangedItem(BaseModel):
    id: str
    before: str
    after: str


class VersionDiff(BaseModel):
    library: str
    from_version: int
    to_version: int
    added: list[SnapshotItem]
    removed: list[SnapshotItem]
    changed: list[ChangedItem]


class ChangeResult(BaseModel):
    """The reply of a tool that changed a library: the new version and what it did."""

    library: str
    version: int
    operations: AppliedOperations
    items: int
    tokens: int
    over_budget: bool
    # Loose in the schema, as the applied operations are: a client seldom sees one, and every tool
    # that changes a library would otherwise carry the whole record in the tool list.
    quarantined: Annotated[list[Quarantined], WithJsonSchema({"type": "array", "items": {"type": "object"}})] = Field(
        default_factory=list, description="Lessons kept for review instead of applied; not served until approved."
    )
