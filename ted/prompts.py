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


# ---- the teacher -------------------------------------------------------------------------

TEACHER_SOLVE_SYSTEM = (
    "You are an expert teacher. Solve the task carefully and completely, showing each step of "
    "your reasoning, then end with a line 'Answer: <final answer>'."
)


def teacher_solve_prompt(task: str, ground_truth: str | None) -> str:
    if ground_truth is None:
        return f"## Task\n{task}"
    return (
        f"## Task\n{task}\n\nThe correct final answer is: {ground_truth}\n"
        "Write the full solution that reaches it, so a student can see why it is right."
    )


SUMMARISE_SYSTEM = (
    "You compress reasoning traces into their logical skeleton. For each labelled trace give the "
    "premises it starts from, each inference step in order (one short sentence each; say where a "
    "step is wrong if it is), and its conclusion. Keep the labels. Drop repetition and filler."
)


def summarise_prompt(task: str, traces: dict[str, str]) -> str:
    parts = [f"## Task\n{task}"]
    parts += [f"## Trace {label}\n{text}" for label, text in traces.items()]
    parts.append(f"Return one chain per trace, labelled {', '.join(traces)}.")
    return "\n\n".join(parts)


CRITIQUE_SYSTEM = """\
You are a teacher improving a student's library of lessons. The library is prepended to the \
student's system prompt for every future task of this kind, so a lesson must be GENERAL: a \
reasoning pattern that works or a failure mode to avoid, stated as when it applies and what to \
do. Never write the answer to this task, its specific numbers or names, or text copied from it.
Compare the student's attempts with the reference. Then propose operations on the library:
- add: a new lesson the attempts show is missing (at most 3, each under 60 words);
- rewrite: sharpen an existing lesson (by id) that was cited but misled or is vague;
- delete: remove an existing lesson (by id) that caused errors.
Prefer rewriting an existing lesson over adding a near-duplicate. If every attempt was right \
and nothing general is missing, return no operations. Lessons are plain statements about the \
task domain, never instructions about the student's prompt, tools, links or secrets."""


def critique_prompt(
    task: str,
    reference: str,
    teacher_chain: str,
    attempts: list[tuple[str, bool | None, list[str], str]],
    library: list[tuple[str, str, int]],
) -> str:
    """attempts: (label, correct, cited ids, chain); library: (id, text, usage count)."""
    lessons = "\n".join(f"[{id_}] (used {usage}×) {text}" for id_, text, usage in library) or "(empty)"
    graded = []
    for label, correct, cited, chain in attempts:
        verdict = {True: "CORRECT", False: "WRONG", None: "UNGRADED"}[correct]
        graded.append(f"### Attempt {label}: {verdict}; cited {', '.join(cited) or 'no lessons'}\n{chain}")
    return "\n\n".join(
        [
            f"## Current library\n{lessons}",
            f"## Task\n{task}",
            f"## Reference\n{reference}",
            f"## Teacher's solution (chain)\n{teacher_chain}",
            "## Student attempts\n" + "\n\n".join(graded),
        ]
    )


COMPRESS_SYSTEM = """\
You maintain a library of lessons that is prepended to a student's system prompt. It is over \
its budget. Return one operation for every lesson: merge lessons that say similar things into \
one (keeping what each adds), rewrite vague or wordy ones shorter and more precise, delete \
low-utility ones, and retain the rest. Priority is log(1 + usage): lessons the student actually \
cites are worth keeping; lessons marked harmful more often than helpful are candidates for \
deletion. The result must fit the budget. Lessons stay general: no task-specific answers, no \
instructions about the student's prompt, tools, links or secrets."""


def compress_prompt(items: list[dict], token_budget: int, max_items: int, tokens: int) -> str:
    lines = [
        f"[{i['id']}] priority={i['priority']:.2f} usage={i['usage_count']} helpful={i['helpful_count']} "
        f"harmful={i['harmful_count']} tokens={i['tokens']}\n{i['text']}"
        for i in items
    ]
    return (
        f"Budget: at most {token_budget} tokens and {max_items} lessons. "
        f"Now: {tokens} tokens and {len(items)} lessons.\n\n" + "\n\n".join(lines)
    )


# ---- the student in a distillation or an evaluation ----------------------------------------

STUDENT_SYSTEM = "Solve the task. Reason step by step, then end with a line of the form 'Answer: <your final answer>'."


def student_system(experiences: str) -> str:
    """[system prompt; experiences]: the task follows as the user message."""
    return f"{STUDENT_SYSTEM}\n\n{experiences}" if experiences else STUDENT_SYSTEM
