"""Datasets: the problems a distillation trains on and an evaluation scores.

A dataset is a JSON Lines file (UTF-8, one object per line) or, from an MCP tool, an inline
list of the same objects. Each record becomes a `Problem`:

    {"id": "geo-7", "question": "…", "answer": "72", "images": ["figs/7.png"], "subject": "geometry"}

What a user can rely on:

- **Whole or not at all.** Every record is checked before any problem is returned; the error
  names each bad line (or `items[i]`) and what is wrong with it, up to ten at a time, so one
  pass of edits fixes a file. Blank lines are skipped.
- **Ids.** `id` (or `unique_id`, MATH's name), a string or integer without spaces. A record
  without one gets its task's id (`ted.tasks.task_id_for`: its question and its images' bytes),
  the id `record_attempt` gives the same task: it survives reordering, filtering and
  `offset`/`limit` (a line number would not), and an agent's hand-recorded attempts at that
  task group with the batch's. Two records with one id (or, without ids, one question and the
  same images) are refused with both places named.
- **Answers.** `answer`, or `target` (BIG-Bench), `final_answer`, `ground_truth`; strings and
  numbers. A `solution` is never taken for the answer: a worked solution is not a final
  answer and grading against one fails. GSM8K's original shape, an `answer` ending in a
  `#### 72` line, is split: `72` is the answer (thousands commas dropped), the whole text the
  reference solution.
- **Reference solutions never reach the student.** `Problem` has no field for one, refuses
  one (`extra="forbid"`), and its `meta` never carries one: `solution`, `rationale` and
  `explanation` go to `Dataset.reference_solutions`, keyed by problem id, for the teacher
  side only. Whoever builds a student prompt from a `Problem` cannot leak one by accident.
- **Images.** `images` (a list) or `image` (one). URLs (`http(s)://`, `data:`) pass through
  unchanged; paths (and `file://` URLs) are resolved against the dataset file's folder, or
  against `base_dir` for inline items. Every image is read once here (`ted.images.read_image`:
  a PNG, JPEG, GIF or WebP within the size cap), so a bad one is refused with its line.
  `Problem.images` holds absolute paths and URLs only.
- **Files a client names** (`roots`): the dataset and every image path must be inside the data
  folders (`ted.files`); the CLI passes no roots and may read anywhere. A dataset is read in a
  bounded way, up to `ted.files.MAX_DATASET_BYTES`, and no error quotes the file's content: a
  bad record is named by its line and field, never by its value.
- **Other fields** (`task`, `subject`, `level`, `source`, …) are kept in `Problem.meta` for
  reports and grouping. They are data about the problem, not part of its text.

Loading reads the file and checks every image path, so both entry points are async and do
that work in a worker thread; nothing here blocks the event loop.
"""

import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from ted.errors import FileRefused, InvalidInput
from ted.files import MAX_DATASET_BYTES, Roots, opened
from ted.images import MAX_IMAGE_BYTES, MAX_IMAGES, read_image
from ted.llm.base import ImagePart
from ted.store.records import MAX_ANSWER_CHARS, TaskId, TaskText
from ted.tasks import task_id_for

MAX_INLINE_ITEMS = 10_000
MAX_ERRORS_SHOWN = 10

# Each field's accepted names, in order of preference. Two names of one field in one record
# are refused rather than one silently winning.
ID_FIELDS = ("id", "unique_id")
QUESTION_FIELDS = ("question", "problem", "input")
ANSWER_FIELDS = ("answer", "target", "final_answer", "ground_truth")
IMAGE_FIELDS = ("images", "image")
SOLUTION_FIELDS = ("solution", "rationale", "explanation")

_URL_SCHEMES = ("http", "https", "data")
_GSM8K_ANSWER = re.compile(r"\n####\s*(\S.*?)\s*$", re.DOTALL)
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


