"""Opening the SQLite file: where it lives, how it is configured, and its schema migrations.

WAL lets readers in several processes work while one writes; the busy timeout makes a writer
wait for the lock instead of failing; foreign keys keep a library's rows with their library.
Migrations run in order, each in the transaction that records it, and a database written by
a newer ted-mcp is refused rather than misread. The file holds attempts and model replies, so
it is created readable by its owner only (SQLite gives its WAL and shared-memory files the
same mode), and a server verifies it (`PRAGMA quick_check`) before it serves from it.
"""

import os
import queue
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import platformdirs

from ted.errors import StoreError
from ted.store.migrations import MIGRATIONS
from ted.store.records import text_sha

BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


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
    if str(path) == ":memory:":  # SQLite's name for no file at all
        return
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


class Database:
    """The file as the store reaches it: each transaction runs whole, as one function, on a worker
    thread, so a write holds SQLite's lock for exactly its own statements (not for a round trip
    per statement between the event loop and a thread), and no statement runs on the event loop.

    Writes go through one writer connection, one at a time; reads through their own connections
    (`READERS` of them), each read inside a read transaction of its own: with WAL a read sees the
    last commit and never waits behind a write, in this process or another.
    """

    READERS = 2

    def __init__(self, path: Path, writer: sqlite3.Connection):
        self.path = path
        self._writer = writer
        self._writing = anyio.CapacityLimiter(1)
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._reading = anyio.CapacityLimiter(self.READERS)
        self._opened: list[sqlite3.Connection] = [writer]
        self.commits = 0  # by this process: part of the store's reply-cache key

    @classmethod
    async def open(cls, path: Path, *, verify: bool = False) -> "Database":
        """Open (creating it for its owner only), configure and migrate the file.

        `verify` runs `PRAGMA quick_check` first and refuses a damaged file: what a server does at
        start, before it serves anything from it.
        """
        writer = await anyio.to_thread.run_sync(_open_writer, path, verify)
        return cls(path, writer)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(db)` inside one `BEGIN IMMEDIATE` transaction: committed when it returns, rolled back
        when it raises. The caller waits for the end even if cancelled (a transaction takes
        milliseconds), so it always knows whether its change was made."""

        def transaction() -> T:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result

        try:
            result = await anyio.to_thread.run_sync(transaction, limiter=self._writing)
        except sqlite3.OperationalError as e:  # a full disk, a file gone read-only, a lock timeout
            raise StoreError(
                f"The database {self.path} could not be written ({e}); nothing was changed. Free disk space "
                "or fix the file's permissions, then try again."
            ) from e
        self.commits += 1
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(db)` on a reader connection, inside a read transaction (one snapshot for all it reads)."""
        if str(self.path) == ":memory:":  # a database only the writer's connection holds
            return await anyio.to_thread.run_sync(fn, self._writer, limiter=self._writing)

        def snapshot() -> T:
            try:
                db = self._readers.get_nowait()
            except queue.Empty:
                db = _configure(_connect(self.path), reader=True)
                self._opened.append(db)
            try:
                db.execute("BEGIN")
                try:
                    return fn(db)
                finally:
                    db.execute("ROLLBACK")
            finally:
                self._readers.put(db)

        return await anyio.to_thread.run_sync(snapshot, limiter=self._reading)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            async with self._writing:
                for db in self._opened:
                    db.close()


def _connect(path: Path) -> sqlite3.Connection:
    # Used from worker threads, one at a time (the limiters see to that).
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    return db


def _configure(db: sqlite3.Connection, *, reader: bool = False) -> sqlite3.Connection:
    # The busy timeout first: switching to WAL needs a lock another process may hold.
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not reader:
        db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    # Evidence holds for the words it was measured on: SQL compares them as records.text_sha does.
    db.create_function("text_sha", 1, text_sha, deterministic=True)
    return db


def _open_writer(path: Path, verify: bool) -> sqlite3.Connection:
    try:
        _create_private(path)
        db = _connect(path)
    except (OSError, ValueError, sqlite3.Error) as e:
        cause = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise StoreError(f"Cannot open the database {path!r}: {cause}. Set TED_DB to a writable file path.") from e
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if verify:
            _verify(db, path)
        _configure(db)
        _migrate(db, path)
    except sqlite3.DatabaseError as e:
        db.close()
        raise StoreError(f"{path} is not a usable ted-mcp database: {e}.") from e
    except BaseException:
        db.close()
        raise
    return db


def _verify(db: sqlite3.Connection, path: Path) -> None:
    problems = [" ".join(row[0].split()) for row in db.execute("PRAGMA quick_check(5)").fetchall()]
    if problems != ["ok"]:
        raise StoreError(
            f"The database {path} is damaged (SQLite's quick_check: {'; '.join(problems)}), so ted-mcp will not "
            f"serve from it. Restore it from a backup, or save what is readable with `sqlite3 {path} .recover | "
            "sqlite3 recovered.db` and point TED_DB at recovered.db."
        )


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS migrations (number INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TEXT NOT NULL)"
        )
        applied = {row[0] for row in db.execute("SELECT number FROM migrations")}
        if applied and max(applied) > len(MIGRATIONS):
            raise StoreError(
                f"The database {path} was written by a newer ted-mcp (schema {max(applied)}); "
                "upgrade ted-mcp or point TED_DB at another file."
            )
        for number, (name, sql) in enumerate(MIGRATIONS, start=1):
            if number not in applied:
                for statement in statements(sql):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO migrations (number, name, applied_at) VALUES (?, ?, ?)", (number, name, timestamp())
                )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
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
