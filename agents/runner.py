"""The benchmark runner: episodes in parallel, resumable, scored, summarised per intent."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agents.base import Agent, trajectory_messages
from sandbox import ShoppingEnv, ShoppingWorld, Task, Toolkit, pass_hat_k
from sandbox.environment import DEFAULT_MAX_STEPS
from sandbox.rewrite_stage import QueryRewriter
from sandbox.scorer import TitleSimilarity, default_title_similarity
from shoplab_core.errors import UserError

INTENT_ORDER = ("product", "shop", "voucher", "web")


@dataclass
class RunConfig:
    agent: str
    trials: int = 1
    parallel: int = 1
    max_steps: int = DEFAULT_MAX_STEPS
    llm: dict[str, Any] | None = None  # the LLMConfig of LLM agents, recorded with the run
    rewriter: str | None = None  # what the search's rewrite stage used, recorded with the run
    # How ShoppingBench's tools behave (sandbox.ShoppingEnv): `shoppingbench` answers as upstream does,
    # so scores mean what they mean there; `shoplab` is the validating, explaining profile.
    profile: str = "shoppingbench"
    # find_product's retrieval under the shoplab profile (sandbox.ShoppingWorld.search_mode), recorded with the run
    search_mode: str = "bm25"


ROW_KEYS = ("task_id", "trial", "intent", "success")


def _read_done(results_path: Path) -> list[dict[str, Any]]:
    """Completed episodes; a line cut short by a kill is dropped, a complete last line missing its
    newline gets one, and a repeated (task, trial) keeps its first row: the file is rewritten so
    that appending goes on cleanly. Complete lines that are not rows of this runner are moved to
    `results.rejected.jsonl`, never silently deleted."""
    if not results_path.exists():
        return []
    rows: list[dict[str, Any]] = []
    text = results_path.read_text(encoding="utf-8")
    # Split on "\n" only: JSON strings may hold U+2028, which splitlines() would cut.
    lines = [line for line in text.split("\n") if line.strip()]
    clean = not text or text.endswith("\n")  # else the next row would be glued onto the last one
    seen: set[tuple[str, int]] = set()
    rejected: list[str] = []
    for idx, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            clean = False
            if idx < len(lines) - 1 or text.endswith("\n"):  # a complete line that is not JSON: keep it aside
                rejected.append(line)
            continue
        if not isinstance(row, dict) or not all(k in row for k in ROW_KEYS):
            clean = False  # not a row this runner wrote (a hand edit): kept aside, the episode runs again
            rejected.append(line)
            continue
        key = (row.get("task_id"), row.get("trial"))
        if key in seen:  # written twice (an older run without the folder lock): count it once
            clean = False
            continue
        seen.add(key)
        rows.append(row)
    if rejected:
        with results_path.with_suffix(".rejected.jsonl").open("a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in rejected))
    if not clean:
        tmp = results_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, results_path)
    return rows


def task_set_digest(rows: Sequence[dict[str, Any]]) -> str:
    """A short fingerprint of the tasks a run covered: two runs compare directly only when theirs match."""
    ids = sorted({str(r["task_id"]) for r in rows})
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]


def summarize(rows: Sequence[dict[str, Any]], trials: int | None = None) -> dict[str, Any]:
    by_intent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_intent[r["intent"]].append(r)

    def block(items: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(items)
        if n == 0:
            return {"n": 0, "asr": 0.0, "constraint_score": 0.0}
        per_task: dict[str, list[bool]] = defaultdict(list)
        for r in items:
            per_task[r["task_id"]].append(bool(r["success"]))
        k_max = trials or max(len(v) for v in per_task.values())
        out = {
            "n": n,
            "tasks": len(per_task),
            "asr": round(sum(r["success"] for r in items) / n, 4),
            "constraint_score": round(sum(r["constraint_score"] for r in items) / n, 4),
            "gt_rate": round(sum(r.get("gt", 0.0) >= 1.0 for r in items) / n, 4),
            "mean_steps": round(sum(r["steps"] for r in items) / n, 2),
            "mean_seconds": round(sum(r["seconds"] for r in items) / n, 3),
        }
        llm_rows = [r["info"] for r in items if isinstance(r.get("info"), dict) and "llm_turns" in r["info"]]
        if llm_rows:
            m = len(llm_rows)
            out.update({
                "mean_llm_turns": round(sum(i["llm_turns"] for i in llm_rows) / m, 2),
                "mean_prompt_tokens": round(sum(i["prompt_tokens"] for i in llm_rows) / m, 1),
                "mean_completion_tokens": round(sum(i["completion_tokens"] for i in llm_rows) / m, 1),
                "cached_prompt_share": round(sum(i.get("cached_prompt_tokens", 0) for i in llm_rows)
                                             / max(1, sum(i["prompt_tokens"] for i in llm_rows)), 4),
                "format_error_rate": round(sum(i.get("format_errors", 0) for i in llm_rows)
                                           / max(1, sum(i["llm_turns"] for i in llm_rows)), 4),
                "fallback_rate": round(sum(i.get("final_recommendation") == "fallback" for i in llm_rows) / m, 4),
                # Success the model earned itself, without the top-search-hit fallback.
                "asr_model_only": round(sum(bool(r["success"]) and r["info"].get("final_recommendation") != "fallback"
                                            for r in items if "llm_turns" in (r.get("info") or {})) / m, 4),
            })
        for k in range(1, k_max + 1):
            out[f"pass^{k}"] = round(pass_hat_k(per_task, k), 4)
        return out

    summary = {"overall": block(list(rows))}
    for intent in sorted(by_intent, key=lambda i: INTENT_ORDER.index(i) if i in INTENT_ORDER else 99):
        summary[intent] = block(by_intent[intent])
    return summary


def run_episode(world: ShoppingWorld, task: Task, agent: Agent, trial: int, max_steps: int,
                similarity: TitleSimilarity, query_rewriter: QueryRewriter | None = None,
                toolkits: Sequence[Toolkit] = (), profile: str = "shoppingbench") -> dict[str, Any]:
    env = ShoppingEnv(world, task, max_steps=max_steps, query_rewriter=query_rewriter, toolkits=toolkits,
                      profile=profile)
    env.reset()
    started = time.perf_counter()
    error = None
    info: dict[str, Any] | None = None
    try:
        info = agent.run_episode(env)
    except Exception as exc:  # one broken episode must not stop a benchmark
        error = f"{type(exc).__name__}: {exc}"[:500]
    seconds = time.perf_counter() - started
    score = env.score(similarity)
    info = info or {}
    # LLM agents record what the model actually saw and wrote; scripted ones get it rebuilt from the env.
    trajectory = info.pop("messages", None) or trajectory_messages(env)
    return {
        "task_id": task.task_id, "intent": task.intent.value, "trial": trial, "agent": agent.name,
        "success": bool(score.success), "constraint_score": round(score.constraint_score, 4), "gt": score.gt,
        "fields": score.fields, "shop_ok": score.shop_ok, "budget_ok": score.budget_ok,
        "knowledge_ok": score.knowledge_ok, "recommended": score.recommended, "per_product": score.per_product,
        "steps": env.state.steps, "seconds": round(seconds, 3),
        "tool_errors": sum(not s.ok for s in env.state.history), "error": error, "info": info,
        "trajectory": trajectory,
        "tool_latency_ms": [round(s.latency_ms, 3) for s in env.state.history],
    }


def run_benchmark(world: ShoppingWorld, tasks: Sequence[Task], agent_factory: Callable[[], Agent], out_dir: str | Path,
                  config: RunConfig, similarity: TitleSimilarity | None = None, progress: bool = True,
                  query_rewriter: QueryRewriter | None = None, toolkits: Sequence[Toolkit] = ()) -> dict[str, Any]:
    """Run (or resume) every task x trial; `query_rewriter` turns on the search's rewrite stage, and
    `toolkits` (plug-ins built once, e.g. by `sandbox.load_toolkits`) join every episode's tools."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _run_folder_lock(out):
        return _run_benchmark(world, tasks, agent_factory, out, config, similarity, progress, query_rewriter,
                              toolkits)


