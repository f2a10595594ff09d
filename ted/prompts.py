"""The texts that models and agents read.

Kept together so the wording that shapes a student's behaviour can be read and changed in
one place, and so the token count of a library is the count of exactly what is prepended.
"""

from collections.abc import Iterable

EXPERIENCE_HEADER = (
    "## Lessons from earlier attempts\n"
    "These lessons were distilled from earlier attempts at tasks like this one. Apply those that "
    "fit the task. When a lesson shapes a step of your reasoning, cite its id in square brackets "
    "at that step, e.g. [E3], so its usefulness can be counted."
)


def experience_prompt(items: Iterable[tuple[str, str]]) -> str:
    """The block prepended to the system prompt; empty when there are no lessons."""
    lines = [f"[{id_}] {text}" for id_, text in items]
    if not lines:
        return ""
    return EXPERIENCE_HEADER + "\n\n" + "\n".join(lines)


SERVER_INSTRUCTIONS = """\
ted-mcp keeps a library of lessons (experiences) distilled from earlier attempts at a kind \
of task, so you get better at it without retraining. Use it in this loop:
1. Before solving, call get_experiences(library) and put its `prompt` before your own \
instructions; an empty prompt means nothing has been learned yet.
2. Solve the task. Whenever a lesson shapes a step, cite its id inline, e.g. [E3].
3. Call record_attempt with the task, your reasoning (trajectory) and answer; pass the \
ground_truth when you know it, or correct=true/false when you learn the outcome another way.
4. When you have a ground truth or an outcome, ask for a critique (request_critique) so the \
teacher can turn what happened into new lessons.
You may add a lesson you are confident generalises with add_experience. Use one library per \
kind of task (e.g. 'gsm8k', 'sql-debugging'); names are 1-64 characters from a-z, 0-9, '_', '-'."""


def solve_prompt(experiences: str, task: str) -> str:
    """The user message of the `solve_with_experiences` prompt: [experiences; task]."""
    parts = [experiences] if experiences else []
    parts.append(f"## Task\n{task}")
    parts.append(
        "Reason step by step, citing the id of every lesson you apply, e.g. [E3]. "
        "End with a line of the form 'Answer: <your final answer>'."
    )
    return "\n\n".join(parts)
