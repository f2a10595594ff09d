"""Opening the SQLite file: where it lives, how it is configured, and its schema migrations.

WAL lets readers in several processes work while one writes; the busy timeout makes a writer
wait for the lock instead of failing; foreign keys keep a library's rows with their library.
Migrations run in order, each in the transaction that records it, and a database written by
a newer ted-mcp is refused rather than misread. The file holds attempts and model replies, so
it is created readable by its owner only (SQLite gives its WAL and shared-memory files the
same mode), and a server verifies it (`PRAGMA quick_check`) before it serves from it.
"""

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import platformdirs

from ted.errors import StoreError
from ted.store.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


def timestamp(moment: datetime | None = None) -> str:
    """A time as every table stores it: UTC, ISO 8601, milliseconds (so text order is time order)."""
    return (moment or datetime.now(UTC)).isoformat(timespec="milliseconds")


def default_db_path() -> Path:
    """`TED_DB` if set, else `ted.db` in the user's data directory."""
    if env := os.environ.get("TED_DB"):
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("ted-mcp")) / "ted.db"


def _create_private(path: Path) -> None:
    """Create the database file (and its folder) for its owner only, unless it exists."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


async def connect(path: Path, *, verify: bool = False) -> aiosqlite.Connection:
    """An open, configured and migrated connection (autocommit: callers say BEGIN themselves).

    `verify` runs `PRAGMA quick_check` first and refuses a damaged file: what a server does at
    start, before it serves anything from it.
    """
    try:
        _create_private(path)
        db = await aiosqlite.connect(path, isolation_level=None)
    except (OSError, ValueError, sqlite3.Error) as e:
        cause = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise StoreError(f"Cannot open the database {path!r}: {cause}. Set TED_DB to a writable file path.") from e
    db.row_factory = sqlite3.Row
    try:
        # The busy timeout first: switching to WAL needs a lock another process may hold.
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if verify:
            await _verify(db, path)
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA foreign_keys = ON")
        await _migrate(db, path)
    except sqlite3.DatabaseError as e:
        await db.close()
        raise StoreError(f"{path} is not a usable ted-mcp database: {e}.") from e
    except BaseException:
        await db.close()
        raise
    return db


async def _verify(db: aiosqlite.Connection, path: Path) -> None:
    problems = [" ".join(row[0].split()) for row in await db.execute_fetchall("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise StoreError(
            f"The database {path} is damaged (SQLite's quick_check: {'; '.join(problems)}), so ted-mcp will not "
            f"serve from it. Restore it from a backup, or save what is readable with `sqlite3 {path} .recover | "
            "sqlite3 recovered.db` and point TED_DB at recovered.db."
        )


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute(
            "CREATE TABLE IF NOT EXISTS migrations (number INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TEXT NOT NULL)"
        )
        applied = {row[0] async for row in await db.execute("SELECT number FROM migrations")}
        if applied and max(applied) > len(MIGRATIONS):
            raise StoreError(
                f"The database {path} was written by a newer ted-mcp (schema {max(applied)}); "
                "upgrade ted-mcp or point TED_DB at another file."
            )
        for number, (name, sql) in enumerate(MIGRATIONS, start=1):
            if number not in applied:
                for statement in statements(sql):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO migrations (number, name, applied_at) VALUES (?, ?, ?)",
                    (number, name, timestamp()),
                )
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise


def statements(sql: str) -> list[str]:
    """A migration's statements, split where SQLite says a statement is complete (so a trigger's
    body, with its own semicolons, stays whole)."""
    found, pending = [], ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip().removesuffix(";"))
            pending = ""
    found.append(pending.strip())  # the last statement needs no semicolon
    code = (s for s in found if any(line.strip() and not line.strip().startswith("--") for line in s.splitlines()))
    return list(code)


def open_probe(path: Path) -> sqlite3.Connection | None:
    """A read-only connection that only asks `PRAGMA data_version`; None if it cannot open.

    Timeout 0: the probe runs on the event loop, so it must never wait on a lock; when busy,
    the caller reads the tables as if there were no cache.
    """
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0, isolation_level=None)
    except (sqlite3.Error, ValueError):
        return None  # e.g. ":memory:", which has no file to open twice
    try:
        probe.execute("PRAGMA data_version").fetchall()
    except sqlite3.Error:
        probe.close()
        return None
    return probe