class RunFolderBusy(UserError, RuntimeError):
    """Another `bench run` is writing to the same run folder."""


@contextmanager
def _run_folder_lock(out: Path) -> Iterator[None]:
    """One writer per run folder: two runs appending to one results.jsonl would record tasks twice."""
    import fcntl

    with (out / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RunFolderBusy(f"another bench run is writing to {out}; wait for it or use another --out") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_benchmark(world: ShoppingWorld, tasks: Sequence[Task], agent_factory: Callable[[], Agent], out: Path,
                   config: RunConfig, similarity: TitleSimilarity | None, progress: bool,
                   query_rewriter: QueryRewriter | None, toolkits: Sequence[Toolkit]) -> dict[str, Any]:
    results_path = out / "results.jsonl"
    config_path = out / "config.json"
    previous: dict[str, Any] = {}
    if config_path.exists():
        try:  # written atomically now; a file cut by a kill in an older version is just rewritten
            previous = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = {}
        if not isinstance(previous, dict):
            previous = {}
    if previous:
        if previous.get("agent") != config.agent:
            raise ValueError(f"{out} holds a run of agent {previous.get('agent')!r}; use another --out")
        if previous.get("profile", "shoplab") != config.profile:  # runs before profiles were shoplab's
            raise ValueError(f"{out} holds a run under the {previous.get('profile', 'shoplab')!r} profile; "
                             "use another --out")
    tmp_config = config_path.with_suffix(".json.tmp")
    tmp_config.write_text(json.dumps({**config.__dict__, "data_dir": str(world.data_dir),
                                      "n_tasks": len(tasks)}, indent=2))
    os.replace(tmp_config, config_path)
    done_rows = _read_done(results_path)
    done = {(r["task_id"], r["trial"]) for r in done_rows}
    todo = [(t, k) for k in range(config.trials) for t in tasks if (t.task_id, k) not in done]
    similarity = similarity or default_title_similarity()
    started = time.perf_counter()
    rows = list(done_rows)
    n_success = sum(bool(r["success"]) for r in rows)
    lock = threading.Lock()
    local = threading.local()

    def agent_for_thread() -> Agent:
        if not hasattr(local, "agent"):
            local.agent = agent_factory()
        return local.agent

    def work(task: Task, trial: int) -> dict[str, Any]:
        return run_episode(world, task, agent_for_thread(), trial, config.max_steps, similarity, query_rewriter,
                           toolkits, config.profile)

    with results_path.open("a", encoding="utf-8") as fh, tqdm(
            total=len(todo), desc=f"{config.agent}", unit="ep", disable=not progress, mininterval=1.0) as bar:
        def record(row: dict[str, Any]) -> None:
            nonlocal n_success
            with lock:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                rows.append(row)
                n_success += bool(row["success"])
                bar.set_postfix(asr=f"{n_success / len(rows):.3f}", refresh=False)
                bar.update(1)

        if config.parallel <= 1:
            for task, trial in todo:
                record(work(task, trial))
        else:
            with ThreadPoolExecutor(max_workers=config.parallel) as pool:
                futures = [pool.submit(work, t, k) for t, k in todo]
                for f in as_completed(futures):
                    record(f.result())

    wall = time.perf_counter() - started
    summary = summarize(rows, config.trials)
    # Throughput of this invocation only: resumed episodes took their time in an earlier one.
    summary["overall"]["episodes_per_hour"] = round(len(todo) / wall * 3600, 1) if todo and wall > 0 else None
    summary["run"] = {"agent": config.agent, "trials": config.trials, "episodes": len(rows),
                      "tasks": len({r["task_id"] for r in rows}), "task_set": task_set_digest(rows),
                      "data_dir": str(world.data_dir), "backend": world.manifest.get("backend"),
                      "n_products": world.manifest.get("n_products"), "parallel": config.parallel,
                      "wall_seconds": round(wall, 2), "new_episodes": len(todo), "llm": config.llm,
                      "rewriter": config.rewriter, "profile": config.profile, "search_mode": config.search_mode}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
