"""The Anthropic and OpenAI adapters, through the real SDKs, against the local model server
on 127.0.0.1: wire shapes, usage, the SDKs' retries and timeouts, error messages, structured
replies and the concurrency bound. Then the registry: names, keys, base URLs, caching."""

import asyncio
import base64
import time

import anthropic
import pytest
from conftest import free_port, tiny_png
from pydantic import BaseModel

from ted.errors import ConfigError, InvalidReply, ModelError, ModelRefused
from ted.images import read_image
from ted.llm import (
    AnthropicModel,
    GenerationSettings,
    ImagePart,
    Message,
    ModelSettings,
    OpenAIModel,
    ScriptedModel,
    clear_model_cache,
    get_model,
    strict_schema,
    structured,
)
from ted.llm.registry import OPENROUTER_BASE_URL
from ted.testing import ModelServer, Reply

pytestmark = pytest.mark.anyio

PROVIDERS = ["anthropic", "openai"]
KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


class Answer(BaseModel):
    answer: int
    reason: str


def make(provider: str, server: ModelServer, **settings) -> AnthropicModel | OpenAIModel:
    settings = {"api_key": "test-key", "max_retries": 0, "timeout": 5.0, **settings}
    if provider == "anthropic":
        return AnthropicModel("claude-test", ModelSettings(base_url=server.anthropic_base_url, **settings))
    return OpenAIModel("gpt-test", ModelSettings(base_url=server.openai_base_url, **settings))


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_text_round_trip(provider):
    async with ModelServer(["Paris."]) as server:
        model = make(provider, server)
        completion = await model.complete(
            [Message.user("Capital of France?")], system="Be brief.", settings=GenerationSettings(max_tokens=50)
        )
        await model.aclose()
    assert (completion.text, completion.model, completion.truncated) == ("Paris.", f"{provider}:{model.model}", False)
    [request] = server.requests
    body = request.body
    assert body["model"] == model.model and request.api_key == "test-key"
    if provider == "anthropic":
        assert request.path == "/v1/messages"
        # The system prompt is marked for the prompt cache: the stable prefix of repeated calls.
        assert body["system"] == [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
        assert body["max_tokens"] == 50
        assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}]
        assert "tools" not in body and "temperature" not in body and "top_p" not in body
    else:
        assert request.path == "/v1/chat/completions"
        assert body["max_tokens"] == 50
        assert body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ]
        assert "response_format" not in body and not {"temperature", "top_p", "seed"} & set(body)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_generation_settings_go_on_the_wire_where_the_provider_takes_them(provider):
    settings = GenerationSettings(max_tokens=900, temperature=0.3, top_p=0.9, seed=7)
    async with ModelServer(["ok", "ok"]) as server:
        model = make(provider, server)
        await model.complete([Message.user("hi")], settings=settings)
        await model.complete([Message.user("hi")])
        await model.aclose()
    sent, default = (r.body for r in server.requests)
    assert (sent["max_tokens"], default["max_tokens"]) == (900, 16_384)
    assert not {"temperature", "top_p", "seed"} & set(default)
    if provider == "openai":
        assert (sent["temperature"], sent["top_p"], sent["seed"]) == (0.3, 0.9, 7)
    else:  # Anthropic's API (2026-10-21) refuses sampling settings: they are not sent.
        assert not {"temperature", "top_p", "seed"} & set(sent)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_reasoning_returned_apart_from_the_reply_is_kept(provider):
    async with ModelServer([Reply(text="Answer: 4", reasoning="2 and 2 make 4.")]) as server:
        model = make(provider, server)
        completion = await model.complete([Message.user("2+2?")])
        await model.aclose()
    assert (completion.text, completion.reasoning) == ("Answer: 4", "2 and 2 make 4.")
    assert completion.transcript == "[reasoning]\n2 and 2 make 4.\n[/reasoning]\nAnswer: 4"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_images_are_sent_in_each_providers_documented_form(provider, tmp_path):
    """An http(s) URL goes as a URL; a file and a data: URL go inline as base64 — never a data:
    URL as an Anthropic `url` source."""
    png = tiny_png((200, 30, 30))
    (tmp_path / "figure.png").write_bytes(png)
    data_url = "data:image/png;base64," + base64.b64encode(tiny_png((0, 0, 255))).decode()
    parts = [read_image(ref) for ref in ("https://example.invalid/figure.png", str(tmp_path / "figure.png"), data_url)]
    async with ModelServer(["a triangle"]) as server:
        model = make(provider, server)
        await model.complete([Message.user(*parts, "What is shown?")])
        await model.aclose()
    [request] = server.requests
    inline = [base64.b64encode(png).decode(), data_url.split(",", 1)[1]]
    if provider == "anthropic":
        assert request.messages[0]["content"] == [
            {"type": "image", "source": {"type": "url", "url": "https://example.invalid/figure.png"}},
            *({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": d}} for d in inline),
            {"type": "text", "text": "What is shown?"},
        ]
    else:
        assert request.messages[0]["content"] == [
            {"type": "image_url", "image_url": {"url": "https://example.invalid/figure.png"}},
            *({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{d}"}} for d in inline),
            {"type": "text", "text": "What is shown?"},
        ]


@pytest.mark.parametrize("name", ["openai:gpt-3.5-turbo", "local:llama3.1"])
async def test_a_text_only_model_is_refused_images_before_any_call(name, monkeypatch):
    monkeypatch.setenv("TED_TEXT_ONLY_MODELS", "local:llama3*")
    async with ModelServer(["never"]) as server:
        model = get_model(name, ModelSettings(api_key="k", base_url=server.openai_base_url))
        image = ImagePart(data=base64.b64encode(tiny_png((0, 0, 0))).decode())
        with pytest.raises(ConfigError, match=f"{name} reads text only.*TED_TEXT_ONLY_MODELS"):
            await model.complete([Message.user(image, "What is shown?")])
        assert (await model.complete([Message.user("no figure")])).text == "never"  # text still goes
        await model.aclose()
    assert len(server.requests) == 1
    with pytest.raises(ConfigError, match="reads text only"):
        await ScriptedModel(name=name).complete([Message.user(image)])


def test_an_image_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one of `url` or `data`"):
        ImagePart()
    with pytest.raises(ValueError, match="exactly one"):
        ImagePart(url="https://example.invalid/a.png", data="aGVsbG8=")
    with pytest.raises(ValueError, match="read_image decodes data: URLs"):
        ImagePart(url="data:image/png;base64,aGVsbG8=")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_usage_comes_from_the_provider_and_truncation_is_flagged(provider):
    # The server counts 4 characters a token: 40 characters in, 20 out.
    async with ModelServer(["y" * 20, "z" * 400]) as server:
        model = make(provider, server)
        completion = await model.complete([Message.user("x" * 40)])
        cut = await model.complete([Message.user("x" * 40)], settings=GenerationSettings(max_tokens=16))
        await model.aclose()
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (10, 5)
    assert (cut.usage.output_tokens, cut.truncated, cut.text) == (16, True, "z" * 64)


# -- the SDKs' retries and timeouts -----------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_sdk_retries_429_and_5xx_then_succeeds(provider):
    overloaded = 529 if provider == "anthropic" else 503
    script = [Reply.error(429), Reply.error(500), Reply.error(overloaded), "finally"]
    async with ModelServer(script) as server:
        model = make(provider, server, max_retries=3)
        started = time.monotonic()
        completion = await model.complete([Message.user("hi")])
        await model.aclose()
    assert completion.text == "finally"
    assert [r.status for r in server.requests] == [429, 500, overloaded, 200]
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1", "2", "3"]
    assert time.monotonic() - started < 3  # the retry-after header keeps the SDK's backoff short


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rate_limit_after_retries_says_what_to_change(provider):
    async with ModelServer([Reply.error(429)] * 3) as server:
        model = make(provider, server, max_retries=2)
        with pytest.raises(ModelError, match=r"rate limited \(HTTP 429\) after 2 retries") as caught:
            await model.complete([Message.user("hi")])
        await model.aclose()
    assert "max_concurrency" in str(caught.value) and len(server.requests) == 3
    assert caught.value.__cause__ is not None  # raised `from` the SDK's error


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_hang_times_out_with_a_message_naming_the_setting(provider):
    async with ModelServer([Reply.hang(30)]) as server:
        model = make(provider, server, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(ModelError, match=r"within the timeout of 0\.3 s") as caught:
            await model.complete([Message.user("hi")])
        elapsed = time.monotonic() - started
        await model.aclose()
    assert "Raise the `timeout` model setting" in str(caught.value)
    assert elapsed < 3 and len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_refused_key_names_the_key_variable(provider):
    async with ModelServer(["never"], api_key="the-right-key") as server:
        model = get_model(
            f"{provider}:some-model",
            ModelSettings(api_key="a-wrong-key", base_url=make(provider, server).base_url, max_retries=3),
        )
        with pytest.raises(ModelRefused, match=KEY_ENV[provider]) as caught:
            await model.complete([Message.user("hi")])
        await model.aclose()
    assert "HTTP 401" in str(caught.value)
    assert len(server.requests) == 1  # a 401 is not retried


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("status", "refused"), [(400, True), (404, True), (422, True), (429, False), (503, False)])
async def test_only_errors_no_retry_can_fix_are_refusals(provider, status, refused):
    async with ModelServer([Reply.error(status)]) as server:
        model = make(provider, server)
        with pytest.raises(ModelError) as caught:
            await model.complete([Message.user("hi")])
        await model.aclose()
    assert isinstance(caught.value, ModelRefused) is refused


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_unreachable_server_names_the_base_url(provider):
    base_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    model_type = AnthropicModel if provider == "anthropic" else OpenAIModel
    model = model_type("m", ModelSettings(api_key="k", base_url=base_url, max_retries=0, timeout=5))
    with pytest.raises(ModelError, match="cannot connect to " + base_url):
        await model.complete([Message.user("hi")])


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_body_that_is_not_json_is_a_model_error(provider):
    async with ModelServer([Reply.broken_json()]) as server:
        model = make(provider, server)
        with pytest.raises(ModelError, match="not valid JSON"):
            await model.complete([Message.user("hi")])
        await model.aclose()


async def test_a_mistake_in_the_script_is_reported_and_not_retried():
    def broken(request):
        raise KeyError("no such prompt")

    async with ModelServer(broken) as server, ModelServer(["only one"]) as short:
        for srv, expected in ((server, "script function raised KeyError"), (short, "script exhausted")):
            model = make("openai", srv, max_retries=3)
            if srv is short:
                await model.complete([Message.user("first")])
            with pytest.raises(ModelError, match=expected):
                await model.complete([Message.user("hi")])
            await model.aclose()
    assert (len(server.requests), len(short.requests)) == (1, 2)  # x-should-retry: false stops the SDK


# -- structured replies ---------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_structured_reply_uses_the_provider_mechanism(provider):
    async with ModelServer(['{"answer": 4, "reason": "2+2"}']) as server:
        model = make(provider, server)
        reply, completions = await structured(model, [Message.user("2+2?")], Answer)
        await model.aclose()
    assert reply == Answer(answer=4, reason="2+2") and len(completions) == 1
    body = server.requests[0].body
    if provider == "anthropic":
        [tool] = body["tools"]
        assert tool["input_schema"] == anthropic.transform_schema(strict_schema(Answer))
        assert (tool["name"], tool["strict"]) == ("Answer", True)
        assert body["tool_choice"] == {"type": "tool", "name": "Answer"}
    else:
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "Answer", "schema": strict_schema(Answer), "strict": True},
        }


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_strict_schemas_can_be_turned_off_for_a_server_that_refuses_them(provider):
    async with ModelServer(['{"answer": 4, "reason": "2+2"}']) as server:
        model = make(provider, server, strict_schemas=False)
        await structured(model, [Message.user("2+2?")], Answer)
        await model.aclose()
    body = server.requests[0].body
    if provider == "anthropic":
        assert "strict" not in body["tools"][0]
    else:
        assert body["response_format"]["json_schema"]["strict"] is False


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_structured_repairs_once_then_succeeds(provider):
    async with ModelServer(["Sure! The answer is four.", '{"answer": 4, "reason": "sum"}']) as server:
        model = make(provider, server)
        reply, completions = await structured(model, [Message.user("2+2?")], Answer)
        await model.aclose()
    assert reply.answer == 4 and len(completions) == 2 and len(server.requests) == 2
    repair = server.requests[1].messages
    assert len(repair) == 3 and repair[1]["role"] == "assistant"
    assert "Sure! The answer is four." in str(repair[1]["content"])
    assert "not JSON" in str(repair[2]["content"])


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_structured_gives_up_after_exactly_one_repair(provider):
    async with ModelServer(["no json here", '{"answer": "four"}', "unused"]) as server:
        model = make(provider, server)
        with pytest.raises(InvalidReply, match="even after one repair attempt") as caught:
            await structured(model, [Message.user("2+2?")], Answer)
        await model.aclose()
    assert len(server.requests) == 2
    assert "answer" in str(caught.value) and "reason" in str(caught.value)  # the failing fields are named


@pytest.mark.parametrize("mode", ["json_object", "prompt"])
async def test_openai_compatible_fallback_modes_put_the_schema_in_the_system_prompt(mode):
    async with ModelServer(['```json\n{"answer": 1, "reason": "r"}\n```']) as server:
        model = make("openai", server, structured_output=mode)
        reply, _ = await structured(model, [Message.user("q")], Answer, system="You solve sums.")
        await model.aclose()
    assert reply.answer == 1
    body = server.requests[0].body
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][0]["content"].startswith("You solve sums.") and '"reason"' in body["messages"][0]["content"]
    assert body.get("response_format") == ({"type": "json_object"} if mode == "json_object" else None)


async def test_anthropic_prompt_mode_sends_no_tools():
    async with ModelServer(['{"answer": 1, "reason": "r"}']) as server:
        model = make("anthropic", server, structured_output="prompt")
        reply, _ = await structured(model, [Message.user("q")], Answer)
        await model.aclose()
    assert reply.answer == 1 and "tools" not in server.requests[0].body
    assert "JSON schema" in server.requests[0].body["system"][0]["text"]


def test_a_structured_mode_the_provider_lacks_is_a_config_error():
    with pytest.raises(ConfigError, match="tool, prompt"):
        AnthropicModel("m", ModelSettings(api_key="k", structured_output="json_schema"))
    with pytest.raises(ConfigError, match="json_schema, json_object, prompt"):
        OpenAIModel("m", ModelSettings(api_key="k", structured_output="tool"))


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [2, 8])
async def test_the_semaphore_bounds_calls_in_flight(limit):
    async with ModelServer(lambda request: "ok", latency=0.2) as server:
        model = make("openai", server, max_concurrency=limit)
        replies = await asyncio.gather(*(model.complete([Message.user(str(i))]) for i in range(6)))
        await model.aclose()
    assert [r.text for r in replies] == ["ok"] * 6
    assert server.max_in_flight == min(limit, 6)


