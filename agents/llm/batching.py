"""Gather chat requests from parallel episodes into batches for a local engine.

Each episode runs in its own thread and calls `chat()` as if it owned the model. A single
dispatcher thread takes whatever requests are waiting (up to `max_batch_size`, after a short
gathering window) and runs them as one batch: the engine stays busy with full batches while
every episode keeps its simple, sequential code.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from agents.llm.base import ChatLLM, ChatResult, Message, SamplingConfig


@dataclass
class _Request:
    messages: list[Message]
    tools: list[dict[str, Any]] | None
    sampling: SamplingConfig
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    busy_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class BatchingChat:
    """A thread-safe front for a `ChatLLM`: `chat()` from many threads, batched generation behind."""

    def __init__(self, llm: ChatLLM, max_batch_size: int | None = None, gather_ms: float = 30.0):
        self.llm = llm
        self.name = llm.name
        self.config = llm.config
        self.max_batch_size = max_batch_size or llm.config.max_batch_size
        self.gather_s = gather_ms / 1000.0
        self.stats = BatchStats()
        self._queue: list[_Request] = []
        self._cv = threading.Condition()
        self._closed = False
        self._worker: threading.Thread | None = None
        self._expected = 0  # how many callers may be waiting at once: no point waiting for more

    def expect_clients(self, n: int) -> None:
        with self._cv:
            self._expected = max(0, n)

    def chat(self, messages: list[Message], tools: list[dict[str, Any]] | None = None,
             sampling: SamplingConfig | None = None) -> ChatResult:
        if self.llm.thread_safe:
            return self.llm.chat_batch([messages], tools, sampling or self.config.sampling)[0]
        request = _Request(messages, tools, sampling or self.config.sampling)
        with self._cv:
            if self._closed:
                raise RuntimeError("the LLM has been closed")
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name="llm-batcher", daemon=True)
                self._worker.start()
            self._queue.append(request)
            self._cv.notify_all()
        return request.future.result()

    def _take_batch(self) -> list[_Request]:
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return []
            deadline = time.monotonic() + self.gather_s
            target = min(self.max_batch_size, self._expected) if self._expected else self.max_batch_size
            while len(self._queue) < target and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            # One batch shares tools and sampling; others wait for the next round.
            head = self._queue[0]
            batch = [r for r in self._queue if r.tools == head.tools and r.sampling == head.sampling]
            batch = batch[: self.max_batch_size]
            for r in batch:
                self._queue.remove(r)
            return batch

    def _serve(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            started = time.perf_counter()
            try:
                results = self.llm.chat_batch([r.messages for r in batch], batch[0].tools, batch[0].sampling)
                for r, res in zip(batch, results, strict=True):
                    r.future.set_result(res)
            except BaseException as exc:  # hand the failure to every waiting episode, keep serving
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.busy_s += time.perf_counter() - started

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self.llm.close()
