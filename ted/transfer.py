"""Moving a library's lessons in and out of files: JSON for machines, Markdown for people.

JSON is the lossless form: texts exactly as stored, counts and provenance. Markdown is for
reading and editing by hand: one bullet per lesson, its counts in a trailing HTML comment
that Markdown viewers hide. Both parse into a `LibraryExport` first, and a file is checked
completely before anything is written, so a bad file changes nothing.

Imported lessons get new ids in the target library (ids are never reused); where they came
from is kept in their provenance.
"""

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from ted.errors import InvalidInput
from ted.gate import MAX_LESSON_CHARS, check, explain, normalise
from ted.store import Store
from ted.store.operations import lesson_key
from ted.store.records import AddOp, ChangeResult, DeleteOp, LessonText, LibrarySettings

Format = Literal["json", "md"]
EXTENSIONS: dict[str, Format] = {".json": "json", ".md": "md", ".markdown": "md"}


class ExportedExperience(BaseModel):
    id: str | None = None
    text: LessonText
    usage_count: int = Field(0, ge=0)
    helpful_count: int = Field(0, ge=0)
    harmful_count: int = Field(0, ge=0)
    provenance: dict[str, Any] = Field(default_factory=dict)


class LibraryExport(BaseModel):
    library: str | None = None
    version: int | None = None
    exported_at: datetime | None = None
    settings: LibrarySettings | None = None
    experiences: list[ExportedExperience]


def format_of(path: Path, explicit: Format | None = None) -> Format:
    if explicit:
        return explicit
    if (found := EXTENSIONS.get(path.suffix.lower())) is None:
        raise InvalidInput(
            f"Cannot tell the format of {path} from its extension: name it .json or .md, or pass --format."
        )
    return found


# ---- export ------------------------------------------------------------------------------


async def read_library(store: Store, library: str) -> LibraryExport:
    state = await store.library_state(library)  # one read: version, settings and items agree
    return LibraryExport(
        library=library,
        version=state.version,
        exported_at=datetime.now(UTC),
        settings=state.settings,
        experiences=[ExportedExperience.model_validate(e, from_attributes=True) for e in state.experiences],
    )


def export_json(data: LibraryExport) -> str:
    return data.model_dump_json(indent=2) + "\n"


def export_markdown(data: LibraryExport) -> str:
    stamp = data.exported_at.isoformat(timespec="seconds") if data.exported_at else ""
    lines = [
        f"# Lessons of library {data.library}",
        "",
        f"<!-- ted-mcp export: library={data.library} version={data.version} exported_at={stamp} -->",
        "",
    ]
    for item in data.experiences:
        first, *rest = item.text.split("\n")
        lines.append(f"- [{item.id}] {first}" if item.id else f"- {first}")
        # Continuation lines are indented, so Markdown keeps them inside the bullet.
        lines += [f"  {line}" if line.strip() else "" for line in rest]
        lines[-1] += f" <!-- usage={item.usage_count} helpful={item.helpful_count} harmful={item.harmful_count} -->"
    return "\n".join(lines) + "\n"


def render(data: LibraryExport, fmt: Format) -> str:
    return export_json(data) if fmt == "json" else export_markdown(data)


# ---- import ------------------------------------------------------------------------------


