"""Every error ted-mcp raises on purpose, each with a message that says the fix.

    TedError
    ├── InvalidInput        an argument is malformed, too large or contradictory
    ├── NotFound            a library, version or task that does not exist
    └── StoreError          the database file cannot be opened or migrated

The MCP server turns any TedError into a tool error carrying the same message, so the
agent that called the tool reads what to change; the CLI prints it and exits 1.
"""


class TedError(Exception):
    """Base class: `str(error)` is a complete sentence for the user."""


class InvalidInput(TedError):
    """The caller passed something we refuse to store; nothing was written."""


class NotFound(TedError):
    """The caller named something that does not exist; nothing was written."""


class StoreError(TedError):
    """The SQLite file is unusable (unwritable path, newer schema, corrupt file)."""
