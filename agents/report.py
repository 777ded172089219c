"""Compare benchmark runs: a side-by-side table, an ASR-per-intent bar chart and a markdown report.

Each run folder is what `shoplab bench run` writes: `summary.json` (see `agents.runner.summarize`) next to
`results.jsonl`. Only `summary.json` is read here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from agents.runner import INTENT_ORDER, task_set_digest

OVERALL = "overall"
PNG_NAME = "asr_per_intent.png"
MD_NAME = "report.md"
MISSING = "-"


# ----------------------------------------------------------------------------------------------- loading
def _summary_path(run_dir: Path) -> Path:
    if run_dir.is_file() and run_dir.name == "summary.json":  # the file itself was given
        return run_dir
    if not run_dir.exists():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    path = run_dir / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"run folder {run_dir} has no summary.json "
                                "(is the run finished? `shoplab bench run` writes it at the end)")
    return path


def _run_names(run_dirs: Sequence[Path]) -> list[str]:
    """Folder names, made unique by prefixing parent folders only where two runs share a name."""
    parts = [Path(d).resolve().parts for d in run_dirs]
    depth = [1] * len(parts)

    def name(i: int) -> str:
        return "/".join(parts[i][-depth[i]:])

    while True:
        groups: dict[str, list[int]] = {}
        for i in range(len(parts)):
            groups.setdefault(name(i), []).append(i)
        grew = False
        for members in groups.values():
            if len(members) > 1:
                for i in members:
                    if depth[i] < len(parts[i]) - 1:  # never prefix the filesystem root
                        depth[i] += 1
                        grew = True
        if not grew:
            break
    names: list[str] = []
    for i in range(len(parts)):  # the same folder given twice: number the repeats
        base, n = name(i), 2
        candidate = base
        while candidate in names:
            candidate, n = f"{base} ({n})", n + 1
        names.append(candidate)
    return names


def load_runs(run_dirs: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """name → summary.json contents, in the order given; the name is the folder name (with its parent
    folder(s) prefixed when two runs share a name). A folder without summary.json raises FileNotFoundError."""
    run_dirs = [Path(d) for d in run_dirs]
    paths = [_summary_path(d) for d in run_dirs]
    summaries: dict[str, dict[str, Any]] = {}
    for name, path in zip(_run_names([p.parent for p in paths]), paths, strict=True):
        try:
            summaries[name] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        run = summaries[name].setdefault("run", {})
        if isinstance(run, dict) and "task_set" not in run:  # runs from before it was recorded
            run["task_set"] = _task_set_from_results(path.parent / "results.jsonl")
    return summaries


def _task_set_from_results(results: Path) -> str | None:
    if not results.is_file():
        return None
    rows = []
    with results.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rows.append({"task_id": json.loads(line)["task_id"]})
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return task_set_digest(rows) if rows else None


# ----------------------------------------------------------------------------------------------- helpers
def _is_block(value: Any) -> bool:
    return isinstance(value, dict) and "asr" in value


def _intents(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """overall first, then the known intents in their usual order, then any others, only those present."""
    present = {k for s in summaries.values() for k, v in s.items() if k != "run" and _is_block(v)}
    known = [OVERALL, *INTENT_ORDER]
    return [i for i in known if i in present] + sorted(present - set(known))


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def _fmt(value: Any, spec: str) -> str:
    v = _num(value)
    return MISSING if v is None else format(v, spec)


def _trials(summary: Mapping[str, Any]) -> int:
    run = summary.get("run") or {}
    if isinstance(run.get("trials"), int):
        return run["trials"]
    return sum(1 for k in summary.get(OVERALL, {}) if k.startswith("pass^"))


def _agent_label(summary: Mapping[str, Any]) -> str:
    run = summary.get("run") or {}
    agent = str(run.get("agent") or MISSING)
    llm = run.get("llm")
    if isinstance(llm, dict) and llm.get("model"):
        agent += f" ({llm.get('backend', '?')}:{llm['model']})"
    return f"{agent} · {run.get('profile', 'shoplab')}"  # not [..]: rich reads brackets as markup


def _n_tasks(summary: Mapping[str, Any]) -> int | None:
    run, overall = summary.get("run") or {}, summary.get(OVERALL) or {}
    n = run.get("tasks", overall.get("tasks") if isinstance(overall, dict) else None)
    return n if isinstance(n, int) else None


def mixed_task_sets(summaries: Mapping[str, Mapping[str, Any]]) -> bool:
    """True when the runs did not all cover the same tasks (their ASRs are then not directly comparable)."""
    sets = {((s.get("run") or {}).get("task_set"), _n_tasks(s)) for s in summaries.values()}
    digests = {d for d, _ in sets if d}
    counts = {n for _, n in sets if n is not None}
    return len(digests) > 1 or len(counts) > 1


def _mixed_note(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    counts = ", ".join(f"{name} {_fmt(_n_tasks(s), ',.0f')}" for name, s in summaries.items())
    return (f"These runs cover different task sets (tasks: {counts}): an ASR compares directly only with "
            "runs over the same tasks.")


def _tokens(block: Mapping[str, Any]) -> str:
    prompt, completion = _num(block.get("mean_prompt_tokens")), _num(block.get("mean_completion_tokens"))
    if prompt is None and completion is None:
        return MISSING
    return f"{(prompt or 0.0) + (completion or 0.0):,.0f}"


def _rows(summaries: Mapping[str, Mapping[str, Any]], compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """The comparison as plain strings: (headers, one row per run). `compact` is the terminal's: short
    headers, no agent or episode columns, ASR without the constraint score in brackets."""
    intents = _intents(summaries)
    k_max = max((_trials(s) for s in summaries.values()), default=1)
    k_cols = [f"pass^{k}" for k in range(1, k_max + 1)] if k_max > 1 else []
    measures = ["gt", "steps", "s/ep", "tok/ep", "ep/h"] if compact else \
        ["gt", "steps", "s/episode", "tokens/episode", "episodes/hour"]
    headers = ["run", *([] if compact else ["agent"]), "tasks", *([] if compact else ["episodes"]), *intents,
               *measures, *k_cols]
    rows = []
    for name, s in summaries.items():
        overall = s.get(OVERALL) if _is_block(s.get(OVERALL)) else {}
        asr = [(_fmt(s[i]["asr"], ".3f") if compact else
                f"{_fmt(s[i]['asr'], '.3f')} ({_fmt(s[i].get('constraint_score'), '.2f')})")
               if _is_block(s.get(i)) else MISSING for i in intents]
        who = [name] if compact else [name, _agent_label(s)]
        counts = [_fmt(_n_tasks(s), ",.0f")] + ([] if compact else [_fmt(overall.get("n"), ".0f")])
        rows.append([*who, *counts, *asr,
                     _fmt(overall.get("gt_rate"), ".3f"), _fmt(overall.get("mean_steps"), ".1f"),
                     _fmt(overall.get("mean_seconds"), ".2f"), _tokens(overall),
                     _fmt(overall.get("episodes_per_hour"), ",.0f"),
                     *[_fmt(overall.get(k), ".3f") for k in k_cols]])
    return headers, rows


# ----------------------------------------------------------------------------------------------- outputs
def comparison_table(summaries: Mapping[str, Mapping[str, Any]]) -> Table:
    """Runs side by side for a terminal of 120 columns, one row per run: tasks, ASR per intent, gt rate,
    steps, seconds, tokens and episodes per hour (LLM runs), pass^k when a run has several trials. What
    each run was (agent, model, profile) is the caption, with a warning when the runs cover different
    tasks; constraint scores are in report.md."""
    headers, rows = _rows(summaries, compact=True)
    captions = [f"{name}: {_agent_label(s)}" for name, s in summaries.items()]
    if mixed_task_sets(summaries):
        captions.append(f"[yellow]{_mixed_note(summaries)}[/yellow]")
    table = Table(title="Runs compared: ASR per intent", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="\n".join(captions), caption_justify="left")
    for h in headers:
        table.add_column(h, justify="left" if h == "run" else "right", overflow="fold", max_width=28 if h == "run" else None)
    for row in rows:
        table.add_row(escape(row[0]), *row[1:])
    return table


def plot_asr_per_intent(summaries: Mapping[str, Mapping[str, Any]], out_png: Path) -> Path:
    """A grouped bar chart of ASR per intent, one bar per run, saved as a PNG; returns its path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # matplotlib is a dev extra, not a core dependency
        raise ImportError("the ASR chart needs matplotlib: pip install -e '.[dev]'") from exc

    intents = _intents(summaries)
    names = list(summaries)
    n_runs = max(len(names), 1)
    width = 0.8 / n_runs
    # Figure / Agg canvas directly, not pyplot: no global backend switch, no display, safe in threads.
    fig = Figure(figsize=(max(6.0, 1.5 + len(intents) * (0.6 + 0.45 * n_runs)), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(n_runs)]
    for r, name in enumerate(names):
        s = summaries[name]
        xs, ys = [], []
        for x, intent in enumerate(intents):
            asr = _num(s[intent]["asr"]) if _is_block(s.get(intent)) else None
            pos = x - 0.4 + width * (r + 0.5)
            if asr is None:  # intent not in this run: say so, so it is not read as an ASR of 0
                ax.text(pos, 0.01, "n/a", ha="center", va="bottom", fontsize=7, color="grey", rotation=90)
            else:
                xs.append(pos)
                ys.append(asr)
        bars = ax.bar(xs, ys, width=width * 0.92, label=name, color=colors[r])
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], padding=2,
                     fontsize=8 if n_runs <= 4 else 7, rotation=0 if n_runs <= 4 else 90)
    ax.set_xticks(range(len(intents)), intents)
    ax.set_xlim(-0.5, len(intents) - 0.5)
    ax.set_ylim(0, 1.12)  # headroom for the value labels
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("ASR")
    ax.set_title("ASR per intent")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(title="run", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120, bbox_inches="tight")
    return out_png


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_report(summaries: Mapping[str, Mapping[str, Any]], png_name: str = PNG_NAME) -> str:
    headers, rows = _rows(summaries)
    lines = ["# Benchmark runs compared", "",
             "ASR per intent, constraint score in brackets; gt, steps, seconds, tokens, episodes/hour and "
             "pass^k are over all episodes of a run.", "",
             "| " + " | ".join(_md_cell(h) for h in headers) + " |",
             "|" + "|".join(":---" if h in ("run", "agent") else "---:" for h in headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    if mixed_task_sets(summaries):
        lines += ["", f"**Note:** {_md_cell(_mixed_note(summaries))}"]
    lines += ["", f"![ASR per intent]({png_name})", "", "## Runs", ""]
    for name, s in summaries.items():
        run = s.get("run") or {}
        details = [f"agent `{run.get('agent', MISSING)}`",
                   f"profile `{run.get('profile', 'shoplab')}`"]  # runs before profiles existed were shoplab's
        llm = run.get("llm")
        if isinstance(llm, dict):
            details.append(f"LLM {llm.get('backend', MISSING)} `{llm.get('model', MISSING)}`")
        for key, label in (("episodes", "episodes"), ("trials", "trial(s)"), ("n_products", "products")):
            if run.get(key) is not None:
                details.append(f"{run[key]:,} {label}" if isinstance(run[key], int) else f"{run[key]} {label}")
        if _num(run.get("wall_seconds")) is not None:
            details.append(f"{run['wall_seconds'] / 60:.1f} min wall clock")
        if run.get("data_dir"):
            details.append(f"sandbox `{run['data_dir']}`")
        lines.append(f"- **{_md_cell(name)}**: " + ", ".join(details))
    return "\n".join(lines) + "\n"


def write_report(run_dirs: Sequence[Path], out_dir: Path | None = None) -> tuple[Table, Path, Path]:
    """Load the runs, build the comparison table, write `asr_per_intent.png` and `report.md` to out_dir
    (default: the first run folder's parent / "report"); returns (table, png_path, md_path)."""
    if not run_dirs:
        raise ValueError("no run folders given")
    summaries = load_runs(run_dirs)
    first = Path(run_dirs[0])
    first = first.parent if first.is_file() else first  # summary.json itself was given
    out = Path(out_dir) if out_dir is not None else first.parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = comparison_table(summaries)
    png_path = plot_asr_per_intent(summaries, out / PNG_NAME)
    md_path = out / MD_NAME
    md_path.write_text(markdown_report(summaries, png_path.name), encoding="utf-8")
    return table, png_path, md_path
