"""`provider:model` names → models, with keys and base URLs from the usual environment variables.

    anthropic:claude-sonnet-4-5        ANTHROPIC_API_KEY   (ANTHROPIC_BASE_URL optional)
    openai:gpt-4.1-mini                OPENAI_API_KEY      (OPENAI_BASE_URL optional)
    openrouter:qwen/qwen3-vl-8b        OPENROUTER_API_KEY
    openai-compatible:Qwen3-VL-8B      TED_OPENAI_COMPATIBLE_BASE_URL  (TED_OPENAI_COMPATIBLE_API_KEY optional)
    local:qwen3:8b                     the same as openai-compatible: vLLM, Ollama, llama.cpp server
    scripted:anything                  the in-process test double, ted.llm.scripted.ScriptedModel

Everything after the first colon is the provider's model id, so Ollama tags keep theirs.
Settings passed in win over the environment. Models are cached per (name, resolved
settings), so every caller of one model shares its concurrency bound.
"""

import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from pydantic import BaseModel

from ted.errors import ConfigError
from ted.llm.base import Model
from ted.llm.provider import ModelSettings

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"


class Provider(BaseModel):
    key_env: str | None
    key_required: bool
    base_url_env: str | None
    default_base_url: str | None = None
    hint: str = ""


PROVIDERS: dict[str, Provider] = {
    "anthropic": Provider(key_env="ANTHROPIC_API_KEY", key_required=True, base_url_env="ANTHROPIC_BASE_URL"),
    "openai": Provider(key_env="OPENAI_API_KEY", key_required=True, base_url_env="OPENAI_BASE_URL"),
    "openrouter": Provider(
        key_env="OPENROUTER_API_KEY", key_required=True, base_url_env=None, default_base_url=OPENROUTER_BASE_URL
    ),
    "openai-compatible": Provider(
        key_env="TED_OPENAI_COMPATIBLE_API_KEY",
        key_required=False,
        base_url_env="TED_OPENAI_COMPATIBLE_BASE_URL",
        hint=" e.g. http://localhost:8000/v1 (vLLM), http://localhost:11434/v1 (Ollama), "
        "http://localhost:8080/v1 (llama.cpp server)",
    ),
    "scripted": Provider(key_env=None, key_required=False, base_url_env=None),
}
ALIASES = {"local": "openai-compatible"}

_cache: dict[tuple[str, ModelSettings], Model] = {}
_cache_lock = threading.Lock()


def get_model(name: str, settings: ModelSettings | None = None) -> Model:
    """The model called `name` (`provider:model`). Raises ConfigError naming what to set."""
    provider_name, model_id = split_name(name)
    provider = PROVIDERS[ALIASES.get(provider_name, provider_name)]
    settings = settings or ModelSettings.from_env()
    if provider_name == "scripted":
        from ted.llm.scripted import ScriptedModel

        # Never cached: a test double with state shared between callers is a trap.
        return ScriptedModel(name=name)
    resolved = _resolve(name, provider_name, provider, settings)
    key = (name, resolved)
    with _cache_lock:
        model = _cache.get(key)
        if model is None:
            model = _cache[key] = _build(name, provider_name, model_id, provider, resolved)
    return model


async def load_model(models: Callable[[str], Model], name: str) -> Model:
    """`models(name)`, with the provider's SDK imported first in a worker thread.

    Importing an SDK takes a second or more; done inside `models(name)` on the event loop, it
    would hold every other client's call for that long (the first `distill_batch`, the first
    critique after a start).
    """
    await anyio.to_thread.run_sync(import_adapter, name)
    return models(name)


def import_adapter(name: str) -> None:
    """Import the adapter (and SDK) a model name needs, if it needs one; blocking."""
    provider = ALIASES.get(name.partition(":")[0], name.partition(":")[0])
    if provider == "anthropic":
        import ted.llm.anthropic  # noqa: F401
    elif provider in PROVIDERS and provider != "scripted":
        import ted.llm.openai  # noqa: F401


