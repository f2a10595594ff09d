"""Every tool, fuzzed through a real MCP client with arguments generated from the tool's own input
schema (`schema_strategies`) and with arguments that break it (wrong types, unknown names,
extreme numbers, NULs, long paths): no error is without a message that names its field or its
cause, and a refused call leaves the database exactly as it was."""

import os

import anyio.from_thread
import pytest
from conftest import dump_database
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from schema_strategies import from_schema

from ted.gate import TOOL_NAMES
from ted_server import app, build_server

# Nothing a generated argument names may reach a model: no keys, no endpoints, no default models.
MODEL_ENV = ("ANTHROPIC", "OPENAI", "OPENROUTER", "TED_TEACHER", "TED_STUDENT", "TED_GUARD", "TED_OPENAI_COMPATIBLE")

HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(["", "0", "yes", "true", "\x00", "/proc/self/environ", "x" * 5000, "../" * 50, "E1", "job-1"]),
    st.text(max_size=50),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the whole module, driven from the tests' threads through a blocking portal."""
    db = tmp_path_factory.mktemp("fuzz") / "ted.db"
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(MODEL_ENV)}
    try:
        with anyio.from_thread.start_blocking_portal() as portal:
            client = Client(build_server(db), raise_exceptions=False)
            with portal.wrap_async_context_manager(client):
                portal.call(client.call_tool, "add_experience", {"library": "seeded", "text": "Check units first."})
                tools = {t.name: t.input_schema for t in portal.call(client.list_tools).tools}
                yield portal, client, db, tools
    finally:
        os.environ.update(saved)


def check_call(served, name: str, arguments: dict) -> None:
    portal, client, db, _ = served
    before = dump_database(db)
    result = portal.call(client.call_tool, name, arguments)
    if not result.is_error:
        return
    text = " ".join(getattr(block, "text", "") for block in result.content).strip()
    prefix = f"Error executing tool {name}"
    assert text and text.removeprefix(prefix).strip(" :"), (name, arguments, text)
    assert dump_database(db) == before, (name, arguments, text)


# Every registered tool, so one added later is fuzzed too.
TOOLS = [fn.__name__ for fn, *_ in app.TOOLS]


def test_every_tool_is_fuzzed_and_named_by_the_gate(served):
    assert set(served[3]) == set(TOOLS)
    # A lesson that tells the agent to call one of this server's tools is refused by name.
    assert set(TOOLS) <= set(TOOL_NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", TOOLS)
def test_arguments_from_the_schema_fail_only_with_a_message_and_change_nothing(served, name):
    schema = served[3][name]

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(from_schema(schema))
    def fuzz(arguments):
        check_call(served, name, arguments)

    fuzz()


@pytest.mark.slow
@pytest.mark.parametrize("name", TOOLS)
def test_arguments_that_break_the_schema_are_refused_with_a_message_and_change_nothing(served, name):
    known = list(served[3][name].get("properties", {}))
    keys = st.sampled_from([*known, "libary", "text ", "", "__class__"]) if known else st.text(max_size=8)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(keys, HOSTILE, max_size=4))
    def fuzz(arguments):
        check_call(served, name, arguments)

    fuzz()
