"""The shapes of the teacher's structured replies.

Each is sent to the provider as a JSON schema (tool use or response_format) and the reply is
validated against it; an invalid reply gets one repair attempt (`ted.llm.structured`). The
limits here are generous on purpose: what a lesson may *say* is checked by `ted.gate`,
which reports a rejection instead of failing the whole reply.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ted.store.records import ExperienceId

LessonText = Annotated[str, Field(min_length=1, max_length=2000)]


class Chain(BaseModel):
    """A trajectory compressed to its logical skeleton: Premises → Steps → Conclusion."""

    label: str = Field(description="The label of the trajectory this chain summarises, e.g. 'A1' or 'T'.")
    premises: list[str] = Field(description="The facts and assumptions the reasoning starts from.")
    steps: list[str] = Field(description="Each inference in order, one short sentence each; mark the wrong one.")
    conclusion: str = Field(description="The final answer the trajectory reached.")

    def render(self) -> str:
        lines = ["Premises: " + "; ".join(self.premises)]
        lines += [f"Step {i}: {step}" for i, step in enumerate(self.steps, start=1)]
        lines.append(f"Conclusion: {self.conclusion}")
        return "\n".join(lines)


class ChainSet(BaseModel):
    chains: list[Chain]


class AddLesson(BaseModel):
    op: Literal["add"] = "add"
    text: LessonText = Field(description="A general lesson: when it applies and what to do. No task-specific values.")
    rationale: str = Field("", description="What in the attempts shows this lesson is needed.")


class ReviseLesson(BaseModel):
    op: Literal["rewrite"] = "rewrite"
    id: ExperienceId
    text: LessonText
    rationale: str = ""


class DropLesson(BaseModel):
    op: Literal["delete"] = "delete"
    id: ExperienceId
    rationale: str = Field("", description="Why this lesson misleads or no longer helps.")


class CritiqueReply(BaseModel):
    analysis: str = Field(description="Where the attempts went right or wrong, compared with the reference.")
    operations: list[Annotated[AddLesson | ReviseLesson | DropLesson, Field(discriminator="op")]] = Field(
        default_factory=list, max_length=10
    )


class PlanMerge(BaseModel):
    op: Literal["merge"] = "merge"
    ids: list[ExperienceId] = Field(min_length=2, description="Lessons saying similar things.")
    text: LessonText = Field(description="One lesson that keeps what each merged lesson adds.")


class PlanRewrite(BaseModel):
    op: Literal["rewrite"] = "rewrite"
    id: ExperienceId
    text: LessonText = Field(description="A shorter or more precise wording of the same lesson.")


class PlanDelete(BaseModel):
    op: Literal["delete"] = "delete"
    id: ExperienceId
    reason: str = ""


class PlanRetain(BaseModel):
    op: Literal["retain"] = "retain"
    id: ExperienceId


class CompressionPlan(BaseModel):
    operations: list[Annotated[PlanMerge | PlanRewrite | PlanDelete | PlanRetain, Field(discriminator="op")]] = Field(
        description="One operation per lesson: merge, rewrite, delete or retain."
    )