def test_a_model_works_across_event_loops():
    # Cached models outlive event loops (tests, repeated anyio.run): clients are per loop.
    async def call_and_close(model):
        try:
            return await model.complete([Message.user("hi")])
        finally:
            await model.aclose()

    with ModelServer(lambda request: "ok") as server:
        model = make("anthropic", server)
        for _ in range(2):
            assert asyncio.run(call_and_close(model)).text == "ok"
    assert len(server.requests) == 2


# -- registry -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_model_cache()
    yield
    clear_model_cache()


@pytest.mark.parametrize(
    "name, variable",
    [
        ("anthropic:claude-x", "ANTHROPIC_API_KEY"),
        ("openai:gpt-x", "OPENAI_API_KEY"),
        ("openrouter:qwen/qwen3-vl-8b", "OPENROUTER_API_KEY"),
    ],
)
def test_a_missing_key_names_the_variable_to_set(monkeypatch, name, variable):
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match=f"set the {variable} environment variable"):
        get_model(name)


async def test_an_explicit_key_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    async with ModelServer(["a", "b"]) as server:
        explicit = get_model("openai:m", ModelSettings(api_key="explicit", base_url=server.openai_base_url))
        from_env = get_model("openai:m", ModelSettings(base_url=server.openai_base_url))
        for model in (explicit, from_env):
            await model.complete([Message.user("hi")])
            await model.aclose()
    assert [r.api_key for r in server.requests] == ["explicit", "from-env"]


