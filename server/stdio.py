"""Serving MCP over stdin and stdout from the event loop itself.

The SDK's stdio transport reads and writes through `anyio.wrap_file`, so each request line read,
each reply written and each flush is a round trip to a worker thread, and each message also
passes through a reader or writer task on a memory stream. For a millisecond-scale call like
`get_experiences` that is a sizeable share. Here the server reads its messages straight from
the stream it is given: a line is read when the loop sees stdin readable, and a reply goes out
in one `os.write` on a non-blocking descriptor (waiting for room only if the client lets the
pipe fill up). Parsing and serializing are the SDK's own, as in its transport.

Pipes, sockets and a terminal are served this way: someone who runs `ted-mcp` by hand gets a
server that Ctrl-C stops at once, where the SDK's transport sits in a worker thread blocked on
the terminal until Ctrl-D. A file on stdin or stdout, Windows, or an SDK without what this needs
gets the SDK's transport, unchanged.
"""

import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Self

import anyio
import mcp_types
from mcp.server.mcpserver import MCPServer
from mcp.shared.message import SessionMessage

READ_SIZE = 1 << 16


class LineReader:
    """Lines of bytes from a descriptor, until EOF."""

    def __init__(self, fd: int):
        self._fd = fd
        self._buffer = bytearray()
        self._eof = False

    async def readline(self) -> bytes:
        """The next line with its newline; the last may lack one; b"" at EOF."""
        start = 0  # where to look for the newline: the bytes before it were searched already
        while (end := self._buffer.find(b"\n", start)) < 0:
            if self._eof:
                end = len(self._buffer) - 1
                break
            start = len(self._buffer)
            # Readable means a read returns at once (data or EOF), so the descriptor can stay
            # blocking: its flags belong to whoever started us too.
            await anyio.wait_readable(self._fd)
            chunk = os.read(self._fd, READ_SIZE)
            self._eof = not chunk
            self._buffer += chunk
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        return line


class MessageReader:
    """The server's read stream: one JSON-RPC message per stdin line, read when asked for.

    A line that is not a JSON-RPC message arrives as the exception that parsing raised, for the
    server to handle as it does on the SDK's transport.
    """

    def __init__(self, fd: int):
        self._lines = LineReader(fd)
        self._closed = False

    async def receive(self) -> SessionMessage | Exception:
        if self._closed:
            raise anyio.ClosedResourceError
        line = await self._lines.readline()
        if not line:
            raise anyio.EndOfStream
        try:
            # Decoded as the SDK's transport decodes stdin, so a bad byte reads the same.
            message = mcp_types.jsonrpc_message_adapter.validate_json(
                line.decode("utf-8", errors="replace"), by_name=False
            )
        except Exception as exc:
            return exc
        return SessionMessage(message)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._closed = True  # the descriptor is the claim's to close

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class MessageWriter:
    """The server's write stream: each message is one line, written whole; `fd` is non-blocking
    (or a terminal, whose writes do not wait for a reader)."""

    def __init__(self, fd: int):
        self._fd = fd
        self._lock = anyio.Lock(fast_acquire=True)  # replies to concurrent requests, one line each
        self._closed = False
        self._broken: OSError | None = None

    async def send(self, item: SessionMessage, /) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        line = item.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
        data = memoryview(line.encode("utf-8"))
        async with self._lock:
            if self._broken is not None:
                raise anyio.BrokenResourceError from self._broken
            try:
                while True:
                    with suppress(BlockingIOError):
                        data = data[os.write(self._fd, data) :]
                    if not data:
                        break
                    # The pipe is full: wait for the client to read. Shielded, because a line
                    # cut short by a cancelled handler would corrupt every message after it.
                    with anyio.CancelScope(shield=True):
                        await anyio.wait_writable(self._fd)
            except (BrokenPipeError, ConnectionResetError) as e:
                # The client stopped reading. The SDK drops a reply whose stream is broken and
                # keeps serving until stdin closes, rather than dying mid-request.
                self._broken = e
                raise anyio.BrokenResourceError from e

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@dataclass
class Wire:
    stdin: int
    stdout: int


def _is_pipe(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _same_file(a: int, b: int) -> bool:
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


@contextmanager
def claim_stdio() -> Iterator[Wire | None]:
    """Move the wire onto private descriptors and point fd 0 at /dev/null, fd 1 at stderr.

    As the SDK's transport does: a stray print() or a child process then cannot corrupt or
    steal the JSON-RPC stream. Restored on exit. Yields None, changing nothing, where this
    transport does not apply.
    """
    if sys.platform == "win32":
        yield None
        return
    import fcntl

    try:
        # O_NONBLOCK belongs to the open file, shared by every descriptor dup'ed from it: never
        # set it on a pipe that is also our stderr, nor on a terminal, which usually is. A
        # terminal is written to as it is (blocking): it takes a line without waiting on anyone.
        terminal_out = os.isatty(1)
        usable = (_is_pipe(0) or os.isatty(0)) and (terminal_out or (_is_pipe(1) and not _same_file(1, 2)))
    except OSError:
        usable = False
    if not usable:
        yield None
        return

    sys.stdout.flush()
    # Above 2 and close-on-exec: children of a handler inherit neither end of the wire.
    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
        if not terminal_out:
            os.set_blocking(wire_out, False)
        yield Wire(wire_in, wire_out)
    finally:
        sys.stdout.flush()  # what handlers printed belongs on stderr, where fd 1 points until now
        with suppress(OSError):
            os.set_blocking(wire_out, True)
        os.dup2(wire_in, 0)
        os.dup2(wire_out, 1)
        os.close(wire_in)
        os.close(wire_out)


async def run_stdio(mcp: MCPServer[Any]) -> None:
    """Serve `mcp` over stdio until stdin closes, as `mcp.run_stdio_async()` does."""
    # MCPServer has no public way to serve a pair of streams; its own run_stdio_async and the
    # SDK's in-memory client reach the low-level server through this attribute.
    server = getattr(mcp, "_lowlevel_server", None)
    if server is None or not hasattr(server, "run") or not hasattr(server, "create_initialization_options"):
        await mcp.run_stdio_async()
        return
    with claim_stdio() as wire:
        if wire is None:
            await mcp.run_stdio_async()
            return
        await server.run(MessageReader(wire.stdin), MessageWriter(wire.stdout), server.create_initialization_options())
