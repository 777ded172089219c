"""The OpenAI-compatible backend against a real HTTP server that plays a scripted chat endpoint."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agents.llm.base import LLMConfig, LLMError, SamplingConfig
from agents.llm.openai_backend import OpenAIChat

Reply = tuple[int, dict[str, Any], float]  # status, JSON body, seconds to wait before answering


def completion(content: str | None = "", tool_calls: list[dict[str, Any]] | None = None,
               finish_reason: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "test-model",
                            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}
    if usage is not None:
        body["usage"] = usage
    return body


def echo_last_user(body: dict[str, Any], n: int) -> Reply:
    last = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    return 200, completion(f"echo: {last}"), 0.0


@dataclass
class ScriptedServer:
    port: int
    script: Callable[[dict[str, Any], int], Reply] = echo_last_user
    received: list[dict[str, Any]] = field(default_factory=list)
    max_in_flight: int = 0
    _in_flight: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _app(state: ScriptedServer) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        state.received.append(body)
        state._in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state._in_flight)
        try:
            status, payload, delay = state.script(body, len(state.received))
            if delay:
                await asyncio.sleep(delay)
        finally:
            state._in_flight -= 1
        return JSONResponse(payload, status_code=status)

    return app


@pytest.fixture(scope="module")
def _server_state():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state = ScriptedServer(port=sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(_app(state), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the scripted server did not start"
        time.sleep(0.01)
    yield state
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture
def server(_server_state: ScriptedServer) -> ScriptedServer:
    _server_state.script = echo_last_user
    _server_state.received.clear()
    _server_state.max_in_flight = 0
    return _server_state


def make_llm(base_url: str, **overrides: Any) -> OpenAIChat:
    kwargs: dict[str, Any] = {"backend": "openai", "model": "test-model", "base_url": base_url,
                              "max_retries": 0, "timeout_s": 5.0, **overrides}
    return OpenAIChat(LLMConfig(**kwargs))


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You shop."}, {"role": "user", "content": text}]


TOOLS = [{"type": "function", "function": {"name": "find_product", "description": "search the catalogue",
                                            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]


def test_text_reply_accounts_tokens_and_sends_sampling(server: ScriptedServer) -> None:
    usage = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49,
             "prompt_tokens_details": {"cached_tokens": 32}}
    server.script = lambda body, n: (200, completion("I found it.", usage=usage), 0.0)
    llm = make_llm(server.base_url)
    conversation = user("red shoes") + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "find_product", "arguments": '{"q": "x"}'}}]},
        {"role": "tool", "tool_call_id": "call_0", "name": "find_product", "content": "[]"}]
    sampling = SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=64, seed=3, stop=list("abcdef"))
    [result] = llm.chat_batch([conversation], TOOLS, sampling)
    llm.close()

    assert result.error is None
    assert result.text == "I found it." and result.tool_calls is None
    assert (result.prompt_tokens, result.completion_tokens, result.cached_prompt_tokens) == (42, 7, 32)
    assert result.finish_reason == "stop" and result.latency_s > 0
    assert llm.usage["requests"] == 1 and llm.usage["prompt_tokens"] == 42 and llm.usage["completion_tokens"] == 7
    sent = server.received[0]
    assert sent["model"] == "test-model"
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["seed"]) == (0.7, 0.9, 64, 3)
    assert sent["stop"] == ["a", "b", "c", "d"]
    assert "tools" not in sent
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert "<tool_response>" in sent["messages"][-1]["content"]


def test_native_tool_calls_round_trip(server: ScriptedServer) -> None:
    call = {"id": "call_9", "type": "function", "function": {"name": "find_product", "arguments": '{"q": "red shoes"}'}}
    server.script = lambda body, n: (200, completion(None, tool_calls=[call], finish_reason="tool_calls"), 0.0)
    llm = make_llm(server.base_url, tool_format="native")
    conversation = user("red shoes") + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "find_product", "arguments": {"q": "x"}}}]},
        {"role": "tool", "tool_call_id": "call_0", "name": "find_product", "content": "[]"}]
    [result] = llm.chat_batch([conversation], TOOLS, SamplingConfig())
    llm.close()

    assert result.error is None and result.text == "" and result.finish_reason == "tool_calls"
    assert result.tool_calls == [call]
    assert result.prompt_tokens == 0 and result.completion_tokens == 0
    sent = server.received[0]
    assert sent["tools"] == TOOLS
    assert "seed" not in sent and "stop" not in sent
    assistant, tool = sent["messages"][2], sent["messages"][3]
    assert assistant["tool_calls"][0]["function"]["arguments"] == '{"q": "x"}'
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_0" and tool["content"] == "[]"


def test_retries_server_errors_with_backoff(server: ScriptedServer) -> None:
    server.script = lambda body, n: (503, {"error": {"message": "overloaded"}}, 0.0) if n <= 2 \
        else echo_last_user(body, n)
    llm = make_llm(server.base_url, max_retries=3)
    started = time.perf_counter()
    [result] = llm.chat_batch([user("hi")], None, SamplingConfig())
    elapsed = time.perf_counter() - started
    llm.close()

    assert result.error is None and result.text == "echo: hi"
    assert len(server.received) == 3
    assert elapsed > 0.3  # two backoff sleeps of about 0.5 s and 1 s, less jitter
    assert llm.usage["retries"] == 2 and llm.usage["errors"] == 0


def test_client_errors_and_unreachable_server_become_results(server: ScriptedServer) -> None:
    server.script = lambda body, n: (400, {"error": {"message": "bad request: too long"}}, 0.0) \
        if "bad" in body["messages"][-1]["content"] else echo_last_user(body, n)
    llm = make_llm(server.base_url, max_retries=3)
    [bad] = llm.chat_batch([user("bad")], None, SamplingConfig())
    ok, bad_in_batch = llm.chat_batch([user("fine"), user("bad")], None, SamplingConfig())
    llm.close()
    assert bad.text == "" and "400" in bad.error and "too long" in bad.error
    assert ok.error is None and ok.text == "echo: fine"
    assert bad_in_batch.text == "" and "too long" in bad_in_batch.error
    assert len(server.received) == 3  # a 400 is not retried
    assert llm.usage["requests"] == 3 and llm.usage["errors"] == 2 and llm.usage["retries"] == 0

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    dead = make_llm(f"http://127.0.0.1:{dead_port}/v1")
    results = dead.chat_batch([user("hi")], None, SamplingConfig()) + \
        dead.chat_batch([user("a"), user("b")], None, SamplingConfig())
    dead.close()
    assert all(r.text == "" and "cannot reach" in r.error for r in results)
    assert dead.usage["errors"] == 3


def test_batch_is_concurrent_and_keeps_order(server: ScriptedServer) -> None:
    server.script = lambda body, n: (*echo_last_user(body, n)[:2], 0.3)
    llm = make_llm(server.base_url)
    texts = [f"query {i}" for i in range(6)]

    def run_batch() -> tuple[list[Any], float]:
        started = time.perf_counter()
        out = llm.chat_batch([user(t) for t in texts], None, SamplingConfig())
        return out, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=1) as pool:
        results, elapsed = pool.submit(run_batch).result()
    assert [r.text for r in results] == [f"echo: {t}" for t in texts]
    assert elapsed < 1.2 and server.max_in_flight > 1

    async def inside_a_running_loop() -> list[Any]:
        return llm.chat_batch([user("x"), user("y")], None, SamplingConfig())

    assert [r.text for r in asyncio.run(inside_a_running_loop())] == ["echo: x", "echo: y"]

    server.received.clear()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=6) as pool:
        singles = list(pool.map(lambda t: llm.chat_batch([user(t)], None, SamplingConfig())[0], texts))
    assert time.perf_counter() - started < 1.2
    assert [r.text for r in singles] == [f"echo: {t}" for t in texts]
    assert llm.usage["requests"] == 14 and llm.usage["errors"] == 0
    llm.close()


def test_missing_base_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMError, match="base_url"):
        OpenAIChat(LLMConfig(backend="openai", model="test-model"))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    llm = OpenAIChat(LLMConfig(backend="openai", model="test-model"))
    assert llm.base_url == "http://127.0.0.1:9/v1"
    llm.close()


def test_react_benchmark_over_an_openai_endpoint_from_the_cli(server: ScriptedServer, small_sandbox, world,
                                                                tmp_path) -> None:
    """`shoplab bench run --agent react --llm openai`: native tool calls over HTTP, episodes in parallel."""
    import json as _json

    from typer.testing import CliRunner

    from shoplab_cli import app

    tasks = [t for t in world.tasks.values() if t.intent.value == "product"][:4]
    gold = {t.query: t.reward[0].product_id for t in tasks}
    usage = {"prompt_tokens": 300, "completion_tokens": 20, "total_tokens": 320}

    def play(body: dict[str, Any], n: int) -> Reply:
        query = body["messages"][1]["content"]
        done = any(m["role"] == "tool" and m.get("name") == "recommend_product" for m in body["messages"])
        name, args = ("terminate", {"status": "success"}) if done else ("recommend_product",
                                                                       {"product_ids": gold[query]})
        call = {"id": f"c{n}", "type": "function", "function": {"name": name, "arguments": _json.dumps(args)}}
        return 200, completion(None, tool_calls=[call], finish_reason="tool_calls", usage=usage), 0.05

    server.script = play
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "bench", "run", "--data-dir", str(small_sandbox), "--agent", "react", "--llm", "openai",
        "--model", "served-model", "--base-url", server.base_url, "--tool-format", "native",
        "--intent", "product", "--limit", "4", "--parallel", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = _json.loads((out / "summary.json").read_text())
    assert summary["overall"]["asr"] == 1.0 and summary["overall"]["n"] == 4
    assert summary["overall"]["mean_prompt_tokens"] == 600 and summary["run"]["llm"]["backend"] == "openai"
    assert server.max_in_flight > 1, "episodes should reach the endpoint concurrently"
    assert all(b["model"] == "served-model" and b["tools"] for b in server.received)


def test_cli_rejects_bad_llm_settings_with_a_message(small_sandbox, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from shoplab_cli import app

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    runner = CliRunner()
    base = ["bench", "run", "--data-dir", str(small_sandbox), "--out", str(tmp_path / "r")]
    no_url = runner.invoke(app, [*base, "--agent", "react", "--llm", "openai", "--model", "m"])
    assert no_url.exit_code == 2 and "base" in no_url.output.lower()
    bogus = runner.invoke(app, [*base, "--agent", "react", "--llm", "bogus"])
    assert bogus.exit_code == 2 and "unknown LLM backend" in bogus.output
    scripted = runner.invoke(app, [*base, "--agent", "heuristic", "--llm", "vllm"])
    assert scripted.exit_code == 2 and "does not use an LLM" in scripted.output
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("llm: {backend: transformers, temprature: 0.3}\n")
    typo = runner.invoke(app, [*base, "--agent", "react", "--llm-config", str(bad_yaml)])
    assert typo.exit_code == 2 and "temprature" in typo.output
