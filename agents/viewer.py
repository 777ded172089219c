"""Read a finished run's episodes: an overview of every episode, or one episode step by step.

`shoplab bench show RUN_DIR [--task ID]` prints these with rich; the demo's "Runs" tab shows the same
renderables as HTML (`episode_html`), so a trajectory reads the same in the terminal and the browser.
Everything here reads `results.jsonl` as untrusted text: lines that do not parse are skipped and
counted, long observations are cut, and nothing in a row is interpreted as markup.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from shoplab_core.errors import UserError

MAX_RESULTS_BYTES = 1 << 30     # a results.jsonl larger than this is refused, not read into memory
MAX_OVERVIEW_ROWS = 200
OBSERVATION_CHARS = 600         # a tool result is cut here unless `full`
HIT_ROWS = 10


class RunNotFoundError(UserError, FileNotFoundError):
    """A folder with no `results.jsonl` in it."""


def read_episodes(run_dir: str | Path) -> tuple[list[dict[str, Any]], int]:
    """(episodes in file order, number of lines that were not episodes) of a run folder."""
    run_dir = Path(run_dir)
    path = run_dir / "results.jsonl" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise RunNotFoundError(f"{run_dir} has no results.jsonl: give a folder `shoplab bench run --out` wrote")
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise UserError(f"{path} is over {MAX_RESULTS_BYTES >> 20} MB; split the run")
    rows, skipped = [], 0
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if isinstance(row, dict) and "task_id" in row:
                rows.append(row)
            else:
                skipped += 1
    return rows, skipped


def select_episodes(rows: Iterable[dict[str, Any]], task: str | None = None, trial: int | None = None,
                    intent: str | None = None, failed: bool = False) -> list[dict[str, Any]]:
    """Episodes of one task (an id or a unique prefix of one), trial, intent, or only the failed ones."""
    rows = list(rows)
    if task:
        exact = [r for r in rows if str(r["task_id"]) == task]
        if not exact:
            ids = sorted({str(r["task_id"]) for r in rows if str(r["task_id"]).startswith(task)})
            if len(ids) > 1:
                raise UserError(f"task {task!r} matches {len(ids)} tasks ({', '.join(ids[:3])}, ...): give more of it")
            if not ids:
                raise UserError(f"no task {task!r} in this run: `shoplab bench show RUN_DIR` lists them")
            exact = [r for r in rows if str(r["task_id"]) == ids[0]]
        rows = exact
    if trial is not None:
        rows = [r for r in rows if r.get("trial") == trial]
    if intent:
        rows = [r for r in rows if r.get("intent") == intent]
    if failed:
        rows = [r for r in rows if not r.get("success")]
    return rows


def _mark(row: dict[str, Any]) -> Text:
    return Text("✓", style="bold green") if row.get("success") else Text("✗", style="bold red")


def _finish(row: dict[str, Any]) -> str:
    info = row.get("info") if isinstance(row.get("info"), dict) else {}
    if row.get("error"):
        return "crashed"
    parts = [str(info["finish"])] if info.get("finish") else []
    if info.get("final_recommendation") not in (None, "model"):
        parts.append(f"answer: {info['final_recommendation']}")
    return ", ".join(parts)


def overview_table(rows: Sequence[dict[str, Any]], title: str = "Episodes") -> Table:
    """One line per episode: task, intent, trial, success, constraint score, steps, seconds, answer."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, caption_justify="left")
    for name, justify in (("task", "left"), ("intent", "left"), ("trial", "right"), ("ok", "center"),
                          ("score", "right"), ("steps", "right"), ("s", "right"), ("recommended", "left"),
                          ("finish", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for row in rows[:MAX_OVERVIEW_ROWS]:
        recommended = ", ".join(str(x) for x in (row.get("recommended") or [])[:3])
        table.add_row(Text(str(row["task_id"])), Text(str(row.get("intent", ""))), str(row.get("trial", 0)),
                      _mark(row), f"{row.get('constraint_score', 0):.2f}", str(row.get("steps", "")),
                      f"{row.get('seconds', 0):.1f}", Text(recommended), Text(_finish(row)))
    if len(rows) > MAX_OVERVIEW_ROWS:
        table.caption = f"first {MAX_OVERVIEW_ROWS} of {len(rows)} episodes: narrow with --intent, --failed or --task"
    return table


def _arguments(raw: Any) -> str:
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return str(raw)[:300]
    if not isinstance(args, dict):
        return json.dumps(args, ensure_ascii=False)[:300]
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())[:300]


def _cut(text: str, limit: int | None) -> Text:
    if limit is None or len(text) <= limit:
        return Text(text)
    return Text(text[:limit]).append(f" … ({len(text) - limit:,} more characters)", style="dim")


def _hits_table(hits: list[dict[str, Any]]) -> Table:
    table = Table(box=box.MINIMAL, pad_edge=False, show_header=True, header_style="dim")
    for name in ("product_id", "title", "price", "service", "shop_id"):
        table.add_column(name, overflow="fold", max_width=60 if name == "title" else None,
                         justify="right" if name == "price" else "left")
    for hit in hits[:HIT_ROWS]:
        service = hit.get("service")
        table.add_row(Text(str(hit.get("product_id", ""))), Text(str(hit.get("title", ""))[:120]),
                      Text(str(hit.get("price", ""))),
                      Text(", ".join(map(str, service)) if isinstance(service, list) else str(service or "")),
                      Text(str(hit.get("shop_id", ""))))
    if len(hits) > HIT_ROWS:
        table.caption = f"{len(hits) - HIT_ROWS} more"
    return table


def _observation(content: str, full: bool) -> RenderableType:
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, TypeError):
        data = None
    if isinstance(data, list) and data and all(isinstance(h, dict) and "product_id" in h and "title" in h
                                                for h in data):
        return _hits_table(data)
    text = _cut(str(content), None if full else OBSERVATION_CHARS)
    if str(content).startswith(("Error", "No products")):
        text.stylize("yellow")
    return text


