"""The shapes of the teacher's structured replies.

Each is sent to the provider as a strict JSON schema (`ted.llm.structured.strict_schema`) and
the reply validated against it; an invalid reply gets one repair attempt. Every field is
required and nothing is limited here: whatever a schema-following model writes parses. What a
reply may *say* — a lesson's length and safety (`ted.gate`), ids that exist, how many operations
— is checked per item afterwards, so one bad item is reported instead of failing the reply.

Some replies are shaped by their request (`summary_reply`, `critique_reply_type`,
`compression_reply`): one required chain per trace, one required diagnosis per wrong attempt,
lesson ids offered as an enum of the lessons that exist. A model following the schema can then
neither skip a trace nor name a lesson that is not there; what the schema offers, the parser
accepts (an id is parsed as any string, and an unknown one is dropped later, with its reason).
"""

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, WithJsonSchema, create_model


class Solution(BaseModel):
    """The teacher's own solution of a task."""

    reasoning: str = Field(description="The complete working, step by step, as a student should follow it.")
    answer: str = Field(description="The final answer alone, in the form the task asks for.")

    def render(self) -> str:
        return f"{self.reasoning.strip()}\nAnswer: {self.answer.strip()}"


class Chain(BaseModel):
    """A trajectory compressed to its logical skeleton: Premises → Steps → Conclusion."""

    premises: list[str] = Field(description="The facts and assumptions the reasoning starts from.")
    steps: list[str] = Field(
        description="Each inference in order, one short sentence each; keep the lesson ids it cites, e.g. [E3], and "
        "mark a step that is wrong."
    )
    conclusion: str = Field(description="The final answer the trajectory reached.")

    def render(self) -> str:
        lines = ["Premises: " + "; ".join(self.premises)]
        lines += [f"Step {i}: {step}" for i, step in enumerate(self.steps, start=1)]
        lines.append(f"Conclusion: {self.conclusion}")
        return "\n".join(lines)


ErrorClass = Literal[
    "misread_task", "wrong_method", "calculation", "faulty_logic", "missing_case", "answer_form", "gave_up", "other"
]


class Diagnosis(BaseModel):
    """Where one wrong attempt left the reference, and what kind of error it made."""

    first_divergent_step: str = Field(
        description="The first step of the attempt's chain that departs from the reference, as 'Step N: …'."
    )
    error_class: ErrorClass


class AddLesson(BaseModel):
    op: Literal["add"]
    text: str = Field(description="A general lesson: when it applies, then what to do. No task-specific values.")
    rationale: str = Field(description="What in the attempts shows this lesson is needed.")


class ReviseLesson(BaseModel):
    op: Literal["rewrite"]
    id: str
    text: str = Field(description="The corrected lesson: when it applies, then what to do.")
    rationale: str = Field(description="What is wrong or vague in the current wording.")


class DropLesson(BaseModel):
    op: Literal["delete"]
    id: str
    rationale: str = Field(description="Why this lesson's content is wrong (being cited by a wrong attempt is not).")


LessonOperation = Annotated[AddLesson | ReviseLesson | DropLesson, Field(discriminator="op")]


class CritiqueReply(BaseModel):
    """A critique as it is stored and applied; `critique_reply_type` is the shape asked for."""

    analysis: str = Field(description="Where the attempts went right or wrong, compared with the reference.")
    diagnoses: dict[str, Diagnosis] = Field(description="Per wrong attempt (by label), where it diverged and how.")
    operations: list[LessonOperation]


class PlanMerge(BaseModel):
    op: Literal["merge"]
    ids: list[str] = Field(description="Two or more lessons saying similar things.")
    text: str = Field(description="One lesson that keeps what each merged lesson adds.")


class PlanRewrite(BaseModel):
    op: Literal["rewrite"]
    id: str
    text: str = Field(description="A shorter or more precise wording of the same lesson.")


class PlanDelete(BaseModel):
    op: Literal["delete"]
    id: str
    reason: str


class PlanRetain(BaseModel):
    op: Literal["retain"]
    id: str


PlanOperation = Annotated[PlanMerge | PlanRewrite | PlanDelete | PlanRetain, Field(discriminator="op")]


class CompressionPlan(BaseModel):
    operations: list[PlanOperation] = Field(description="One operation per lesson: merge, rewrite, delete or retain.")


# OpenAI allows 1,000 enum values in one schema; a library this large is offered plain strings.
MAX_OFFERED_IDS = 200


def _lesson_id(ids: Sequence[str]) -> Any:
    """A lesson id: offered as an enum of `ids`, parsed as any string."""
    if len(ids) > MAX_OFFERED_IDS:
        return str
    return Annotated[str, WithJsonSchema({"type": "string", "enum": list(ids)})]


def _with_ids(model: type[BaseModel], ids: Sequence[str]) -> type[BaseModel]:
    """`model` (an operation) with its lesson ids offered as an enum of `ids`."""
    fields: dict[str, Any] = {"id": (_lesson_id(ids), ...)} if "id" in model.model_fields else {}
    if "ids" in model.model_fields:
        fields["ids"] = (list[_lesson_id(ids)], Field(description=model.model_fields["ids"].description))
    return create_model(model.__name__, __base__=model, **fields)


def _operations(variants: Sequence[type[BaseModel]], ids: Sequence[str], description: str) -> Any:
    """A list of the operations `variants`, told apart by their `op`."""
    types = tuple(_with_ids(v, ids) for v in variants)
    item = Annotated[Union[types], Field(discriminator="op")] if len(types) > 1 else types[0]  # noqa: UP007
    return (list[item], Field(description=description))


def summary_reply(labels: Sequence[str]) -> type[BaseModel]:
    """`{"chains": {label: Chain}}` with every label required: no trace can be skipped."""
    chains = create_model("Chains", **{label: (Chain, ...) for label in labels})
    return create_model("Summary", chains=(chains, Field(description="One chain per trace, under its label.")))


def critique_reply_type(wrong: Sequence[str], lesson_ids: Sequence[str]) -> type[CritiqueReply]:
    """A `CritiqueReply` asking for a diagnosis of each wrong attempt (by label); rewrites and
    deletions are offered only when the library has a lesson to act on."""
    diagnoses = create_model("Diagnoses", **{label: (Diagnosis, ...) for label in wrong})
    variants = [AddLesson, ReviseLesson, DropLesson] if lesson_ids else [AddLesson]
    return create_model(
        "CritiqueReply",
        __base__=CritiqueReply,
        diagnoses=(diagnoses, Field(description=CritiqueReply.model_fields["diagnoses"].description)),
        operations=_operations(variants, lesson_ids, "Changes to the library; none if nothing general is missing."),
    )


def compression_reply(lesson_ids: Sequence[str]) -> type[CompressionPlan]:
    return create_model(
        "CompressionPlan",
        __base__=CompressionPlan,
        operations=_operations(
            [PlanMerge, PlanRewrite, PlanDelete, PlanRetain],
            lesson_ids,
            CompressionPlan.model_fields["operations"].description,
        ),
    )
