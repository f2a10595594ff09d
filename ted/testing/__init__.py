"""Test doubles that ship with the library, so users can test their own code the way we test ours.

`ModelServer` is a real HTTP server on 127.0.0.1 speaking the OpenAI and Anthropic wire
formats (for adapter, fault and benchmark tests); `ted.llm.scripted.ScriptedModel` is the
in-process double for logic tests.
"""

from ted.llm.scripted import ScriptedModel
from ted.testing.model_server import ModelServer, RecordedRequest, Reply

__all__ = ["ModelServer", "RecordedRequest", "Reply", "ScriptedModel"]
