"""Files named by someone else: read only under the data folders, bounded, and never quoted.

An MCP client can name files on the server's machine: a dataset (`distill_batch`'s `dataset`)
and the images its items point at. Such a path is read only when it resolves (symlinks
followed) to a regular file inside one of the data folders, the roots:

    TED_DATA_DIRS=/data/ted:/home/me/datasets      (os.pathsep-separated)

and by default the `datasets` folder of the user data directory (on Linux
`~/.local/share/ted-mcp/datasets`). A relative path is looked for in each root in turn.
Whatever else is wrong — outside the roots, missing, a folder, a device, unreadable, a NUL
character, too long a name — gets the same error, which says nothing about the file.

The CLI, run by the user, passes `roots=None` and may read any path, with messages that help
find it. Either way a file is read through one descriptor (no swap between a check and the
read), in chunks, up to a size cap, and no error carries any of its content.
"""

import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import platformdirs

from ted.errors import FileRefused

MAX_DATASET_BYTES = 64 * 2**20
MAX_PATH_CHARS = 4096
CHUNK_BYTES = 1 << 20

Roots = Sequence[Path] | None


def data_roots() -> list[Path]:
    """The folders a client may name files in: TED_DATA_DIRS, else the user data directory's `datasets`."""
    given = [p for p in os.environ.get("TED_DATA_DIRS", "").split(os.pathsep) if p.strip()]
    roots = given or [str(Path(platformdirs.user_data_dir("ted-mcp")) / "datasets")]
    return [Path(p).expanduser().resolve() for p in roots]


def _outside(what: str, roots: Sequence[Path]) -> FileRefused:
    folders = ", ".join(str(r) for r in roots) or "none"
    return FileRefused(
        f"{what} named is not a readable file in the data folders this server may read ({folders}). Put the "
        "file there and name it by its path, or have the server's user add its folder to TED_DATA_DIRS."
    )


def _candidates(name: str, roots: Roots) -> list[Path]:
    path = Path(name).expanduser()
    if roots is None or path.is_absolute():
        return [path]
    return [root / path for root in roots]


def _inside(path: Path, roots: Roots) -> bool:
    return roots is None or any(path == root or path.is_relative_to(root) for root in roots)


@contextmanager
def opened(name: str | Path, roots: Roots, *, limit: int, what: str = "File") -> Iterator[tuple[Path, BinaryIO]]:
    """The resolved path of a file and the file open for reading, checked against the roots and
    the size cap. FileRefused otherwise: outside the roots (or missing there, or not a file) always
    the same message."""
    name = str(name)
    found: tuple[Path, int] | None = None
    problem = "is not a readable file"
    valid = "\x00" not in name and 0 < len(name) <= MAX_PATH_CHARS
    if valid:
        for candidate in _candidates(name, roots):
            try:
                real = candidate.resolve()
                if not _inside(real, roots):
                    continue
                # Non-blocking: a FIFO opens at once, then fails the regular-file check below.
                fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
            except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
                problem = "does not exist" if isinstance(e, FileNotFoundError) else problem
                continue
            if stat.S_ISREG(os.fstat(fd).st_mode):
                found = (real, fd)
                break
            os.close(fd)
            problem = "is not a file"
    if found is None:
        if roots is not None:
            raise _outside(what, roots)
        if not valid:
            raise FileRefused(f"{what} {name[:200]!r} is not a valid path (empty, too long or with a NUL character).")
        hint = "" if Path(name).expanduser().is_absolute() else f" (relative paths start at {Path.cwd()})"
        raise FileRefused(f"{what} {Path(name).expanduser().resolve()} {problem}: check the path{hint}.")
    real, fd = found
    size = os.fstat(fd).st_size
    if size > limit:
        os.close(fd)
        raise FileRefused(f"{what} is {size:,} bytes, over the limit of {limit:,}; use a smaller file.")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as file:
        yield real, file


def read_bytes(name: str | Path, roots: Roots, *, limit: int, what: str = "File") -> bytes:
    """The whole file, read in chunks and refused past `limit` bytes (it may grow while read)."""
    with opened(name, roots, limit=limit, what=what) as (real, file):
        return _bounded(file, limit, what)


def _bounded(file: BinaryIO, limit: int, what: str) -> bytes:
    data = bytearray()
    while chunk := file.read(CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            raise FileRefused(f"{what} grew past the limit of {limit:,} bytes while it was read.")
    return bytes(data)
