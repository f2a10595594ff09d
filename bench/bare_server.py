"""A bare MCPServer over stdio: the MCP Python SDK's own floor for a tool call.

`get_experiences_latency.py` launches it as `python bench/bare_server.py` next to ted-mcp and
the official memory server, so the figures separate what the SDK costs from what ted-mcp adds.
Two async tools (async, like ted-mcp's):

- `ping` returns "pong": the floor for any call.
- `lessons` returns a fixed `ExperiencePrompt` holding the benchmark's 15 lessons, built once at
  start: the floor for a reply of exactly get_experiences' shape and size (no store, no work).
"""

from lessons import LESSONS
from mcp.server.mcpserver import MCPServer

from ted.prompts import experience_prompt
from ted.store.records import ExperienceItem, ExperiencePrompt

mcp = MCPServer("bare", log_level="WARNING")

ITEMS = [
    ExperienceItem(id=f"E{i}", text=text, usage_count=0, helpful_count=0, harmful_count=0, tokens=len(text) // 5)
    for i, (_, text) in enumerate(LESSONS, start=1)
]
PROMPT = experience_prompt((item.id, item.text) for item in ITEMS)
REPLY = ExperiencePrompt(
    library="bench",
    version=1,
    prompt=PROMPT,
    items=ITEMS,
    tokens=len(PROMPT) // 5,
    token_budget=4000,
    max_items=15,
    over_budget=False,
)


@mcp.tool()
async def ping() -> str:
    """Answer at once."""
    return "pong"


@mcp.tool()
async def lessons() -> ExperiencePrompt:
    """The benchmark's lessons, in get_experiences' reply shape, from memory."""
    return REPLY


if __name__ == "__main__":
    mcp.run()
