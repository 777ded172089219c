"""The demo under concurrent users, measured in a real browser; also saves the README screenshots.

The same work twice, in one run: one user sends N messages one after another (the baseline), then N
users each send one at the same moment. With a local model, `BatchingChat` batches the users'
turns, so the concurrent run should take less wall time than the sequential one. Reported: time to
the first streamed step, time to the final message, and episodes per minute.

    python benchmarks/bench_demo.py --data-dir runs/sandbox --users 4
    python benchmarks/bench_demo.py --llm-config configs/agents/react_smollm2_distilled.yaml \
        --llm transformers --model runs/distill/sft/merged --users 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ui import DemoConfig  # noqa: E402
from ui.app import launch_demo, warm_up  # noqa: E402
from ui.browser import free_port, launch_chromium, open_page, send  # noqa: E402

# A turn is done when the last assistant message after the shopper's n-th message is not a step (steps
# are collapsible thought groups; the closing message, cards or text, is not).
_AFTER_LAST_USER = """
  const users = [...document.querySelectorAll('#chat [data-testid="user"]')];
  const lastUser = users[users.length - 1];
  const bots = lastUser ? [...document.querySelectorAll('#chat [data-testid="bot"]')].filter(
      b => lastUser.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING) : [];
"""
TURN_DONE = "n => {" + _AFTER_LAST_USER + """
  const last = bots[bots.length - 1];
  return users.length >= n && !!last && !last.querySelector('.thought-group');
}"""
# For screenshots: the whole conversation instead of the chat box's scrolled tail.
FULL_HEIGHT_CHAT = "#chat, #chat * {max-height: none !important;} #chat, #chat .bubble-wrap {height: auto !important;}"
TASK_DONE = """() => !!document.querySelector('#task-score .sl-score') || [...document.querySelectorAll(
  '#task-chat [data-testid="bot"]')].some(b => !b.querySelector('.thought-group') && b.innerText.includes('⚠️'))"""
FIRST_STEP = "n => {" + _AFTER_LAST_USER + " return users.length >= n && bots.length > 0; }"


def watch(pages: list, sent: list[int], timeout_s: float) -> list[dict[str, float]]:
    """Poll every page until its turn is done; the times are from the moment each message was sent."""
    started = time.perf_counter()
    out: list[dict[str, float]] = [{} for _ in pages]
    while time.perf_counter() - started < timeout_s:
        now = time.perf_counter() - started
        for i, page in enumerate(pages):
            if "first_step_s" not in out[i] and page.evaluate(FIRST_STEP, sent[i]):
                out[i]["first_step_s"] = now
            if "done_s" not in out[i] and page.evaluate(TURN_DONE, sent[i]):
                out[i]["done_s"] = now
                out[i].setdefault("first_step_s", now)  # a turn may finish between two polls
        if all("done_s" in r for r in out):
            print(f"  {len(out)} turn(s) done: {out}", file=sys.stderr, flush=True)
            return out
        time.sleep(0.05)
    raise TimeoutError(f"turns not done after {timeout_s:.0f} s")


def summarize(rows: list[dict[str, float]], wall_s: float) -> dict[str, float]:
    return {"episodes": len(rows), "wall_s": round(wall_s, 2),
            "episodes_per_min": round(60 * len(rows) / wall_s, 2),
            "first_step_p50_s": round(statistics.median(r["first_step_s"] for r in rows), 2),
            "done_p50_s": round(statistics.median(r["done_s"] for r in rows), 2),
            "done_max_s": round(max(r["done_s"] for r in rows), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/demo/default.yaml")
    ap.add_argument("--data-dir", default="runs/sandbox")
    ap.add_argument("--llm-config", default=None)
    ap.add_argument("--llm", default=None, help="backend override")
    ap.add_argument("--model", default=None)
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--message", default="stainless steel water bottle")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch intra-op threads (1 avoids OpenMP spin-waits when the browser shares the cores)")
    ap.add_argument("--out", default="benchmarks/results/demo_concurrency.json")
    ap.add_argument("--task-agent", default="react", choices=["react", "heuristic", "oracle"],
                    help="the agent of the benchmark-task screenshot")
    ap.add_argument("--task-index", type=int, default=0, help="which product task the screenshot runs")
    ap.add_argument("--screenshots", default="benchmarks/results", help="folder for demo_*.png ('' for none)")
    args = ap.parse_args()

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    config = DemoConfig.from_yaml(args.config)
    if args.llm_config:
        config.use_agent_config(args.llm_config)
    overrides = {k: v for k, v in {"backend": args.llm, "model": args.model}.items() if v}
    config.llm = dataclasses.replace(config.llm, **overrides)
    config.demo = dataclasses.replace(config.demo, data_dir=args.data_dir, port=free_port(),
                                      concurrency=max(args.users, 1), max_steps=args.max_steps)
    app, backend = launch_demo(config, block=False, warm=False, quiet=True)
    load_started = time.perf_counter()
    warm_up(backend).join()
    load_s = time.perf_counter() - load_started
    url = f"http://127.0.0.1:{config.demo.port}/"
    result: dict = {"bench": "demo_concurrency", "llm_backend": config.llm.backend, "model": config.llm.model,
                    "torch_threads": args.torch_threads,
                    "users": args.users, "max_steps": args.max_steps, "message": args.message,
                    "n_products": backend.world.manifest.get("n_products"), "model_load_s": round(load_s, 1)}
    shots = Path(args.screenshots) if args.screenshots else None
    try:
        with launch_chromium() as browser:
            # Unmeasured: the first turn after start-up pays one-off costs (allocator, kernels, caches).
            warm = open_page(browser, url, height=1100)
            send(warm, args.message)
            watch([warm], [1], args.timeout)
            # Baseline: the same episodes, one tab (session) after another.
            rows = []
            started = time.perf_counter()
            for _ in range(args.users):
                solo = open_page(browser, url, height=1100)
                send(solo, args.message)
                rows += watch([solo], [1], args.timeout)
            result["sequential"] = summarize(rows, time.perf_counter() - started)
            # The same episodes from `users` tabs (sessions) at once.
            pages = [open_page(browser, url, height=1100) for _ in range(args.users)]
            started = time.perf_counter()
            for page in pages:
                send(page, args.message)
            rows = watch(pages, [1] * len(pages), args.timeout)
            result["concurrent"] = summarize(rows, time.perf_counter() - started)
            result["speedup"] = round(result["sequential"]["wall_s"] / result["concurrent"]["wall_s"], 2)
            if shots:
                shots.mkdir(parents=True, exist_ok=True)
                page = pages[0]
                if page.locator("#chat .sl-card").count():
                    page.click("#cart-add")  # the picker holds the first recommended product
                    page.wait_for_selector('#cart .sl-cart[data-items="1"]', timeout=60_000)
                page.locator("#chat .thought-group .title").first.click()  # one step opened, as a user would
                page.add_style_tag(content=FULL_HEIGHT_CHAT)
                page.wait_for_timeout(800)
                page.screenshot(path=str(shots / "demo_chat.png"), full_page=True)
                task_page = open_page(browser, url, height=1100)
                task_page.get_by_role("tab", name="Benchmark task").click()
                if args.task_index:
                    task_page.locator("#task-pick input").click()
                    task_page.locator("ul[role='listbox'] li").nth(args.task_index).click()
                    task_page.wait_for_timeout(500)
                if args.task_agent != "react":
                    task_page.locator("#settings").click()
                    task_page.locator("#set-agent input").click()
                    task_page.locator("ul[role='listbox'] li", has_text=args.task_agent).click()
                task_page.click("#task-run")
                task_page.wait_for_function(TASK_DONE, timeout=args.timeout * 1000)
                task_page.add_style_tag(content=FULL_HEIGHT_CHAT.replace("#chat", "#task-chat"))
                task_page.wait_for_timeout(800)
                task_page.screenshot(path=str(shots / "demo_task.png"), full_page=True)
    finally:
        app.close()
        backend.close()
    print(json.dumps(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
