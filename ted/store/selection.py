"""Lessons chosen per task: a library that keeps more lessons than one prompt holds (its archive)
serves each task the lessons that fit it, within the prompt's token budget and item cap.

Relevance is SQLite FTS5's BM25 over the lessons' text (unicode61 words, porter stems), computed
in an in-memory database of this process: no network, no model. Each distinct set of lessons (a
version, or a version less one lesson) gets a table of its own, so a score depends on that set
and the task only: one task and one version give one selection, every time.

A lesson's score is its relevance divided by the best relevance among the lessons, plus
`PRIORITY_WEIGHT` times its priority divided by the largest priority in magnitude (log(1 + usage),
or its measured evidence). Lessons are taken best score first (ties: the older lesson) while the
prompt stays within budget; one that does not fit is skipped for the next; a lesson scoring 0 or
less (irrelevant and unused, or irrelevant and shown to hurt) is not served. The prompt lists the
chosen lessons in library order, as the whole-library prompt does.
"""

import hashlib
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Generic, NamedTuple, Protocol, TypeVar

from ted.prompts import EXPERIENCE_FOOTER, EXPERIENCE_HEADER, experience_prompt
from ted.store.records import LibrarySettings, Priority
from ted.tokens import count_tokens

PRIORITY_WEIGHT = 0.25
MAX_TABLES = 64
# A task word is offered to the index only if its first letters begin some lesson word: porter
# stems keep a word's beginning, so nothing that could match is lost, and a 100,000-character
# task does not become a query of thousands of terms.
_PREFIX = 4
_WORD = re.compile(r"[^\W_]+")


class Lesson(Protocol):
    id: str
    text: str

    def ranked(self, by: Priority) -> float: ...


L = TypeVar("L", bound=Lesson)


class LessonIndex:
    """BM25 relevance of lessons to a task, one in-memory FTS5 table per set of lessons (the most
    recently used `MAX_TABLES` kept)."""

    def __init__(self) -> None:
        # Used from the event loop's thread and from worker threads alike: one lock, short holds.
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        self._tables: OrderedDict[str, tuple[str, frozenset[str]]] = OrderedDict()
        self._made = 0

    def relevance(self, lessons: Sequence[Lesson], task: str) -> dict[str, float]:
        """Each matching lesson's BM25 relevance to `task` (higher is more relevant); others are absent."""
        if not lessons:
            return {}
        with self._lock:
            table, prefixes = self._table(lessons)
            terms = dict.fromkeys(w for w in _WORD.findall(task.lower()) if w[:_PREFIX] in prefixes)
            if not terms:
                return {}
            query = " OR ".join(f'"{term}"' for term in terms)
            rows = self._db.execute(f"SELECT id, bm25({table}) FROM {table} WHERE {table} MATCH ?", (query,))
            # FTS5's bm25() is lower for better matches; a tiny positive floor keeps every match above 0.
            return {id_: max(-score, 1e-9) for id_, score in rows.fetchall()}

    def _table(self, lessons: Sequence[Lesson]) -> tuple[str, frozenset[str]]:
        key = hashlib.sha256("\x00".join(f"{e.id}\x01{e.text}" for e in lessons).encode()).hexdigest()
        if key in self._tables:
            self._tables.move_to_end(key)
            return self._tables[key]
        self._made += 1
        table = f"lessons_{self._made}"
        self._db.execute(f"CREATE VIRTUAL TABLE {table} USING fts5(id UNINDEXED, text, tokenize='porter unicode61')")
        self._db.executemany(f"INSERT INTO {table} (id, text) VALUES (?, ?)", [(e.id, e.text) for e in lessons])
        prefixes = frozenset(w[:_PREFIX] for e in lessons for w in _WORD.findall(e.text.lower()))
        self._tables[key] = (table, prefixes)
        if len(self._tables) > MAX_TABLES:
            old, _ = self._tables.popitem(last=False)[1]
            self._db.execute(f"DROP TABLE {old}")
        return self._tables[key]


class Selected(NamedTuple, Generic[L]):
    lessons: list[L]
    prompt: str
    tokens: int


def select(lessons: Sequence[L], task: str | None, settings: LibrarySettings, index: LessonIndex) -> Selected[L]:
    """The lessons of `lessons` served for `task`, in library order, within the prompt's budget;
    with no task, every lesson counts as relevant and priority alone decides."""
    if task is None:
        relevance = {e.id: 1.0 for e in lessons}
    else:
        relevance = index.relevance(lessons, task)
    top_relevance = max(relevance.values(), default=0.0) or 1.0
    priorities = {e.id: e.ranked(settings.priority) for e in lessons}
    top_priority = max(map(abs, priorities.values()), default=0.0) or 1.0
    scores = {
        e.id: relevance.get(e.id, 0.0) / top_relevance + PRIORITY_WEIGHT * priorities[e.id] / top_priority
        for e in lessons
    }
    order = {e.id: n for n, e in enumerate(lessons)}
    ranked = sorted((e for e in lessons if scores[e.id] > 0), key=lambda e: (-scores[e.id], order[e.id]))
    # Each line's tokens with its newline bound the prompt's count from above (the tokenizer splits
    # at line ends); the exact count is checked at the end.
    chosen: list[L] = []
    tokens = count_tokens(EXPERIENCE_HEADER + "\n\n", settings.encoding) + count_tokens(
        EXPERIENCE_FOOTER, settings.encoding
    )
    for lesson in ranked:
        if len(chosen) == settings.max_items:
            break
        line = count_tokens(f"[{lesson.id}] {lesson.text}\n", settings.encoding)
        if tokens + line <= settings.token_budget:
            chosen.append(lesson)
            tokens += line
    while True:
        in_order = sorted(chosen, key=lambda e: order[e.id])
        prompt = experience_prompt((e.id, e.text) for e in in_order)
        tokens = count_tokens(prompt, settings.encoding)
        if tokens <= settings.token_budget or not chosen:
            return Selected(in_order, prompt, tokens)
        chosen.pop()  # the lowest score goes first
