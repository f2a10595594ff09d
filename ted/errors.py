"""Every error ted-mcp raises on purpose, each with a message that says the fix.

    TedError
    ├── InvalidInput        an argument is malformed, too large or contradictory
    │   └── FileRefused     a file someone named cannot be read: outside the data folders, missing, too large
    ├── NotFound            a library, version or task that does not exist
    ├── Conflict            another client changed the library while a change was prepared
    ├── StoreError          the database file cannot be opened or migrated
    ├── ConfigError         a model name, key or setting is missing or malformed
    └── ModelError          a model call failed after the SDK's own retries and timeout
        ├── InvalidReply    the model's reply failed validation, even after one repair
        └── ModelRefused    the provider refused the call for a reason no retry fixes: the key,
                            the model name, the request (a job stops at once on one)

The MCP server turns any TedError into a tool error carrying the same message, so the
agent that called the tool reads what to change; the CLI prints it and exits 1. A message is
redacted when the error is made (`ted.redaction`): a key a provider echoed, or a password in a
base URL, never reaches a client, a log or the ledger.
"""

from collections.abc import Callable

from pydantic import ValidationError

from ted.redaction import redact


class TedError(Exception):
    """Base class: `str(error)` is a complete sentence for the user, with credentials redacted."""

    def __init__(self, message: str = "", *args: object):
        super().__init__(redact(str(message)), *args)


class InvalidInput(TedError):
    """The caller passed something we refuse to store; nothing was written."""


class FileRefused(InvalidInput):
    """A named file cannot be read (`ted.files`); the message says nothing a client should not learn."""


class NotFound(TedError):
    """The caller named something that does not exist; nothing was written."""


class Conflict(TedError):
    """The library moved on between the read a change was planned from and its write."""


class StoreError(TedError):
    """The SQLite file is unusable (unwritable path, newer schema, corrupt file)."""


class ConfigError(TedError):
    """A model or setting is not configured (e.g. the API key variable is unset)."""


class ModelError(TedError):
    """A model call failed (timeout, rate limit, server error) once the SDK gave up retrying."""


class InvalidReply(ModelError):
    """A structured reply did not validate, and neither did the one repair attempt."""


class ModelRefused(ModelError):
    """The provider refused the call (authentication, unknown model, a request it rejects):
    asking again, now or later, gets the same answer until the configuration changes."""


def invalid_input(error: ValidationError, subject: str, *, field: Callable[[str], str] = str) -> InvalidInput:
    """The first problem pydantic found in `subject`, said as `<subject> <field>: <problem>.`

    `field` turns the field's name into the one the user typed (`max_items` → `--max-items`).
    """
    first = error.errors()[0]
    name = field(".".join(str(part) for part in first["loc"]))
    return InvalidInput(f"{subject} {name}: {first['msg']}.")