def test_the_environment_supplies_base_urls(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    assert get_model("openai:gpt-x").base_url == "http://127.0.0.1:9/v1"
    assert get_model("anthropic:claude-x").base_url == "https://api.anthropic.com"
    openrouter = get_model("openrouter:meta-llama/llama-3:free")
    assert (openrouter.base_url, openrouter.model) == (OPENROUTER_BASE_URL, "meta-llama/llama-3:free")
    assert get_model("openai:gpt-x", ModelSettings(base_url="http://127.0.0.1:7/v1")).base_url.endswith(":7/v1")


def test_openai_compatible_needs_a_base_url_but_no_key(monkeypatch):
    monkeypatch.delenv("TED_OPENAI_COMPATIBLE_BASE_URL", raising=False)
    monkeypatch.delenv("TED_OPENAI_COMPATIBLE_API_KEY", raising=False)
    for name in ("openai-compatible:qwen3", "local:qwen3:8b"):
        with pytest.raises(ConfigError, match="set the TED_OPENAI_COMPATIBLE_BASE_URL environment variable"):
            get_model(name)
    monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", "http://127.0.0.1:11434/v1")
    model = get_model("local:qwen3:8b")
    assert isinstance(model, OpenAIModel)
    assert (model.name, model.model, model.base_url) == ("local:qwen3:8b", "qwen3:8b", "http://127.0.0.1:11434/v1")
    assert model.max_tokens_param == "max_tokens"


@pytest.mark.parametrize("name", ["gpt-4.1", "foo:bar", "openai:", ":gpt", "Anthropic:claude"])
def test_a_malformed_name_lists_the_valid_providers(name):
    with pytest.raises(ConfigError, match="anthropic, openai, openrouter, openai-compatible, scripted, local"):
        get_model(name)


def test_models_are_cached_per_name_and_settings(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "one")
    first = get_model("openai:gpt-x")
    assert get_model("openai:gpt-x") is first  # so its semaphore is shared
    assert get_model("openai:gpt-x", ModelSettings(max_concurrency=2)) is not first
    monkeypatch.setenv("OPENAI_API_KEY", "two")
    assert get_model("openai:gpt-x") is not first  # a new key is a new client
    assert first.max_tokens_param == "max_completion_tokens"
    assert isinstance(get_model("scripted:anything"), ScriptedModel)
    assert get_model("scripted:anything") is not get_model("scripted:anything")


def test_the_environment_tunes_retries_timeout_and_concurrency(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("TED_MODEL_MAX_CONCURRENCY", "40")
    monkeypatch.setenv("TED_MODEL_TIMEOUT", "12.5")
    monkeypatch.setenv("TED_MODEL_MAX_RETRIES", "0")
    settings = get_model("openai:gpt-x").settings
    assert (settings.max_concurrency, settings.timeout, settings.max_retries) == (40, 12.5, 0)
    # Settings passed in code are taken as they are.
    assert get_model("openai:gpt-x", ModelSettings()).settings.max_concurrency == 8

    monkeypatch.setenv("TED_MODEL_MAX_CONCURRENCY", "none")
    with pytest.raises(ConfigError, match="TED_MODEL_MAX_CONCURRENCY='none'"):
        get_model("openai:gpt-x")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_model_used_on_a_second_loop_leaves_nothing_for_that_loop_to_fail_on(provider):
    """A cached model used from one event loop, then another (a `ted` command or a server run
    twice in one process): the first loop's client, collected during the second, must not try to
    close its connections there ("Event loop is closed", reported as the second loop's error)."""
    import asyncio
    import gc

    errors: list[dict] = []

    async def ask(model, close: bool) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        await model.complete([Message.user("Capital of France?")], settings=GenerationSettings(max_tokens=20))
        gc.collect()  # the first loop's client, if the model let go of it
        await asyncio.sleep(0.05)  # what its finaliser scheduled runs now
        if close:
            await model.aclose()

    with ModelServer(["Paris."] * 4) as server:
        model = make(provider, server)
        asyncio.run(ask(model, close=False))  # left open: the loop ends with the connection
        asyncio.run(ask(model, close=True))
        # A model dropped with its loop's connection open (a test, a command that did not close
        # it) and collected while another loop runs.
        dropped = make(provider, server)
        asyncio.run(ask(dropped, close=False))
        del dropped
        asyncio.run(ask(model, close=True))
    assert errors == []
