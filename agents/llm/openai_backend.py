"""Chat through any OpenAI-compatible endpoint: `vllm serve`, SGLang, or a hosted API.

A single conversation (what `BatchingChat` sends from each episode thread) goes through one shared
sync client, so its connection pool is reused across threads. A larger batch is sent concurrently
from a fresh event loop with its own async client: async clients are bound to the loop that opened
their connections, and callers may be any thread. Failures never raise: an episode gets a
`ChatResult` with `error` set and can end cleanly instead of taking the whole run down.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from agents.llm.base import ChatResult, LLMConfig, LLMError, Message, SamplingConfig
from agents.llm.rendering import text_format_messages

_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
_MAX_STOP = 4  # the OpenAI API rejects more stop strings


class OpenAIChat:
    name = "openai"
    thread_safe = True
    # How many requests of one batch are in flight at once; more would only queue in the pool.
    max_concurrency = 64

    def __init__(self, config: LLMConfig):
        base_url = config.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise LLMError("the openai backend needs an endpoint: set llm.base_url (e.g. "
                           "http://localhost:8000/v1) or the OPENAI_BASE_URL environment variable")
        self.config = config
        self.base_url = base_url
        self.usage: dict[str, int] = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                      "cached_prompt_tokens": 0, "errors": 0, "retries": 0}
        self._lock = threading.Lock()
        self._client = openai.OpenAI(
            **self._client_kwargs(),
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [self._on_request]}))

    def _client_kwargs(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "api_key": self.config.api_key(), "timeout": self.config.timeout_s,
                "max_retries": self.config.max_retries}

    def _on_request(self, request: Any) -> None:
        """The client retries internally; its retry header is the only place a retry shows."""
        if request.headers.get("x-stainless-retry-count", "0") != "0":
            with self._lock:
                self.usage["retries"] += 1

    async def _on_request_async(self, request: Any) -> None:
        self._on_request(request)

    def request_kwargs(self, messages: list[Message], tools: list[dict[str, Any]] | None,
                       sampling: SamplingConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.config.model, "temperature": sampling.temperature,
                                  "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens}
        if self.config.tool_format == "native":
            kwargs["messages"] = openai_messages(messages)
            if tools:
                kwargs["tools"] = tools
        else:
            kwargs["messages"] = text_format_messages(messages)
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop[:_MAX_STOP])
        return kwargs

    def chat_batch(self, conversations: list[list[Message]], tools: list[dict[str, Any]] | None,
                   sampling: SamplingConfig) -> list[ChatResult]:
        requests = [self.request_kwargs(m, tools, sampling) for m in conversations]
        if len(requests) == 1:
            results = [self._chat_sync(requests[0])]
        elif requests:
            results = _run_in_fresh_loop(self._chat_async_batch(requests))
        else:
            results = []
        for r in results:
            self._account(r)
        return results

    def _chat_sync(self, kwargs: dict[str, Any]) -> ChatResult:
        started = time.perf_counter()
        try:
            completion = self._client.chat.completions.create(**kwargs)
        except Exception as exc:
            return ChatResult(text="", latency_s=time.perf_counter() - started, error=self._describe(exc))
        return _to_result(completion, time.perf_counter() - started)

    async def _chat_async_batch(self, requests: list[dict[str, Any]]) -> list[ChatResult]:
        limit = asyncio.Semaphore(self.max_concurrency)
        http_client = openai.DefaultAsyncHttpxClient(event_hooks={"request": [self._on_request_async]})
        async with openai.AsyncOpenAI(**self._client_kwargs(), http_client=http_client) as client:

            async def one(kwargs: dict[str, Any]) -> ChatResult:
                async with limit:
                    started = time.perf_counter()
                    try:
                        completion = await client.chat.completions.create(**kwargs)
                    except Exception as exc:
                        return ChatResult(text="", latency_s=time.perf_counter() - started,
                                          error=self._describe(exc))
                    return _to_result(completion, time.perf_counter() - started)

            return list(await asyncio.gather(*(one(k) for k in requests)))

    def _describe(self, exc: Exception) -> str:
        n = self.config.max_retries
        gave_up = f" (gave up after {n} {'retry' if n == 1 else 'retries'})" if n else ""
        if isinstance(exc, openai.APITimeoutError):
            return f"request to {self.base_url} timed out after {self.config.timeout_s:g} s{gave_up}"
        if isinstance(exc, openai.APIConnectionError):
            cause = f": {exc.__cause__}" if exc.__cause__ else ""
            return f"cannot reach {self.base_url}{cause}{gave_up}"
        if isinstance(exc, openai.APIStatusError):
            retried = gave_up if exc.status_code in (408, 409, 429) or exc.status_code >= 500 else ""
            hint = f" (is model {self.config.model!r} served there?)" if exc.status_code == 404 else ""
            return f"HTTP {exc.status_code} from {self.base_url}: {_error_text(exc)}{hint}{retried}"
        return f"{type(exc).__name__}: {exc}"

    def _account(self, result: ChatResult) -> None:
        with self._lock:
            self.usage["requests"] += 1
            self.usage["prompt_tokens"] += result.prompt_tokens
            self.usage["completion_tokens"] += result.completion_tokens
            self.usage["cached_prompt_tokens"] += result.cached_prompt_tokens
            self.usage["errors"] += result.error is not None

    def close(self) -> None:
        self._client.close()


def openai_messages(messages: list[Message]) -> list[Message]:
    """Stored conversations may hold call arguments as dicts (from HF parsers) and private keys;
    OpenAI-compatible servers want JSON strings and reject or warn about unknown fields."""
    out: list[Message] = []
    for m in messages:
        m = {k: v for k, v in m.items() if k in _MESSAGE_KEYS}
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = dict(c.get("function", {}))
                if not isinstance(fn.get("arguments"), str):
                    fn["arguments"] = json.dumps(fn.get("arguments") or {}, ensure_ascii=False)
                calls.append({**c, "type": c.get("type", "function"), "function": fn})
            m["tool_calls"] = calls
        elif "tool_calls" in m:
            del m["tool_calls"]
        if m.get("content") is None and not m.get("tool_calls"):
            m["content"] = ""
        out.append(m)
    return out


def _to_result(completion: Any, latency_s: float) -> ChatResult:
    if not getattr(completion, "choices", None):
        return ChatResult(text="", latency_s=latency_s, error=f"the server returned no choices: {completion!r}"[:500])
    choice = completion.choices[0]
    message = choice.message
    calls = [{"id": c.id, "type": "function",
              "function": {"name": c.function.name, "arguments": c.function.arguments or "{}"}}
             for c in message.tool_calls or [] if getattr(c, "function", None) is not None]
    usage = completion.usage
    details = getattr(usage, "prompt_tokens_details", None)
    return ChatResult(text=message.content or "", tool_calls=calls or None,
                      prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                      completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                      cached_prompt_tokens=getattr(details, "cached_tokens", 0) or 0,
                      latency_s=latency_s, finish_reason=choice.finish_reason)


def _error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        text = body.get("message") or body.get("detail")
        if text:
            return str(text)
    return exc.message


def _run_in_fresh_loop(coro: Any) -> Any:
    """asyncio.run refuses to start inside a running loop (a notebook, an async UI handler)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
