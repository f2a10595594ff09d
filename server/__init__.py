"""ted-mcp's MCP server (installed as `ted_server`); the library itself is `ted`."""

from ted_server.app import build_server

__all__ = ["build_server"]
