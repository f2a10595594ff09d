"""Redaction: credentials taken out of any text before it reaches a client, a log or the ledger.

A provider's error may echo the key it was given, a base URL may carry `user:password@`, and a
traceback may show either. Every `TedError` message passes through `redact` when it is made,
and so do the unexpected errors the server reports and the job errors it stores. What is
replaced: the user-info part of URLs, secret-looking query parameters, bearer tokens and API
key headers, the key formats of the common providers (Anthropic, OpenAI, OpenRouter, AWS,
GitHub, Slack, Google, Hugging Face, JWTs), and the value of every environment variable whose
name says it holds a secret (`*_KEY`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*`, …).
"""

import os
import re

MARK = "[redacted]"
MIN_SECRET_CHARS = 6
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS$|CREDENTIAL|AUTH", re.I)
_PATTERNS = [
    (re.compile(r"(?<=://)[^/\s@]+@"), f"{MARK}@"),
    (
        re.compile(
            r"(?i)([?&;](?:api[_-]?key|key|token|access[_-]?token|secret|password|passwd|pass|auth|sig|signature)=)"
            r"[^&\s#;]+"
        ),
        rf"\1{MARK}",
    ),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=*-]{6,}"), rf"\1{MARK}"),
    (
        re.compile(r"(?i)((?:x-api-key|api[_-]?key|authorization|key provided)[\"']?\s*[:=]\s*[\"']?)[^\s\"',})]{6,}"),
        rf"\1{MARK}",
    ),
    (
        re.compile(
            r"\bsk-ant-[A-Za-z0-9_*-]{8,}|\bsk-(?:proj-|or-v1-|live-|test-)?[A-Za-z0-9_*-]{8,}|\bAKIA[0-9A-Z]{16}\b"
            r"|\bgh[pousr]_[A-Za-z0-9]{20,}|\bxox[baprs]-[A-Za-z0-9-]{10,}|\bAIza[0-9A-Za-z_-]{30,}|\bhf_[A-Za-z0-9]{20,}"
            r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
        ),
        MARK,
    ),
]


def _secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= MIN_SECRET_CHARS}
    return sorted(values, key=len, reverse=True)  # a longer secret first, in case one contains another


def redact(text: str) -> str:
    """`text` with credentials replaced by [redacted]."""
    for value in _secret_values():
        text = text.replace(value, MARK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
