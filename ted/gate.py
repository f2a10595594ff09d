"""Checks on a lesson before it may enter a library.

Lessons end up in other agents' system prompts, so a lesson is data that acts like an
instruction. Before one is stored it must be short, must not copy long spans of the attempts
it came from (a copied span is the answer to one problem, or a payload smuggled in through a
task), and must not address the agent instead of the task: overriding its instructions,
sending it to a URL, or asking for secrets.
"""

import re
from collections.abc import Iterable

MAX_TEACHER_LESSON_CHARS = 800
# A lesson sharing this many consecutive words with an attempt or task copies it.
COPIED_SPAN_WORDS = 12

_SECRET = r"\b(api[ _-]?keys?|passwords?|secrets?|credentials?|private keys?|access tokens?|ssh keys?)"
_INJECTION = [
    (
        re.compile(
            r"\b(ignore|disregard|forget|override)\b.{0,40}\b(previous|prior|above|earlier|all|system|your)\b"
            r".{0,20}\b(instructions?|prompts?|rules|guidelines|messages?)",
            re.I | re.S,
        ),
        "tries to override the agent's instructions",
    ),
    (
        re.compile(r"\b(system prompt|developer message|jailbreak|you are now|act as (an? )?(unrestricted|dan))", re.I),
        "talks to the agent about its own prompt or role",
    ),
    (
        re.compile(r"(https?://|ftp://|www\.)\S+|\b[a-z0-9-]+\.(com|net|org|io|ru|xyz|sh)/\S*", re.I),
        "contains a URL; lessons must not send the agent anywhere",
    ),
    (
        re.compile(
            r"\b(send|share|reveal|print|output|post|upload|provide|paste|dump|leak|email|read|cat|echo)\b"
            r".{0,40}" + _SECRET,
            re.I | re.S,
        ),
        "asks for secrets or credentials",
    ),
    (
        re.compile(r"\b(ask|request|demand|beg)(s|ed|ing)?\b(\s+\S+){0,4}?\s+for\b.{0,30}" + _SECRET, re.I | re.S),
        "asks for secrets or credentials",
    ),
    (
        re.compile(
            r"\b(collect|harvest|steal|grab|extract)\b.{0,40}"
            + _SECRET
            + r"|\b(give|tell|enter|type)\b.{0,20}\b(your|their|the user'?s)\b.{0,20}"
            + _SECRET,
            re.I | re.S,
        ),
        "asks for secrets or credentials",
    ),
    (
        re.compile(r"\bexfiltrat\w*|\brm\s+-rf\s+[/~]|\|\s*(ba)?sh\b|\.env\b", re.I),
        "contains a command aimed at the agent's machine",
    ),
    (
        re.compile(r"<\|[a-z_]+\|>|\[/?(INST|SYS)\]|<\/?(system|assistant|user)>", re.I),
        "contains chat-template control tokens",
    ),
]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _spans(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def injection_problem(text: str) -> str | None:
    """Why the text would be unsafe in a system prompt, or None."""
    for pattern, why in _INJECTION:
        if pattern.search(text):
            return why
    return None


def lesson_problem(text: str, sources: Iterable[str] = (), max_chars: int = MAX_TEACHER_LESSON_CHARS) -> str | None:
    """Why a teacher-written lesson must be rejected, or None if it may be stored.

    `sources` are the texts the lesson was distilled from (tasks, trajectories, answers).
    """
    if not text.strip():
        return "is empty"
    if len(text) > max_chars:
        return f"is {len(text)} characters long; lessons are capped at {max_chars}"
    if why := injection_problem(text):
        return why
    lesson_spans = _spans(_words(text), COPIED_SPAN_WORDS)
    if lesson_spans:
        for source in sources:
            if lesson_spans & _spans(_words(source), COPIED_SPAN_WORDS):
                return f"copies {COPIED_SPAN_WORDS}+ consecutive words from an attempt or task verbatim"
    return None
