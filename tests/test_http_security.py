"""The HTTP transport as an attacker meets it: a blank token, forged Host and Origin headers on
loopback addresses other than 127.0.0.1 and on a wildcard bind, and connections that open and
never finish a request, up to the descriptor limit. Each against the installed `ted-mcp`."""

import os
import resource
import socket
import subprocess
import time
from urllib.parse import urlparse

import httpx2
import pytest
from conftest import free_port, http_server, installed_command
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from ted.http_serving import REQUEST_SECONDS, token_or_none, transport_security

pytestmark = pytest.mark.anyio

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


async def exercise(url: str, **client_options) -> None:
    async with httpx2.AsyncClient(**client_options) as http, Client(streamable_http_client(url, http_client=http)) as c:
        result = await c.call_tool("get_experiences", {"library": "net"})
        assert not result.is_error and result.structured_content["version"] == 0


@pytest.mark.parametrize("how", ["flag", "env", "blank-env"])
def test_an_empty_token_is_no_token(db_path, how):
    env = {k: v for k, v in os.environ.items() if k != "TED_HTTP_TOKEN"}
    args = ["--transport", "http", "--host", "0.0.0.0", "--port", str(free_port()), "--db", str(db_path)]
    if how == "flag":
        args += ["--token", ""]
    else:
        env["TED_HTTP_TOKEN"] = "" if how == "env" else "   "
    run = subprocess.run([installed_command("ted-mcp"), *args], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 2, run.stderr
    assert "without a bearer token" in run.stderr and "non-empty" in run.stderr
    assert not db_path.exists()  # refused before the database was opened
    assert token_or_none("") is None and token_or_none(" \t") is None and token_or_none(" t ") == "t"


def test_allowed_hosts_are_the_loopback_names_the_bind_address_and_the_ones_given():
    settings = transport_security("127.0.0.2", ["proxy.example"])
    assert settings.enable_dns_rebinding_protection
    assert {"127.0.0.2:*", "localhost:*", "proxy.example", "[::1]:*"} <= set(settings.allowed_hosts)
    assert "http://proxy.example:*" in settings.allowed_origins and "https://127.0.0.2" in settings.allowed_origins
    wildcard = transport_security("0.0.0.0")
    assert "0.0.0.0:*" not in wildcard.allowed_hosts and f"{socket.gethostname()}:*" in wildcard.allowed_hosts
    assert "[::2]:*" in transport_security("::2").allowed_hosts


@pytest.mark.slow
@pytest.mark.parametrize("bind", ["127.0.0.2", "localhost", "0.0.0.0"])
async def test_forged_host_and_origin_are_refused_on_every_bind_address(db_path, bind):
    connect = "127.0.0.2" if bind == "127.0.0.2" else "127.0.0.1"
    token = {"Authorization": "Bearer s3cret-token"} if bind == "0.0.0.0" else {}
    env = {**os.environ, "TED_HTTP_TOKEN": "s3cret-token"} if token else None
    with http_server(db_path, "--host", bind, env=env, connect=connect) as url:
        port = urlparse(url).port
        forged = [
            ({"host": f"evil.example:{port}"}, 421),
            ({"host": "evil.example"}, 421),
            ({"origin": "http://evil.example"}, 403),
            ({"origin": f"http://evil.example:{port}"}, 403),
            ({"origin": "null"}, 403),
        ]
        for extra, status in forged:
            response = httpx2.post(url, json=INITIALIZE, headers={**HEADERS, **token, **extra})
            assert response.status_code == status, (extra, response.status_code, response.text)
        honest = {**HEADERS, **token, "origin": f"http://{connect}:{port}"}
        assert httpx2.post(url, json=INITIALIZE, headers=honest).status_code == 200
        await exercise(url, headers=token)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_many(url: str, count: int, partial: bool) -> list[socket.socket]:
    parsed, opened = urlparse(url), []
    for n in range(count):
        try:
            s = socket.create_connection((parsed.hostname, parsed.port), timeout=2)
        except OSError:
            continue
        if partial and n % 2:
            s.sendall(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{parsed.port}\r\nContent-Length: 500\r\n".encode())
        opened.append(s)
    return opened


@pytest.mark.slow
async def test_half_open_connections_are_dropped_and_the_server_recovers(db_path):
    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    with http_server(db_path, preexec_fn=few_descriptors) as url:
        await exercise(url)
        # Past the descriptor limit, half of them sending part of a request and then nothing.
        attackers = open_many(url, 400, partial=True)
        assert len(attackers) >= 100
        time.sleep(1)
        for s in attackers:
            s.close()
        started = cpu_seconds(url.pid)
        time.sleep(2)
        assert cpu_seconds(url.pid) - started < 0.5  # idle, not spinning on the listening socket
        await exercise(url)

        # Connections that stay open but never finish a request are closed by the server itself.
        stalled = open_many(url, 40, partial=True)
        time.sleep(REQUEST_SECONDS + 2)
        for s in stalled:
            s.settimeout(1)
            try:
                assert s.recv(1024) == b""  # the server hung up
            except ConnectionResetError:
                pass
            s.close()
        await exercise(url)