def _turn_note(turn: dict[str, Any]) -> str:
    note = f"{turn.get('prompt_tokens', 0):,}+{turn.get('completion_tokens', 0):,} tokens, {turn.get('latency_s', 0):.1f} s"
    return note if turn.get("format_ok", True) else note + ", no usable tool call"


def episode_view(row: dict[str, Any], full: bool = False) -> Group:
    """One episode, step by step: the request, each model turn and tool call with its result, the answer
    and how the scorer judged it. `full` shows the system prompt and whole observations."""
    info = row.get("info") if isinstance(row.get("info"), dict) else {}
    head = Text.assemble(_mark(row), " ", (str(row["task_id"]), "bold"),
                         f"  {row.get('intent', '')}  trial {row.get('trial', 0)}  agent {row.get('agent', '?')}  "
                         f"score {row.get('constraint_score', 0):.2f}  {row.get('steps', 0)} steps  "
                         f"{row.get('seconds', 0):.1f} s")
    if _finish(row):
        head.append(f"  ({_finish(row)})", style="dim")
    parts: list[RenderableType] = [head]
    if row.get("error"):
        parts.append(Text(f"crashed: {row['error']}", style="bold red"))
    turns = info.get("turns") if isinstance(info.get("turns"), list) else []
    assistant_no = 0
    for message in row.get("trajectory") or []:
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), str(message.get("content") or "")
        if role == "system":
            parts.append(Text("system prompt", style="dim").append(f" ({len(content):,} characters)" if not full
                                                                   else ""))
            if full:
                parts.append(Text(content, style="dim"))
        elif role == "user":
            parts.append(Panel(Text(content), title="request" if assistant_no == 0 else "user", title_align="left",
                               border_style="cyan", box=box.ROUNDED))
        elif role == "assistant":
            note = _turn_note(turns[assistant_no]) if assistant_no < len(turns) and \
                isinstance(turns[assistant_no], dict) else ""
            assistant_no += 1
            line = Text(f"model turn {assistant_no}" if turns else f"step {assistant_no}", style="bold magenta")
            if note:
                line.append(f"  {note}", style="dim")
            parts.append(line)
            if content.strip():
                parts.append(_cut(content.strip(), None if full else OBSERVATION_CHARS))
            for call in message.get("tool_calls") or []:
                fn = call.get("function", {}) if isinstance(call, dict) else {}
                parts.append(Text.assemble(("  → ", "bold"), (str(fn.get("name", "?")), "bold blue"),
                                           f"({_arguments(fn.get('arguments'))})"))
        elif role == "tool":
            parts.append(Panel(_observation(content, full), title=f"← {message.get('name', 'tool')}",
                               title_align="left", border_style="dim", box=box.ROUNDED))
    parts.append(_verdict(row))
    return Group(*parts)


def _verdict(row: dict[str, Any]) -> RenderableType:
    table = Table(box=box.SIMPLE, pad_edge=False, title="scored", title_justify="left")
    table.add_column("recommended")
    table.add_column("score", justify="right")
    table.add_column("unmet")
    for item in row.get("per_product") or []:
        if isinstance(item, dict):
            table.add_row(Text(str(item.get("product_id", ""))), f"{item.get('score', 0):.2f}",
                          Text(", ".join(map(str, item.get("unmet") or [])) or "-"))
    if not row.get("per_product"):
        table.add_row("nothing", "0.00", "no recommendation")
    notes = [f"{k}: {v:.2f}" for k, v in (row.get("fields") or {}).items() if isinstance(v, int | float)]
    notes += [f"{k.removesuffix('_ok')}: {'ok' if row[k] else 'failed'}" for k in ("shop_ok", "budget_ok", "knowledge_ok")
              if row.get(k) is not None]
    if notes:
        table.caption = "  ".join(notes)
    return table


def episode_html(row: dict[str, Any], width: int = 110, full: bool = False) -> str:
    """The terminal view of one episode as a self-contained HTML fragment (the demo's Runs tab)."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system="truecolor")
    console.print(episode_view(row, full=full))
    return console.export_html(inline_styles=True, code_format="<pre style=\"font-family: ui-monospace, monospace; "
                               "font-size: 13px; line-height: 1.35; white-space: pre-wrap\">{code}</pre>")
