"""`ted-mcp` run by hand on a terminal: it says what it waits for and how to quit, and Ctrl-C quits.

The server runs on a real pseudo-terminal as its controlling terminal, so Ctrl-C is the byte a
keyboard sends (the terminal turns it into SIGINT for the foreground process), not a signal
the test aims at a pid.
"""

import contextlib
import os
import pty
import select
import signal
import time

import pytest
from conftest import installed_command

pytestmark = pytest.mark.slow


def read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    """What the terminal shows until `wanted` appears (or the timeout, or the end)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the other side closed: the process is gone
            break
        if not chunk:
            break
        seen += chunk
    return seen


def exit_code(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


@pytest.fixture
def on_terminal(db_path):
    """ted-mcp started on a pseudo-terminal; yields (pid, the terminal's master side)."""
    command = installed_command("ted-mcp")
    pid, master = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and stderr are the terminal
        os.execv(command, [command, "--db", str(db_path)])
    try:
        yield pid, master
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):  # already ended and reaped
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(master)


@pytest.mark.parametrize("how", ["Ctrl-C key", "SIGINT"])
def test_ted_mcp_on_a_terminal_says_how_to_quit_and_quits_on_ctrl_c(on_terminal, how):
    pid, master = on_terminal
    shown = read_until(master, b"experience store at", timeout=30)
    assert b"waiting for an MCP client" in shown and b"press Ctrl-C to quit" in shown, shown
    time.sleep(0.5)  # past start-up, into the wait for a client's first line
    if how == "SIGINT":
        os.kill(pid, signal.SIGINT)
    else:
        os.write(master, b"\x03")
    code = exit_code(pid, timeout=15)
    assert code == 130, (code, read_until(master, b"\0", 0.5))
    assert b"ted-mcp: stopped." in read_until(master, b"stopped.", timeout=5)


def test_ted_mcp_on_a_terminal_serves_a_line_typed_into_it(on_terminal):
    """The terminal is a real wire: a JSON-RPC line typed into it is answered on it."""
    pid, master = on_terminal
    read_until(master, b"experience store at", timeout=30)
    os.write(
        master,
        b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
        b'"capabilities":{},"clientInfo":{"name":"typed","version":"1"}}}\n',
    )
    assert b'"serverInfo":{"name":"ted-mcp"' in read_until(master, b'"serverInfo"', timeout=15).replace(b" ", b"")
    os.write(master, b"\x04")  # Ctrl-D on an empty line: the end of input
    assert exit_code(pid, timeout=15) == 0