def load(path: Path, fmt: Format | None = None) -> LibraryExport:
    """Read and check a whole file; InvalidInput names the file, the place and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path} does not exist; check the path.") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text; save it as UTF-8 and import it again.") from None
    except OSError as e:
        raise InvalidInput(f"Cannot read {path}: {e.strerror}.") from None
    return parse_json(text, path) if format_of(path, fmt) == "json" else parse_markdown(text, path)


def parse_json(text: str, source: Path) -> LibraryExport:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{source} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from None
    if not isinstance(data, dict) or not isinstance(data.get("experiences"), list):
        raise InvalidInput(
            f'{source} has no "experiences" list: expected an object like {{"experiences": [{{"text": "..."}}]}}, '
            "as `ted export --format json` writes."
        )
    items = []
    for number, raw in enumerate(data["experiences"], start=1):
        raw = {"text": raw} if isinstance(raw, str) else raw  # a plain list of lessons is fine too
        named = f" ({raw['id']})" if isinstance(raw, dict) and isinstance(raw.get("id"), str) else ""
        try:
            items.append(_safe(ExportedExperience.model_validate(raw), f"{source}: experience {number}{named}"))
        except ValidationError as e:
            raise InvalidInput(f"{source}: experience {number}{named} {_problem(e)}") from None
    try:
        settings = LibrarySettings.model_validate(data["settings"]) if data.get("settings") else None
    except ValidationError as e:
        raise InvalidInput(f'{source}: "settings" {_problem(e)}') from None
    origin = data.get("library")
    return _nonempty(
        source, LibraryExport(library=origin if isinstance(origin, str) else None, settings=settings, experiences=items)
    )


BULLET = re.compile(r"^(?:[-*+]|\d{1,9}[.)])(?:\s+(.*))?$")
CITED = re.compile(r"^\[(E[1-9][0-9]{0,8})\]\s*(.*)$")
COUNTS = re.compile(r"\s*<!--\s*usage=(\d+)\s+helpful=(\d+)\s+harmful=(\d+)\s*-->\s*\Z")
ORIGIN = re.compile(r"ted-mcp export: library=([a-z0-9_-]+)")
RULE = re.compile(r"^([-*_])(\s*\1){2,}$")


def parse_markdown(text: str, source: Path) -> LibraryExport:
    """Lessons are `- text`, `* text`, `1. text`, `- [E3] text` or `[E3] text` lines; indented
    lines continue the lesson above. Headings, rules, comments and blank lines are skipped;
    any other line is an error, so a lesson is never dropped without a word."""
    lessons: list[tuple[int, str | None, list[str]]] = []  # (line number, old id, text lines)
    origin, open_lesson, blanks, in_comment = None, False, 0, False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if in_comment or stripped.startswith("<!--"):
            origin = origin or ((m := ORIGIN.search(stripped)) and m[1])
            in_comment = "-->" not in (stripped if in_comment else stripped[4:])
            continue
        if not stripped:
            blanks += 1
            continue
        bullet = BULLET.match(stripped)
        body = (bullet[1] or "") if bullet else stripped
        cited = CITED.match(body)
        indented = line.startswith(("  ", "\t"))
        # Markdown continues a bullet with indented lines, or with unmarked lines right below it.
        if open_lesson and (indented or (not blanks and not bullet and not cited and not stripped.startswith("#"))):
            lessons[-1][2].extend([""] * blanks + [line[2:] if line.startswith("  ") else stripped])
        elif stripped.startswith("#") or RULE.match(stripped):
            open_lesson = False
        elif bullet or cited:
            lessons.append((number, cited[1] if cited else None, [cited[2] if cited else body]))
            open_lesson = True
        else:
            raise InvalidInput(
                f"{source}, line {number} is not a lesson. Start each lesson with '- ' "
                "(or '[E3] '), indent lines that continue one, or wrap other text in <!-- -->."
            )
        blanks = 0
    items = [_markdown_item(source, *lesson) for lesson in lessons]
    return _nonempty(source, LibraryExport(library=origin, experiences=items))


def _markdown_item(source: Path, number: int, old_id: str | None, lines: list[str]) -> ExportedExperience:
    text = "\n".join(lines)
    counts = {}
    if found := COUNTS.search(text):
        text = text[: found.start()]
        counts = dict(zip(("usage_count", "helpful_count", "harmful_count"), map(int, found.groups()), strict=True))
    try:
        return _safe(ExportedExperience(id=old_id, text=text.strip(), **counts), f"{source}, line {number}")
    except ValidationError as e:
        raise InvalidInput(f"{source}, line {number}: the lesson {_problem(e)}") from None


def _safe(item: ExportedExperience, where: str) -> ExportedExperience:
    # A file is as untrusted as an agent's add_experience call and passes the same gate, checked
    # here for the whole file first so the error names the place and nothing is written.
    text = normalise(item.text)
    if refusal := check(text):
        raise InvalidInput(f"{where}: {explain(refusal)}")
    return item.model_copy(update={"text": text})


def _nonempty(source: Path, data: LibraryExport) -> LibraryExport:
    if not data.experiences:
        raise InvalidInput(
            f"{source} holds no lessons: write one per line, as '- text' in Markdown or "
            '{"experiences": [{"text": "..."}]} in JSON.'
        )
    return data


def _problem(error: ValidationError) -> str:
    """The first problem pydantic found, said as what to fix."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "item"
    match first["type"]:
        case "missing" if field == "text":
            return 'has no "text": give every experience its lesson as "text".'
        case "string_too_long":
            return f"is {len(first['input'])} characters long; the limit is {MAX_LESSON_CHARS}. Shorten or split it."
        case "string_too_short" | "string_pattern_mismatch" if field == "text":
            return "is empty: write the lesson, or remove the item."
        case "model_type" | "dict_type":
            return 'is not an object: write it as {"text": "..."}.'
    return f"has an invalid {field}: {first['msg']}."


class ImportResult(BaseModel):
    change: ChangeResult | None = Field(description="The new version; None when every lesson was there already.")
    skipped: dict[str, str | None] = Field(
        description="Lessons not imported: text → the id the library has it under (None: the file repeats it)."
    )


async def import_experiences(
    store: Store, library: str, data: LibraryExport, *, replace: bool, source: str
) -> ImportResult:
    """Add the lessons as one new version; with `replace`, retire the current ones in it too.

    A lesson the library already has (case and spacing aside), or that the file repeats, is
    skipped: importing a file twice does not double the library.
    """
    # A new library takes the exported settings; an existing one keeps its own.
    await store.ensure_library(library, data.settings)
    state = await store.library_state(library)
    retire = [DeleteOp(id=e.id) for e in state.experiences] if replace else []
    kept: dict[str, str | None] = {} if replace else {lesson_key(e.text): e.id for e in state.experiences}
    adds, skipped = [], {}
    for item in data.experiences:
        if (key := lesson_key(item.text)) in kept:
            skipped[item.text] = kept[key]
            continue
        kept[key] = None
        adds.append(
            AddOp(
                text=item.text,
                provenance=_provenance(data, item),
                **item.model_dump(include={"usage_count", "helpful_count", "harmful_count"}),
            )
        )
    if not adds and not retire:
        return ImportResult(change=None, skipped=skipped)
    reason = f"imported {len(adds)} experiences from {source}" + (f", retiring {len(retire)}" if replace else "")
    # A lesson another client adds meanwhile would survive a replace unseen; refuse instead.
    guard = state.version if replace else None
    change = await store.apply(
        library, [*retire, *adds], kind="import", reason=reason, expected_version=guard, distinct=True
    )
    return ImportResult(change=change, skipped=skipped)


def _provenance(data: LibraryExport, item: ExportedExperience) -> dict[str, Any]:
    origin = {"from_library": data.library, "from_id": item.id}
    return {"source": "import", **{k: v for k, v in origin.items() if v is not None}}
