"""Files a client may name: read only under the data folders (TED_DATA_DIRS), in a bounded way,
with one error outside them that says nothing about the file, and no file content in any error.
Tried as an attacker would, through the installed `ted-mcp` over stdio; the CLI reads any path."""

import json
import os

import pytest
from conftest import dump_database, installed_command
from mcp import Client, StdioServerParameters

from ted import cli
from ted.errors import InvalidInput
from ted.files import MAX_DATASET_BYTES, data_roots, opened, read_bytes
from ted.runs.datasets import load_dataset

pytestmark = pytest.mark.anyio

SECRET = "sk-proj-" + "s3cr3t" * 6
ITEMS = [{"id": "p1", "question": "What is 2 + 2?", "answer": "4"}]


@pytest.fixture
def roots(tmp_path):
    """A data folder with a dataset, a folder, a FIFO and links, and a secret file outside it."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (data / "ok.jsonl").write_text(json.dumps(ITEMS[0]) + "\n")
    (data / "sub").mkdir()
    os.mkfifo(data / "pipe")
    (outside / "secret.txt").write_text(f'{{"id": "{SECRET}", "question": "q", "answer": "1"}}\n')
    (data / "escape.jsonl").symlink_to(outside / "secret.txt")
    (data / "environ.png").symlink_to("/proc/self/environ")
    return data, outside


REFUSED = [
    "{outside}/secret.txt",
    "{data}/missing.jsonl",
    "{data}/sub",
    "{data}/pipe",
    "{data}/escape.jsonl",
    "{data}/../outside/secret.txt",
    "/proc/self/environ",
    "/etc/passwd",
    "/",
    "{data}/ok.jsonl\x00.png",
    "{data}/" + "x" * 5000,
    "",
]


def test_outside_the_roots_every_refusal_is_the_same_and_says_nothing_of_the_file(roots):
    data, outside = roots
    messages = set()
    for template in REFUSED:
        name = template.format(data=data, outside=outside)
        with pytest.raises(InvalidInput) as refused:
            read_bytes(name, [data], limit=MAX_DATASET_BYTES, what="Dataset file")
        shown = name if len(name) <= 200 else name[:200] + "…"
        messages.add(str(refused.value).replace(repr(shown), "NAME"))
    assert len(messages) == 1, messages
    [message] = messages
    assert str(data) in message and "TED_DATA_DIRS" in message and SECRET not in message


def test_inside_the_roots_a_file_is_read_by_path_or_relative_name_within_its_cap(roots, tmp_path):
    data, _ = roots
    assert read_bytes(data / "ok.jsonl", [data], limit=100, what="Dataset file").startswith(b'{"id": "p1"')
    with opened("ok.jsonl", [tmp_path / "elsewhere", data], limit=100) as (real, _):
        assert real == data / "ok.jsonl"
    with pytest.raises(InvalidInput, match="bytes, over the limit of 10"):
        read_bytes(data / "ok.jsonl", [data], limit=10)


def test_roots_come_from_ted_data_dirs_with_a_documented_default(monkeypatch, tmp_path):
    monkeypatch.setenv("TED_DATA_DIRS", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert data_roots() == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.delenv("TED_DATA_DIRS")
    assert data_roots()[0].parts[-2:] == ("ted-mcp", "datasets")


async def test_a_dataset_over_the_cap_is_refused_before_it_is_read(roots):
    data, _ = roots
    huge = data / "huge.jsonl"
    with huge.open("wb") as file:  # sparse: costs no disk, and would cost memory if it were read
        file.truncate(MAX_DATASET_BYTES + 1)
    with pytest.raises(InvalidInput, match=f"over the limit of {MAX_DATASET_BYTES:,}"):
        await load_dataset(huge, roots=[data])


async def test_no_error_quotes_the_file(roots, tmp_path):
    data, outside = roots
    bad = data / "bad.jsonl"
    lines = [
        {"id": f"AKIA{SECRET[:12]} x", "question": "q", "answer": "1"},
        {"id": "p2", "question": "q2", "answer": "1", "images": [str(outside / "secret.txt")]},
        {"id": "p3", "question": "q3", "answer": "1", "images": ["environ.png"]},
        {"id": "p1", "question": "q4", "answer": "1"},
        {"id": "p1", "question": "q5", "answer": "1"},
    ]
    bad.write_text("".join(json.dumps(line) + "\n" for line in lines) + f"not json {SECRET}\n")
    with pytest.raises(InvalidInput) as refused:
        await load_dataset(bad, roots=[data])
    message = str(refused.value)
    for line in range(1, 7):
        assert f"line {line}:" in message or line == 4, message
    assert "AKIA" not in message and SECRET[:12] not in message and "secret.txt" not in message
    assert "environ" not in message and "not json" not in message


async def test_the_cli_reads_any_path(roots, tmp_path, capsys):
    _, outside = roots
    dataset = outside / "train.jsonl"
    dataset.write_text(json.dumps(ITEMS[0]) + "\n")
    args = ["--db", str(tmp_path / "ted.db"), "distill", "--dataset", str(dataset), "--library", "x", "--estimate"]
    assert await cli.run([*args, "--student", "local:s", "--teacher", "local:t"]) == 0
    assert "1 problems × 3 epochs" in capsys.readouterr().out


# -- through the installed server, as an attacker ------------------------------------------------


def server_params(db_path, data) -> StdioServerParameters:
    env = {
        **os.environ,
        "TED_DATA_DIRS": str(data),
        "OPENAI_API_KEY": SECRET,
        "TED_HTTP_TOKEN": "token-" + SECRET,
        "TED_STUDENT": "openai:gpt-4.1-mini",
        "TED_TEACHER": "openai:gpt-4.1",
    }
    return StdioServerParameters(command=installed_command("ted-mcp"), args=["--db", str(db_path)], env=env)


@pytest.mark.slow
async def test_a_client_cannot_read_outside_the_data_folders(db_path, roots):
    data, outside = roots
    attempts = [
        {"dataset": "/proc/self/environ"},
        {"dataset": str(outside / "secret.txt")},
        {"dataset": "../outside/secret.txt"},
        {"dataset": str(data / "escape.jsonl")},
        {"dataset": str(data / "pipe")},
        {"dataset": "x" * 5000},
        {"dataset": [{**ITEMS[0], "images": ["/proc/self/environ"]}]},
        {"dataset": [{**ITEMS[0], "images": [str(data / "environ.png")]}]},
        {"dataset": [{**ITEMS[0], "images": [str(outside / "secret.txt")]}]},
    ]
    async with Client(server_params(db_path, data), raise_exceptions=False) as client:
        before = dump_database(db_path)
        for arguments in attempts:
            result = await client.call_tool("distill_batch", {**arguments, "estimate_only": True})
            text = result.content[0].text
            assert result.is_error, arguments
            assert "data folders" in text or "inside the data folders" in text, text
            assert SECRET not in text and "PATH=" not in text, text
        assert dump_database(db_path) == before
        inside = await client.call_tool("distill_batch", {"dataset": "ok.jsonl", "estimate_only": True})
        assert not inside.is_error and inside.structured_content["estimate"]["problems"] == 1


def test_data_folders_and_the_image_cap_are_documented():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    assert "TED_DATA_DIRS" in readme and "ted-mcp/datasets" in readme
