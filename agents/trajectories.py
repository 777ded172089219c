"""Episodes of benchmark runs as an HF `datasets.Dataset` of chat `messages` with tool calls.

Every row keeps what SFT and analysis need: the conversation exactly as the agent saw and wrote
it, the OpenAI tool schemas it was offered, and the episode's outcome.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets


def iter_episodes(run_dirs: Sequence[str | Path], successful_only: bool = False):
    for run_dir in run_dirs:
        path = Path(run_dir) / "results.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{run_dir} has no results.jsonl")
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            row = json.loads(line)
            if successful_only and not row["success"]:
                continue
            yield row


def load_trajectories(run_dirs: Sequence[str | Path], successful_only: bool = False) -> datasets.Dataset:
    """One row per episode; `messages` loads straight into TRL's SFTTrainer (with tool calls)."""
    rows: list[dict[str, Any]] = []
    for r in iter_episodes(run_dirs, successful_only):
        messages = [_normalise(m) for m in r["trajectory"]]
        rows.append({"task_id": r["task_id"], "intent": r["intent"], "trial": r["trial"], "agent": r["agent"],
                     "success": bool(r["success"]), "constraint_score": float(r["constraint_score"]),
                     "steps": int(r["steps"]), "seconds": float(r["seconds"]),
                     "prompt_tokens": int(r.get("info", {}).get("prompt_tokens", 0)),
                     "completion_tokens": int(r.get("info", {}).get("completion_tokens", 0)),
                     "messages": messages})
    return datasets.Dataset.from_list(rows)


def _normalise(m: dict[str, Any]) -> dict[str, Any]:
    """Arrow needs one schema for every message: absent fields become None, arguments stay JSON strings."""
    calls = m.get("tool_calls") or None
    if calls:
        calls = [{"id": c.get("id", ""), "type": "function",
                  "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]
                               if isinstance(c["function"]["arguments"], str)
                               else json.dumps(c["function"]["arguments"], ensure_ascii=False)}}
                 for c in calls]
    return {"role": m["role"], "content": m.get("content") or "", "tool_calls": calls,
            "tool_call_id": m.get("tool_call_id"), "name": m.get("name")}
