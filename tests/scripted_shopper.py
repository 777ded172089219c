"""A scripted chat model for the demo's tests: it acts from the conversation, so every run is the same.

Search the request's words, add the first hit to the cart when the request mentions a cart,
recommend the first two hits, terminate. A request containing "fail" gets a backend error, as a
real backend reports one (`ChatResult.error`). Every prompt and sampling setting is recorded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

from agents.llm import ChatResult


def tool_call(name: str, **params: Any) -> str:
    return f"<think>I will call {name}.</think><tool_call>[{json.dumps({'name': name, 'parameters': params})}]" \
           "</tool_call>"


class ScriptedShopper:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.prompts: list[list[dict[str, Any]]] = []
        self.samplings: list[Any] = []
        self.lock = threading.Lock()

    def chat(self, messages, tools=None, sampling=None) -> ChatResult:
        with self.lock:
            self.prompts.append(messages)
            self.samplings.append(sampling)
        if self.delay_s:
            time.sleep(self.delay_s)
        request_at = max(i for i, m in enumerate(messages) if m["role"] == "user"
                         and not m["content"].startswith(("Error:", "You have", "Product ids")))
        request = messages[request_at]["content"]
        if "fail" in request.lower():
            return ChatResult(text="", error="scripted backend is down")
        done = [m for m in messages[request_at:] if m["role"] == "tool"]
        names = [m.get("name") for m in done]
        hits = []
        for m in done:
            if m.get("name") == "find_product":  # the prompt may shorten it: read the ids, not the JSON
                hits = re.findall(r'"product_id":"([^"]+)"', m["content"])
        if "find_product" not in names:
            words = re.sub(r"[^a-z0-9 ]", " ", request.lower()).split()
            query = " ".join(w for w in words if w not in {"add", "to", "my", "cart", "a", "the", "please"})
            return ChatResult(text=tool_call("find_product", q=query), finish_reason="stop")
        if "cart" in request.lower() and "add_to_cart" not in names and hits:
            return ChatResult(text=tool_call("add_to_cart", product_id=hits[0]), finish_reason="stop")
        if "recommend_product" not in names and hits:
            return ChatResult(text=tool_call("recommend_product", product_ids=",".join(hits[:2])),
                              finish_reason="stop")
        return ChatResult(text=tool_call("terminate", status="success"), finish_reason="stop")

    def close(self) -> None:
        pass
