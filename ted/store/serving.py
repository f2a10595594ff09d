"""Which version a library serves, and the record of every decision about it.

A library has a working version (the newest: what critiques, distillations and people change)
and a served version (what `get_experiences` returns unless asked for another). While a
library's `served_version` is NULL the working version is served, as it changes: every library
starts so, and nothing changes for users who do not opt in. A distillation with a validation
set, a promotion by hand, or `ted config --serve promoted` pins the served version; from then on
only a promotion moves it, and critiques change the working version alone.

Every promotion and refusal is a row of `promotions`: the version, the decision, the version
served before, who decided, why, when, and the validation figures when there were any. These
functions run inside the caller's transaction (`Store.write`), so a decision commits
with whatever goes with it (a job's figures, a rollback of the working version).
"""

import json
import sqlite3
from collections.abc import Sequence
from typing import Literal

from ted.errors import NotFound
from ted.store.database import timestamp
from ted.store.records import (
    Decision,
    DeleteOp,
    Experience,
    Operation,
    Promotion,
    RestoreOp,
    RewriteOp,
    SnapshotItem,
    ValidationFigures,
)


def served(library: sqlite3.Row) -> int:
    """The version a library row serves."""
    return library["version"] if library["served_version"] is None else library["served_version"]


def version_row(db: sqlite3.Connection, library: sqlite3.Row, version: int) -> sqlite3.Row:
    """One version's row; NotFound for a version that does not exist."""
    row = db.execute(
        "SELECT * FROM library_versions WHERE library_id = ? AND version = ?", (library["id"], version)
    ).fetchone()
    if row is None:
        raise NotFound(
            f"Library {library['name']!r} has no version {version}; its versions run from 0 to {library['version']}."
        )
    return row


def snapshot(db: sqlite3.Connection, library: sqlite3.Row, version: int) -> list[SnapshotItem]:
    """The lessons of one version, as it was written; NotFound for a version that does not exist."""
    row = version_row(db, library, version)
    return [SnapshotItem.model_validate(item) for item in json.loads(row["snapshot"])]


def _library(db: sqlite3.Connection, name: str) -> sqlite3.Row:
    if (row := db.execute("SELECT * FROM libraries WHERE name = ?", (name,)).fetchone()) is None:
        raise NotFound(f"There is no library named {name!r}. Call list_libraries to see the ones that exist.")
    return row


def decide(
    db: sqlite3.Connection,
    name: str,
    version: int,
    decision: Decision,
    *,
    by: str,
    reason: str,
    figures: ValidationFigures | None = None,
    serve: bool | None = None,
) -> Promotion:
    """Record a decision about `version`; a promotion makes it the served version.

    `serve=False` records a promotion while leaving the library to serve its working version
    (what `ted config --serve working` does). Raises NotFound for a version that does not exist.
    """
    library = _library(db, name)
    snapshot(db, library, version)
    before = library["served_version"]
    if decision == "promoted":
        pinned = version if serve is not False else None
        db.execute("UPDATE libraries SET served_version = ? WHERE id = ?", (pinned, library["id"]))
    now = timestamp()
    db.execute(
        "INSERT INTO promotions (library_id, version, decision, served_before, by, reason, figures, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (library["id"], version, decision, before, by, reason, figures and figures.model_dump_json(), now),
    )
    return Promotion(
        library=library["name"],
        version=version,
        decision=decision,
        served_before=before,
        by=by,
        reason=reason,
        figures=figures,
        created_at=now,
    )


def serve(db: sqlite3.Connection, name: str, what: Literal["working", "promoted"], *, by: str) -> Promotion | None:
    """Serve the working version as it changes, or pin the version served now; recorded as a
    promotion of that version. None when the library already serves so."""
    library = _library(db, name)
    if (library["served_version"] is None) == (what == "working"):
        return None
    reason = f"the library serves {'its working version' if what == 'working' else 'promoted versions'} from now on"
    return decide(db, name, library["version"], "promoted", by=by, reason=reason, serve=what == "promoted")


def decisions(db: sqlite3.Connection, library: sqlite3.Row, version: int | None = None) -> list[Promotion]:
    """Every promotion and refusal of the library (or of one version), oldest first."""
    sql, args = "SELECT * FROM promotions WHERE library_id = ?", [library["id"]]
    if version is not None:
        sql, args = sql + " AND version = ?", [*args, version]
    rows = db.execute(sql + " ORDER BY id", args).fetchall()
    return [
        Promotion(
            library=library["name"],
            version=row["version"],
            decision=row["decision"],
            served_before=row["served_before"],
            by=row["by"],
            reason=row["reason"],
            figures=ValidationFigures.model_validate_json(row["figures"]) if row["figures"] else None,
            created_at=row["created_at"],
        )
        for row in rows
    ]


def restore_operations(current: Sequence[Experience], wanted: Sequence[SnapshotItem]) -> list[Operation]:
    """The operations that turn the active lessons `current` into those of a snapshot."""
    have = {e.id: e for e in current}
    texts = {item.id: item.text for item in wanted}
    operations: list[Operation] = [DeleteOp(id=id_) for id_ in have if id_ not in texts]
    for id_, text in texts.items():
        if id_ not in have:
            operations.append(RestoreOp(id=id_, text=text))
        elif have[id_].text != text:
            operations.append(RewriteOp(id=id_, text=text))
    return operations
