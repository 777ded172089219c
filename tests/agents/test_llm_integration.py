"""Real episodes with the real SmolLM2-135M-Instruct on the transformers and vLLM backends.

The model is weak (it rarely solves a task); these tests check that each backend drives the
agent for real: prompts rendered by the model's chat template, tokens generated and counted,
tool calls parsed or turned into error observations, the episode scored and recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.llm import LLMConfig, SamplingConfig, make_llm
from agents.llm.models import default_model_dir, prepare_default_model
from agents.react import ReactAgent, ReactConfig
from agents.runner import RunConfig, run_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return prepare_default_model()


@pytest.fixture(scope="module")
def lora_adapter(model_dir, tmp_path_factory) -> Path:
    """A freshly initialised PEFT LoRA adapter (B = 0, so it must not change the model's output)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("lora")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])).save_pretrained(out)
    return out


def test_default_model_is_a_plain_hf_folder(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (model_dir / "model.safetensors").stat().st_size > 400e6
    assert model_dir == default_model_dir()


def test_transformers_batching_and_kv_reuse_do_not_change_outputs(model_dir):
    """Left padding and reusing stored keys/values (system prompt, earlier turns) must not change outputs."""
    llm = make_llm(LLMConfig(backend="transformers", sampling=SamplingConfig(max_new_tokens=12)))
    backend, sampling = llm.llm, llm.config.sampling
    system = {"role": "system", "content": "You are a helpful shopping assistant. Answer briefly. " * 6}
    short = [system, {"role": "user", "content": "Name a fruit."}]
    long = [system, {"role": "user", "content": "Which shoes are good for running on trails in the rain?"}]
    first = backend.chat_batch([short, long], None, sampling)
    # The shared system prompt was read once for both rows.
    assert backend.prefix_hits == 1 and first[0].cached_prompt_tokens == first[1].cached_prompt_tokens > 50
    # Each row's prompt + answer is stored; the system-prompt entry they both extend is dropped.
    assert len(backend.kv_store) == 2
    alone = backend.chat_batch([short], None, sampling)[0]
    assert alone.cached_prompt_tokens == alone.prompt_tokens - 1
    second_turn = short + [{"role": "assistant", "content": first[0].text},
                           {"role": "user", "content": "And a vegetable?"}]
    again = backend.chat_batch([second_turn, long], None, sampling)
    assert again[0].cached_prompt_tokens > first[0].prompt_tokens  # the earlier answer was not re-read
    backend.prefix_cache_enabled = False
    plain = backend.chat_batch([short, long], None, sampling)
    plain_again = backend.chat_batch([second_turn, long], None, sampling)
    assert [r.text for r in first] == [r.text for r in plain] and alone.text == plain[0].text
    assert [r.text for r in again] == [r.text for r in plain_again]
    assert plain[0].text.strip() and plain[1].prompt_tokens > plain[0].prompt_tokens > 50
    assert 0 < plain[0].completion_tokens <= 12 and plain[0].cached_prompt_tokens == 0
    llm.close()


def test_transformers_episodes_run_batched_and_are_recorded(world, similarity, tmp_path, lora_adapter):
    tasks = [t for t in world.tasks.values() if t.intent.value == "product"][:2]
    llm = make_llm(LLMConfig(backend="transformers", lora_path=str(lora_adapter),
                             sampling=SamplingConfig(max_new_tokens=40)))
    llm.expect_clients(2)
    summary = run_benchmark(world, tasks, lambda: ReactAgent(llm, ReactConfig(max_steps=3)), tmp_path / "run",
                            RunConfig(agent="react", parallel=2, max_steps=3), similarity=similarity,
                            progress=False)
    llm.close()
    assert summary["overall"]["n"] == 2 and summary["overall"]["mean_prompt_tokens"] > 300
    assert llm.stats.mean_batch > 1.0, "two parallel episodes should share generation batches"
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["error"] is None and row["steps"] <= 3
        assistant = [m for m in row["trajectory"] if m["role"] == "assistant"]
        assert assistant and all(m["content"] for m in assistant)
        assert row["info"]["completion_tokens"] > 0

@pytest.fixture(scope="module")
def rewriter_adapter(model_dir, tmp_path_factory) -> Path:
    """A query-rewriter adapter as `shoplab rewrite sft` trains it (LoRA on every linear layer), 2 steps."""
    from datasets import Dataset

    from rewrite import prompt_messages
    from training.stage_config import SFTStageConfig
    from training.stages import run_sft_stage

    rows = [{"prompt": prompt_messages("rewrite", query=f"hi, i need a phone cover for my mom, size {i}"),
             "completion": [{"role": "assistant", "content": f"phone case {i}"}]} for i in range(4)]
    out = run_sft_stage(str(model_dir), Dataset.from_list(rows), tmp_path_factory.mktemp("rewriter"),
                        SFTStageConfig(max_steps=2, batch_size=2), merge=False)
    return out / "adapter"


def test_vllm_backend_runs_an_episode_with_a_lora_adapter(small_sandbox, tmp_path, rewriter_adapter):
    """Through the CLI in its own process: vLLM starts a worker process and needs a __main__ guard.
    The adapter is one the rewrite pipeline trained: what it saves is what vLLM's LoRARequest serves."""
    lora_adapter = rewriter_adapter
    out = tmp_path / "vllm_run"
    cmd = [sys.executable, "-m", "shoplab_cli", "bench", "run", "--data-dir", str(small_sandbox), "--agent", "react",
           "--llm", "vllm", "--model", "smollm2-135m-instruct", "--lora", str(lora_adapter), "--intent", "product",
           "--limit", "2", "--parallel", "2", "--max-steps", "2", "--max-new-tokens", "24", "--out", str(out),
           "--profile", "shoplab"]  # shoplab's rules retry a malformed turn: the prefix cache gets a second turn
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["llm"]["backend"] == "vllm" and summary["run"]["llm"]["lora_path"] == str(lora_adapter)
    assert summary["overall"]["n"] == 2 and summary["overall"]["mean_completion_tokens"] > 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert all(r["error"] is None for r in rows)
    # The second turn of an episode re-sends the first: vLLM's prefix cache must serve it.
    cached = [t["cached_prompt_tokens"] for r in rows for t in r["info"]["turns"][1:]]
    assert cached and max(cached) > 100
