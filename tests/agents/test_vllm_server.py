"""The openai backend against a real `vllm serve` (OpenAI-compatible HTTP) on the bundled SmolLM2-135M-Instruct.

Its own file so that `make test`'s two workers (pytest-xdist, one file at a time each) start this server
while the other worker runs the in-process vLLM and transformers tests of test_llm_integration.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.llm.models import prepare_default_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return prepare_default_model()


@pytest.fixture(scope="module")
def vllm_server(model_dir, tmp_path_factory):
    """A real `vllm serve` (OpenAI-compatible HTTP) on the bundled model, for the openai backend."""
    import socket
    import time
    import urllib.request

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    log = (tmp_path_factory.mktemp("vllm") / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
         "--served-model-name", "smollm2", "--dtype", "float32", "--enforce-eager", "--max-model-len", "4096",
         "--kv-cache-memory-bytes", str(1 << 30), "--enable-prompt-tokens-details", "--host", "127.0.0.1",
         "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 400
    try:
        while True:
            assert proc.poll() is None, f"vllm serve exited; see {log.name}"
            assert time.monotonic() < deadline, f"vllm serve did not start; see {log.name}"
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_openai_backend_against_a_real_vllm_server(vllm_server, small_sandbox, tmp_path):
    out = tmp_path / "oai_run"
    cmd = [sys.executable, "-m", "shoplab_cli", "bench", "run", "--data-dir", str(small_sandbox), "--agent", "react",
           "--llm", "openai", "--model", "smollm2", "--base-url", vllm_server, "--intent", "product",
           "--limit", "2", "--parallel", "2", "--max-steps", "2", "--max-new-tokens", "24", "--out", str(out),
           "--profile", "shoplab"]  # shoplab's rules retry a malformed turn: the prefix cache gets a second turn
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["error"] is None for r in rows)
    turns = [t for r in rows for t in r["info"]["turns"]]
    assert all(t["prompt_tokens"] > 300 and 0 < t["completion_tokens"] <= 32 for t in turns)
    # Token accounting reaches through the API: later turns hit vLLM's prefix cache.
    assert max(t["cached_prompt_tokens"] for t in turns) > 100
