"""What the SDK-backed adapters share: their settings, one SDK client and one semaphore per
event loop, and the translation of SDK errors into `ModelError`s that say the fix.

Retries with backoff and timeouts are the SDKs' own (`max_retries`, `timeout`); nothing here
retries. The semaphore is held across the SDK's retries on purpose: a model that is being
rate-limited should not be offered more concurrent calls while it backs off.
"""

import asyncio
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import ModuleType
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ted.errors import ConfigError, ModelError, ModelRefused
from ted.llm.base import SAMPLING, Completion, GenerationSettings, Message, OutputSchema
from ted.llm.capabilities import check_messages
from ted.redaction import redact

StructuredOutput = Literal["auto", "tool", "json_schema", "json_object", "prompt"]


class ModelSettings(BaseModel):
    """How to reach one model. Frozen, so a (name, settings) pair can key the model cache."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: str | None = Field(None, repr=False, description="Wins over the provider's key variable.")
    base_url: str | None = Field(None, description="Wins over the provider's base-URL variable.")
    timeout: float = Field(600.0, gt=0, description="Seconds the SDK waits for one HTTP attempt (its own default).")
    # Above the SDKs' default of 2: a distillation makes hundreds of calls, and a 429 midway
    # should cost seconds of backoff, not the job.
    max_retries: int = Field(4, ge=0, description="Retries the SDK makes on 408/409/429/5xx, timeouts and resets.")
    max_concurrency: int = Field(8, ge=1, description="Calls in flight at once through this model.")
    structured_output: StructuredOutput = Field(
        "auto",
        description="How structured replies are requested: `tool` (Anthropic tool use), `json_schema` or "
        "`json_object` (OpenAI response_format), `prompt` (the schema in the system prompt, for servers that "
        "support none of these); `auto` picks tool use for Anthropic and json_schema otherwise.",
    )
    strict_schemas: bool = Field(
        True,
        description="Ask the provider to enforce the reply schema exactly (OpenAI `strict: true`, Anthropic strict "
        "tools); turn off for a model or server that refuses strict schemas.",
    )

    @classmethod
    def from_env(cls) -> "ModelSettings":
        """Defaults, overridden by TED_MODEL_TIMEOUT, TED_MODEL_MAX_RETRIES, TED_MODEL_MAX_CONCURRENCY and
        TED_STRUCTURED_OUTPUT: how a server or CLI user tunes every model without code."""
        given = {field: os.environ[var] for field, var in ENV_SETTINGS.items() if os.environ.get(var)}
        try:
            return cls.model_validate(given)
        except ValidationError as e:
            error = e.errors()[0]
            raise ConfigError(f"{ENV_SETTINGS[error['loc'][0]]}={given[error['loc'][0]]!r}: {error['msg']}.") from None


ENV_SETTINGS = {
    "timeout": "TED_MODEL_TIMEOUT",
    "max_retries": "TED_MODEL_MAX_RETRIES",
    "max_concurrency": "TED_MODEL_MAX_CONCURRENCY",
    "structured_output": "TED_STRUCTURED_OUTPUT",
    "strict_schemas": "TED_STRICT_SCHEMAS",
}


def schema_instructions(output: OutputSchema) -> str:
    """The schema as text, for modes where the provider is not told the schema itself."""
    schema = json.dumps(output.json_schema, separators=(",", ":"))
    return (
        f"Reply with exactly one JSON object (named {output.name}) that validates against this JSON schema, "
        f"and nothing else — no prose, no code fence:\n{schema}"
    )


def join_system(system: str | None, extra: str) -> str:
    return f"{system}\n\n{extra}" if system else extra


class ProviderModel(ABC):
    """Base of the SDK adapters: `complete` bounds concurrency and translates SDK errors."""

    provider: ClassVar[str]
    default_base_url: ClassVar[str]
    wire_format: ClassVar[str]
    sdk: ClassVar[ModuleType]
    structured_modes: ClassVar[tuple[StructuredOutput, ...]]
    sampling: ClassVar[tuple[str, ...]] = SAMPLING
    """The sampling settings (of temperature, top_p, seed) the provider's API takes; others are not sent."""

    def __init__(
        self,
        model: str,
        settings: ModelSettings | None = None,
        *,
        name: str | None = None,
        key_env: str | None = None,
        base_url_env: str | None = None,
    ):
        """`key_env` and `base_url_env` name the variables the user should fix in error messages."""
        self.model = model
        self.settings = settings or ModelSettings()
        self.name = name or f"{self.provider}:{model}"
        self.key_env = key_env
        self.base_url_env = base_url_env
        self.base_url = self.settings.base_url or self.default_base_url
        mode = self.settings.structured_output
        self.structured_output: StructuredOutput = self.structured_modes[0] if mode == "auto" else mode
        if self.structured_output not in self.structured_modes:
            valid = ", ".join(self.structured_modes)
            raise ConfigError(
                f"structured_output={mode!r} is not available for {self.name}; use one of: {valid} (or 'auto')."
            )
        # SDK clients (their connection pools) and asyncio semaphores belong to one event
        # loop; a model cached across loops (tests, repeated anyio.run) makes fresh ones. Each
        # SDK client is given the SDK's own plain HTTP client (`DefaultAsyncHttpxClient`): the one
        # it makes by default closes itself when collected by scheduling `aclose()` on whatever
        # loop runs then, which for a client of an ended loop fails ("Event loop is closed") in
        # another caller's loop. A plain one is simply collected; `aclose()` still closes it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        return redact(f"{type(self).__name__}({self.name!r}, base_url={self.base_url!r})")

    @abstractmethod
    def _make_client(self) -> Any: ...

    @abstractmethod
    async def _call(
        self,
        client: Any,
        messages: list[Message],
        system: str | None,
        output: OutputSchema | None,
        settings: GenerationSettings,
    ) -> Completion: ...

    def _bound(self) -> tuple[Any, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._semaphore is None:
            self._loop, self._client = loop, None
            self._semaphore = asyncio.Semaphore(self.settings.max_concurrency)
        if self._client is None:  # first use on this loop, or after aclose()
            self._client = self._make_client()
        return self._client, self._semaphore

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        output: OutputSchema | None = None,
        settings: GenerationSettings | None = None,
    ) -> Completion:
        check_messages(self.name, messages)
        client, semaphore = self._bound()
        async with semaphore:
            try:
                sent = (settings or GenerationSettings()).keep(self.sampling)
                return await self._call(client, list(messages), system, output, sent)
            except self.sdk.APIError as e:
                raise self._translate(e) from e
            except json.JSONDecodeError as e:
                raise ModelError(
                    f"{self.name}: {self.base_url} answered with a body that is not valid JSON ({e}). "
                    f"Check that {self._where} points at an {self.wire_format} API."
                ) from e

    async def aclose(self) -> None:
        """Close this loop's HTTP connections; the model stays usable (a new client is made on demand)."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = None

    @property
    def _where(self) -> str:
        return f"{self.base_url_env} / the base_url setting" if self.base_url_env else "the base_url setting"

    def _translate(self, e: Exception) -> ModelError:
        sdk, s = self.sdk, self.settings
        tries = (
            f"after {s.max_retries} {'retry' if s.max_retries == 1 else 'retries'}"
            if s.max_retries
            else "with retries off (max_retries=0)"
        )
        if isinstance(e, sdk.APITimeoutError):
            return ModelError(
                f"{self.name}: no reply from {self.base_url} within the timeout of {s.timeout:g} s ({tries}). "
                "Raise the `timeout` model setting, or lower max_tokens so replies come back sooner."
            )
        if isinstance(e, sdk.APIConnectionError):
            cause = e.__cause__ or e
            return ModelError(
                f"{self.name}: cannot connect to {self.base_url} ({type(cause).__name__}: {cause}) {tries}. "
                f"Check that the server is running and that {self._where} is right."
            )
        if isinstance(e, (sdk.AuthenticationError, sdk.PermissionDeniedError)):
            key = f"the {self.key_env} environment variable" if self.key_env else "the api_key setting"
            return ModelRefused(
                f"{self.name}: {self.base_url} refused the API key (HTTP {e.status_code}: {_api_message(e)}). "
                f"Set {key} to a valid key with access to {self.model!r}; an api_key setting wins over it."
            )
        if isinstance(e, sdk.RateLimitError):
            return ModelError(
                f"{self.name}: still rate limited (HTTP 429) {tries}: {_api_message(e)}. "
                "Lower max_concurrency, raise max_retries, or wait and resume the job."
            )
        if isinstance(e, sdk.NotFoundError):
            return ModelRefused(
                f"{self.name}: {self.base_url} has no model {self.model!r} or no such endpoint "
                f"(HTTP 404: {_api_message(e)}). Check the model name and {self._where}."
            )
        if isinstance(e, sdk.APIStatusError) and (e.status_code >= 500 or e.status_code in (408, 409)):
            return ModelError(
                f"{self.name}: the provider failed with HTTP {e.status_code} {tries}: {_api_message(e)}. "
                "It is likely overloaded or down: try again later, or raise max_retries."
            )
        if isinstance(e, sdk.APIStatusError):
            return ModelRefused(
                f"{self.name}: the request was rejected (HTTP {e.status_code}): {_api_message(e)}. "
                "Check the model name, the generation settings (max_tokens, temperature, top_p) and the "
                "structured_output and strict_schemas settings for this provider."
            )
        return ModelError(
            f"{self.name}: {self.base_url} answered with something the {self.provider} SDK cannot read "
            f"({type(e).__name__}: {e}). Check that {self._where} points at an {self.wire_format} API."
        )


def _api_message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    return str(getattr(e, "message", e))