def configured_adapters() -> list[str]:
    """The model names whose adapters this environment will likely need: the default teacher and
    student, and a model of each provider whose key or base URL is set."""
    names = [os.environ.get(v, "") for v in ("TED_TEACHER", "TED_STUDENT")]
    for provider_name, provider in PROVIDERS.items():
        if any(os.environ.get(v) for v in (provider.key_env, provider.base_url_env) if v):
            names.append(f"{provider_name}:any")
    return [n for n in names if n]


def import_configured_adapters() -> None:
    """`import_adapter` for every `configured_adapters()` name; blocking."""
    for name in configured_adapters():
        import_adapter(name)


def clear_model_cache() -> None:
    """Forget every cached model (tests that change the environment between calls)."""
    with _cache_lock:
        _cache.clear()


def split_name(name: str) -> tuple[str, str]:
    """(provider, model id) of a `provider:model` name; ConfigError when it is not one."""
    provider_name, colon, model_id = name.partition(":")
    valid = ", ".join([*PROVIDERS, *ALIASES])
    if not colon or not provider_name or not model_id.strip():
        raise ConfigError(
            f"Model name {name!r} is not `provider:model` (e.g. anthropic:claude-sonnet-4-5). Valid providers: {valid}."
        )
    if provider_name not in PROVIDERS and provider_name not in ALIASES:
        raise ConfigError(f"Unknown model provider {provider_name!r} in {name!r}. Valid providers: {valid}.")
    return provider_name, model_id


def _resolve(name: str, provider_name: str, provider: Provider, settings: ModelSettings) -> ModelSettings:
    api_key = settings.api_key or (os.environ.get(provider.key_env) if provider.key_env else None) or None
    if api_key is None and provider.key_required:
        raise ConfigError(
            f"No API key for {name}: set the {provider.key_env} environment variable "
            "(or pass api_key in the model settings)."
        )
    base_url = (
        settings.base_url
        or (os.environ.get(provider.base_url_env) if provider.base_url_env else None)
        or provider.default_base_url
    )
    if base_url is None and provider_name in ("openai-compatible", "local"):
        raise ConfigError(
            f"No base URL for {name}: set the {provider.base_url_env} environment variable "
            f"(or pass base_url in the model settings),{provider.hint}."
        )
    return settings.model_copy(update={"api_key": api_key, "base_url": base_url})


def _build(name: str, provider_name: str, model_id: str, provider: Provider, settings: ModelSettings) -> Model:
    # Imported here so that naming a model does not import both SDKs (slow) and so that
    # the adapters can import this package freely.
    if provider_name == "anthropic":
        from ted.llm.anthropic import AnthropicModel

        return AnthropicModel(
            model_id, settings, name=name, key_env=provider.key_env, base_url_env=provider.base_url_env
        )
    from ted.llm.openai import OpenAIModel

    return OpenAIModel(
        model_id,
        settings,
        name=name,
        key_env=provider.key_env,
        base_url_env=provider.base_url_env,
        # OpenAI's reasoning models refuse `max_tokens`; compatible servers may not know the newer name.
        max_tokens_param="max_completion_tokens" if provider_name == "openai" else "max_tokens",
    )


@asynccontextmanager
async def closing_models(models: Callable[[str], Model] = get_model) -> AsyncIterator[Callable[[str], Model]]:
    """`models`, closing on the way out the HTTP connections of every model it gave.

    Models are cached per process with their SDK clients, whose connections belong to the event
    loop that used them. Left open when the loop ends (a `ted` command or a server run in-process,
    by a script or a test), they are closed later from whatever loop runs then, and fail there.
    """
    used: list[Model] = []

    def resolve(name: str) -> Model:
        used.append(model := models(name))
        return model

    try:
        yield resolve
    finally:
        for model in dict.fromkeys(used):
            if (close := getattr(model, "aclose", None)) is not None:
                await close()
