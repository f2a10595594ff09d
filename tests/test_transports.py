"""The installed `ted-mcp` command, reached over stdio and streamable HTTP."""

import os
import subprocess

import httpx2
import pytest
from conftest import free_port, http_server, installed_command
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio


async def exercise(client: Client) -> None:
    """Write through the server and read it back: proves the transport carries real calls."""
    tools = {t.name for t in (await client.list_tools()).tools}
    assert "get_experiences" in tools
    added = await client.call_tool("add_experience", {"library": "net", "text": "Name the unknown first."})
    assert not added.is_error, added.content
    read = await client.call_tool("get_experiences", {"library": "net"})
    assert "[E1] Name the unknown first." in read.structured_content["prompt"]
    # Grading runs math-verify, whose timeout needs the main thread: it must work on every transport.
    graded = await client.call_tool(
        "record_attempt",
        {
            "library": "net",
            "task": "Half of one?",
            "trajectory": "[E1] so \\boxed{\\frac{1}{2}}",
            "ground_truth": "0.5",
            "model": "scripted",
        },
    )
    assert not graded.is_error, graded.content
    assert (graded.structured_content["correct"], graded.structured_content["graded_by"]) == (True, "math")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_launches_the_installed_command(db_path, mode):
    params = StdioServerParameters(command=installed_command("ted-mcp"), args=["--db", str(db_path)])
    async with Client(params, mode=mode) as client:
        await exercise(client)
    assert db_path.exists()


async def test_stdio_uses_ted_db_and_logs_the_path(tmp_path):
    db = tmp_path / "from-env.db"
    params = StdioServerParameters(command=installed_command("ted-mcp"), env={**os.environ, "TED_DB": str(db)})
    with (tmp_path / "stderr.txt").open("w+") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            await exercise(client)
        errlog.seek(0)
        assert f"experience store at {db}" in errlog.read()
    assert db.exists()


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_streamable_http_on_loopback(db_path, mode):
    with http_server(db_path) as url:
        async with Client(url, mode=mode) as client:
            await exercise(client)


def test_non_loopback_bind_without_token_refuses_to_start(db_path):
    env = {k: v for k, v in os.environ.items() if k != "TED_HTTP_TOKEN"}
    run = subprocess.run(
        [installed_command("ted-mcp"), "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 2
    assert "without a bearer token" in run.stderr and "TED_HTTP_TOKEN" in run.stderr


async def test_non_loopback_bind_requires_the_bearer_token(db_path):
    with http_server(db_path, "--host", "0.0.0.0", env={**os.environ, "TED_HTTP_TOKEN": "s3cret"}) as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = httpx2.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret"}) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                await exercise(client)
