"""Shared fixtures: a real on-disk SQLite file per test, the server bound to it, and
real MCP clients. Async tests run on anyio's pytest plugin with the asyncio backend."""

import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from mcp import Client

from ted_server import build_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ted.db"


@pytest.fixture
def server(db_path: Path):
    return build_server(db_path)


@pytest.fixture(params=["auto", "legacy"])
async def client(request, server):
    """The SDK's in-memory client, in both protocol eras."""
    async with Client(server, mode=request.param, raise_exceptions=False) as c:
        yield c


def dump_database(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, to assert that a refused call changed nothing."""
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def installed_command(name: str) -> str:
    """The console script installed beside this interpreter (what `pip install .` made)."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    assert found, f"{name} is not installed: run `pip install -e '.[test]'` in this environment first"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, host: str = "127.0.0.1") -> None:
    """Return once `proc` listens on `port` of `host`; fail with its stderr if it exits first."""
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the server did not start listening within 30 s"
            time.sleep(0.1)


class Served(str):
    """A served URL that knows its server's process id."""

    pid: int


@contextmanager
def http_server(
    db_path: Path, *extra: str, env: Mapping[str, str] | None = None, connect: str = "127.0.0.1", preexec_fn=None
) -> Iterator[str]:
    """The installed `ted-mcp --transport http` on a free port; yields its /mcp URL (on the
    `connect` address) once it listens.

    `env` is the server's whole environment (default: this process's); `preexec_fn` runs in the
    child before it starts (a lower descriptor limit, say).
    """
    port = free_port()
    proc = subprocess.Popen(
        [installed_command("ted-mcp"), "--transport", "http", "--port", str(port), "--db", str(db_path), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env if env is not None else os.environ),
        preexec_fn=preexec_fn,
    )
    try:
        wait_for_port(port, proc, connect)
        url = Served(f"http://{connect}:{port}/mcp")
        url.pid = proc.pid
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def tiny_png(rgb: tuple[int, int, int], size: int = 2) -> bytes:
    """A valid PNG of one colour, `size` pixels square: image bytes without an image library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