class Problem(BaseModel):
    """One task with its ground truth: everything a student prompt may be built from, and no more."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: TaskId
    question: TaskText
    answer: str = Field(min_length=1, max_length=MAX_ANSWER_CHARS, pattern=r"\S", description="The ground truth.")
    images: list[str] = Field(default_factory=list, description="Absolute file paths and URLs, in order.")
    meta: dict[str, JsonValue] = Field(
        default_factory=dict, description="The record's other fields (task, subject, level, source …)."
    )


class Dataset(BaseModel):
    """The problems selected from one source, with what a job needs to find that source again."""

    name: str = Field(description="The file's stem, or the name given to inline items.")
    path: str | None = Field(description="Absolute path of the file; null for inline items.")
    fingerprint: str = Field(
        description="SHA-256 of the file's bytes (of the items as canonical JSON when inline), so a resumed job "
        "can tell that its dataset changed. Image files are not hashed here (a problem's task id covers them)."
    )
    total: int = Field(description="Problems in the source, before offset and limit.")
    offset: int
    problems: list[Problem]
    reference_solutions: dict[str, str] = Field(
        default_factory=dict,
        description="Worked solutions by problem id, for the teacher side only; never show these to the student.",
    )


async def load_dataset(path: str | Path, *, limit: int | None = None, offset: int = 0, roots: Roots = None) -> Dataset:
    """The problems of a JSON Lines file, `offset` skipped and at most `limit` kept (in file order).

    `roots`: the folders the file and its images must be in, when a client named it (`ted.files`).
    """
    _check_window(limit, offset)
    return await anyio.to_thread.run_sync(functools.partial(_load_file, str(path), limit, offset, roots))


async def dataset_from_items(
    items: Sequence[Mapping[str, Any]],
    *,
    base_dir: str | Path | None = None,
    limit: int | None = None,
    offset: int = 0,
    name: str = "inline",
    roots: Roots = None,
) -> Dataset:
    """Problems given inline (an MCP tool's argument); relative image paths need `base_dir`, and
    with `roots` every image path must be inside them."""
    _check_window(limit, offset)
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise InvalidInput(f"Inline items must be a list of objects, got {type(items).__name__}.")
    if len(items) > MAX_INLINE_ITEMS:
        raise InvalidInput(
            f"{len(items)} inline items is over the limit of {MAX_INLINE_ITEMS}: write them to a JSON Lines file "
            "and pass its path instead."
        )
    base = Path(base_dir).expanduser().resolve() if base_dir is not None else None
    load = functools.partial(_load_items, list(items), base, limit, offset, name, roots)
    return await anyio.to_thread.run_sync(load)


def _check_window(limit: int | None, offset: int) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput(f"offset must be a whole number ≥ 0, got {offset!r}.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInput(f"limit must be a whole number ≥ 1 (or omitted for all problems), got {limit!r}.")


def _load_file(given: str, limit: int | None, offset: int, roots: Roots) -> Dataset:
    with opened(given, roots, limit=MAX_DATASET_BYTES, what="Dataset file") as (path, file):
        records, errors, digest, size = [], [], hashlib.sha256(), 0
        for number, raw in enumerate(file, start=1):
            if (size := size + len(raw)) > MAX_DATASET_BYTES:
                raise InvalidInput(f"Dataset file {path} grew past the limit of {MAX_DATASET_BYTES:,} bytes.")
            digest.update(raw)
            if (record := _record(number, raw, errors)) is not None:
                records.append((f"line {number}", record))
    return _assemble(
        records,
        errors,
        base=path.parent,
        relative_hint=f"the dataset's folder {path.parent}",
        roots=roots,
        name=path.stem,
        path=str(path),
        fingerprint=digest.hexdigest(),
        limit=limit,
        offset=offset,
        source=f"the dataset {path}",
    )


def _record(number: int, raw: bytes, errors: list[str]) -> Any:
    """The JSON value on one line, None for a blank line; a bad line adds to `errors`, quoting nothing."""
    where = f"line {number}"
    try:
        # utf-8-sig: a byte-order mark from a Windows editor is not a broken first line.
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
    except UnicodeDecodeError as e:
        errors.append(f"{where}: not UTF-8 text (byte {e.start + 1} of the line); save the file as UTF-8.")
        return None
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # A pretty-printed JSON document fails on its first line; say what the format is.
        hint = " It looks like one JSON document; write one object per line." if text in ("[", "{") else ""
        errors.append(f"{where}: not valid JSON ({e.msg} at column {e.colno}).{hint}")
        return None
    except RecursionError:
        errors.append(f"{where}: JSON nested too deeply.")
        return None


def _load_items(
    items: list[Any], base: Path | None, limit: int | None, offset: int, name: str, roots: Roots
) -> Dataset:
    try:
        canonical = json.dumps(items, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"Inline items must be plain JSON (strings, numbers, lists, objects): {e}.") from None
    records = [(f"items[{i}]", item) for i, item in enumerate(items)]
    return _assemble(
        records,
        [],
        base=base,
        relative_hint=str(base) if base else None,
        roots=roots,
        name=name,
        path=None,
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
        limit=limit,
        offset=offset,
        source="the inline items",
    )


def _assemble(
    records: list[tuple[str, Any]],
    errors: list[str],
    *,
    base: Path | None,
    relative_hint: str | None,
    roots: Roots,
    name: str,
    path: str | None,
    fingerprint: str,
    limit: int | None,
    offset: int,
    source: str,
) -> Dataset:
    problems: list[Problem] = []
    solutions: dict[str, str] = {}
    seen: dict[str, str] = {}
    for where, record in records:
        try:
            problem, solution, derived = _problem(record, base, relative_hint, roots)
        except _Bad as e:
            errors.append(f"{where}: {e}")
            continue
        if problem.id in seen:
            what = "the same question (give each an explicit `id`)" if derived else "the same id"
            errors.append(f"{where}: {seen[problem.id]} already has {what}; ids must be unique.")
            continue
        seen[problem.id] = where
        problems.append(problem)
        if solution is not None:
            solutions[problem.id] = solution
    subject = source[:1].upper() + source[1:]
    if errors:
        shown = "\n".join(f"- {e}" for e in errors[:MAX_ERRORS_SHOWN])
        more = f"\n- … and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise InvalidInput(f"{subject} has {len(errors)} bad record(s); fix them and retry:\n{shown}{more}")
    if not problems:
        raise InvalidInput(f"{subject} holds no problems: add at least one with a question and an answer.")
    if offset >= len(problems):
        raise InvalidInput(f"offset {offset} is past the end: {source} has {len(problems)} problems.")
    selected = problems[offset : None if limit is None else offset + limit]
    return Dataset(
        name=name,
        path=path,
        fingerprint=fingerprint,
        total=len(problems),
        offset=offset,
        problems=selected,
        reference_solutions={p.id: solutions[p.id] for p in selected if p.id in solutions},
    )


class _Bad(Exception):
    """What is wrong with one record; collected, then raised together as one InvalidInput."""


def _one_of(record: dict[str, Any], names: tuple[str, ...]) -> tuple[str | None, Any]:
    present = [n for n in names if n in record]
    if len(present) > 1:
        raise _Bad(f"has both {' and '.join(f'`{n}`' for n in present)}; keep one.")
    return (present[0], record[present[0]]) if present else (None, None)


def _problem(
    record: Any, base: Path | None, relative_hint: str | None, roots: Roots
) -> tuple[Problem, str | None, bool]:
    """A record's problem, its reference solution if it has one, and whether its id was derived."""
    if not isinstance(record, Mapping):
        raise _Bad(f"must be a JSON object with `question` and `answer`, got {type(record).__name__}.")
    record = dict(record)

    question_field, question = _one_of(record, QUESTION_FIELDS)
    if question_field is None:
        raise _Bad(f"has no question: add a `question` field (also accepted: {', '.join(QUESTION_FIELDS[1:])}).")
    if not isinstance(question, str) or not question.strip():
        raise _Bad(f"`{question_field}` must be non-empty text.")

    solution_field, solution = _one_of(record, SOLUTION_FIELDS)
    if solution is not None and not isinstance(solution, str):
        raise _Bad(f"`{solution_field}` must be text, got {type(solution).__name__}.")
    answer_field, answer = _one_of(record, ANSWER_FIELDS)
    if answer_field is None or answer is None or (isinstance(answer, str) and not answer.strip()):
        found = (
            f" It has a `{solution_field}`, but a worked solution is never used as the answer."
            if solution_field
            else ""
        )
        missing = "has no answer" if answer_field is None else f"has an empty `{answer_field}`"
        raise _Bad(f'{missing}: add `answer` with the final answer, e.g. "72" or "(B)".{found}')
    if isinstance(answer, bool):
        answer = str(answer)  # BIG-Bench style True/False, as the grader's exact match expects
    elif isinstance(answer, (int, float)):
        answer = repr(answer) if isinstance(answer, float) else str(answer)
    elif not isinstance(answer, str):
        raise _Bad(f"`{answer_field}` must be text or a number, got {type(answer).__name__}; give one final answer.")
    answer = answer.strip()
    if solution is None and (gsm8k := _GSM8K_ANSWER.search("\n" + answer)):
        solution, answer = answer, gsm8k.group(1)
        if _THOUSANDS.match(answer):
            answer = answer.replace(",", "")

    images = _images(record, base, relative_hint, roots)
    id_field, given_id = _one_of(record, ID_FIELDS)
    if given_id is None:
        problem_id, derived = task_id_for(question, [image for _, image in images]), True
    elif isinstance(given_id, bool) or not isinstance(given_id, (str, int)):
        raise _Bad(f"`{id_field}` must be text or a whole number, got {type(given_id).__name__}.")
    else:
        problem_id, derived = str(given_id), False
        if not problem_id or re.search(r"\s", problem_id):
            raise _Bad(f"`{id_field}` is empty or has whitespace; ids become task ids, which have none.")

    used = {question_field, answer_field, solution_field, id_field, *IMAGE_FIELDS}
    meta = {k: v for k, v in record.items() if k not in used}
    try:
        problem = Problem(id=problem_id, question=question, answer=answer, images=[r for r, _ in images], meta=meta)
    except ValidationError as e:
        raise _Bad("; ".join(f"`{'.'.join(map(str, err['loc']))}`: {err['msg']}" for err in e.errors())) from None
    return problem, solution, derived


def _images(
    record: dict[str, Any], base: Path | None, relative_hint: str | None, roots: Roots
) -> list[tuple[str, ImagePart]]:
    """The record's images, each resolved (a path made absolute) and read, inside `roots` if given."""
    image_field, images = _one_of(record, IMAGE_FIELDS)
    if images is None:
        images = []
    elif isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) and i.strip() for i in images):
        raise _Bad(f"`{image_field}` must be a list of paths or URLs (non-empty strings).")
    if len(images) > MAX_IMAGES:
        raise _Bad(f"has {len(images)} images, over the limit of {MAX_IMAGES} per problem.")
    read = []
    for number, given in enumerate(images):
        field = f"`{image_field}`[{number}]"
        ref = _image(given.strip(), field, base)
        relative = relative_hint and not urlparse(given.strip()).scheme and not Path(given.strip()).is_absolute()
        where = f" (relative paths are resolved against {relative_hint})" if relative else ""
        try:
            read.append((ref, read_image(ref, roots)))
        except FileRefused:  # its message would name the file, which the dataset wrote: say where instead
            inside = " inside the data folders (TED_DATA_DIRS)" if roots is not None else ""
            raise _Bad(
                f"{field} does not name a readable image file{inside} of at most {MAX_IMAGE_BYTES:,} bytes{where}."
            )
        except InvalidInput as e:
            raise _Bad(f"{field}: {e}{where}") from None
    return read


def _image(ref: str, field: str, base: Path | None) -> str:
    """A URL as given, or an absolute path (not yet read); `field` names it in errors, which never
    quote the reference itself."""
    parsed = urlparse(ref)
    if parsed.scheme in _URL_SCHEMES:
        if parsed.scheme != "data" and not parsed.netloc:
            raise _Bad(f"{field} is a URL with no host.")
        return ref
    if parsed.scheme == "file":
        ref = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise _Bad(f"{field} has an unknown URL scheme; use a file path or an http(s)/data URL.")
    path = Path(ref).expanduser()
    if not path.is_absolute():
        if base is None:
            raise _Bad(
                f"{field} is a relative path and inline items have no folder to resolve it against: "
                "give an absolute path, a URL, or base_dir."
            )
        path = base / path
    return str(path.resolve())
