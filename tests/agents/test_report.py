"""`agents.report`: comparing run folders whose summary.json comes from the real `summarize`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from agents.report import (
    comparison_table,
    load_runs,
    markdown_report,
    mixed_task_sets,
    plot_asr_per_intent,
    write_report,
)
from agents.runner import summarize


def _row(task_id: str, intent: str, success: bool, trial: int = 0, cs: float | None = None) -> dict:
    """The keys of a results.jsonl row that `summarize` reads."""
    return {"task_id": task_id, "intent": intent, "trial": trial, "success": success,
            "constraint_score": cs if cs is not None else (1.0 if success else 0.5),
            "gt": 1.0 if success else 0.0, "steps": 4, "seconds": 0.5}


def _write_run(run_dir: Path, rows: list[dict], agent: str, trials: int = 1, llm: dict | None = None) -> dict:
    summary = summarize(rows, trials)
    run = {"agent": agent, "trials": trials, "episodes": len(rows), "data_dir": "/tmp/sb", "n_products": 5000}
    if llm is not None:  # the optional keys of LLM runs (set only if summarize does not already add them)
        for block in (b for k, b in summary.items() if k != "run"):
            block.setdefault("mean_prompt_tokens", 1200.0)
            block.setdefault("mean_completion_tokens", 300.0)
            block.setdefault("mean_llm_turns", 3.5)
            block.setdefault("format_error_rate", 0.1)
            block.setdefault("episodes_per_hour", 240.0)
        run |= {"llm": llm, "wall_seconds": 30.0}
    summary["run"] = run
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return summary


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    # heuristic: all four intents, product 1/2, shop 2/2, voucher 0/2, web 1/2 → overall 4/8.
    heuristic = [_row("p1", "product", True), _row("p2", "product", False), _row("s1", "shop", True),
                 _row("s2", "shop", True), _row("v1", "voucher", False), _row("v2", "voucher", False),
                 _row("w1", "web", True), _row("w2", "web", False)]
    # react: two trials, no web tasks; product 3/4, shop 1/2 → overall 4/6.
    react = [_row("p1", "product", True, 0), _row("p1", "product", True, 1), _row("p2", "product", True, 0),
             _row("p2", "product", False, 1), _row("s1", "shop", True, 0), _row("s1", "shop", False, 1)]
    # oracle: everything right, one intent only.
    oracle = [_row("p1", "product", True), _row("p2", "product", True)]
    dirs = [tmp_path / "runs" / "heuristic", tmp_path / "runs" / "react", tmp_path / "runs" / "oracle"]
    _write_run(dirs[0], heuristic, "heuristic")
    _write_run(dirs[1], react, "react", trials=2, llm={"backend": "transformers", "model": "Qwen/Qwen3-0.6B"})
    _write_run(dirs[2], oracle, "oracle")
    return dirs


def _column(table, header: str) -> list[str]:
    col = next(c for c in table.columns if c.header == header)
    return [str(cell) for cell in col.cells]


def test_load_runs_names_by_folder(runs):
    summaries = load_runs(runs)
    assert list(summaries) == ["heuristic", "react", "oracle"]
    assert summaries["react"]["run"]["llm"]["model"] == "Qwen/Qwen3-0.6B"


def test_comparison_table(runs):
    table = comparison_table(load_runs(runs))
    assert table.row_count == 3
    assert _column(table, "run") == ["heuristic", "react", "oracle"]
    assert _column(table, "tasks") == ["8", "3", "2"]
    assert _column(table, "overall") == ["0.500", "0.667", "1.000"]
    assert _column(table, "product") == ["0.500", "0.750", "1.000"]
    assert _column(table, "voucher") == ["0.000", "-", "-"]
    assert _column(table, "web") == ["0.500", "-", "-"]
    # tokens and throughput only for the LLM run; pass^k because one run has two trials
    assert _column(table, "tok/ep") == ["-", "1,500", "-"]
    assert _column(table, "ep/h") == ["-", "240", "-"]
    assert _column(table, "pass^2")[1] == "0.333"  # p1 2/2, p2 1/2 → 1, 0; s1 1/2 → 0
    headers = [c.header for c in table.columns]
    assert headers.index("overall") < headers.index("product") < headers.index("shop") < headers.index("voucher")
    assert "react: react (transformers:Qwen/Qwen3-0.6B) · shoplab" in table.caption


def test_the_terminal_table_fits_120_columns_whole(tmp_path):
    """Long run names and model names, six runs, three trials: nothing is cut and no line is wider than 120."""
    dirs = []
    for i in range(6):
        rows = [_row(f"{intent[0]}{j}", intent, (i + j) % 2 == 0, trial)
                for intent in ("product", "shop", "voucher", "web") for j in range(3) for trial in range(3)]
        d = tmp_path / f"react_smollm2_distilled_student_run_{i}"
        _write_run(d, rows, "react", trials=3, llm={"backend": "vllm", "model": "runs/distill/sft/merged_long_name"})
        dirs.append(d)
    console = Console(width=120, record=True)
    console.print(comparison_table(load_runs(dirs)))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "…" not in text
    assert "react_smollm2_distilled_student_run_5" in text.replace("\n", "").replace(" ", "") or \
        all(f"run_{i}" in text for i in range(6))
    assert "pass^3" in text and "different task sets" not in text


def test_runs_over_different_task_sets_are_marked(runs):
    summaries = load_runs(runs)
    assert mixed_task_sets(summaries)
    assert "different task sets (tasks: heuristic 8, react 3, oracle 2)" in comparison_table(summaries).caption
    assert "different task sets" in markdown_report(summaries)
    same = load_runs([runs[0], runs[0]])
    assert not mixed_task_sets(same) and "different task sets" not in markdown_report(same)


def test_runs_over_the_same_number_of_different_tasks_are_marked(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write_run(a, [_row("p1", "product", True), _row("p2", "product", False)], "heuristic")
    _write_run(b, [_row("p1", "product", True), _row("p3", "product", False)], "heuristic")
    assert mixed_task_sets(load_runs([a, b]))  # read from results.jsonl: the summaries predate task_set


def test_no_pass_k_columns_with_single_trials(runs):
    table = comparison_table(load_runs([runs[0], runs[2]]))
    assert not [c.header for c in table.columns if str(c.header).startswith("pass^")]


def test_plot_is_a_png(runs, tmp_path):
    png = plot_asr_per_intent(load_runs(runs), tmp_path / "out" / "asr.png")
    assert png.exists() and png.stat().st_size > 0
    with Image.open(png) as img:
        assert img.format == "PNG"
        width, height = img.size
        img.verify()
    assert width > 100 and height > 100


def test_write_report(runs):
    table, png, md = write_report(runs, None)
    assert table.row_count == 3
    assert png.parent == md.parent == runs[0].parent / "report"
    with Image.open(png) as img:
        assert img.format == "PNG" and min(img.size) > 100
    text = md.read_text()
    for name in ("heuristic", "react", "oracle"):
        assert name in text
    for intent in ("overall", "product", "shop", "voucher", "web"):
        assert intent in text
    assert "0.667 (0.83)" in text and f"]({png.name})" in text


def test_write_report_to_given_folder(runs, tmp_path):
    _, png, md = write_report(runs[:1], tmp_path / "elsewhere")
    assert png.parent == md.parent == tmp_path / "elsewhere"


def test_same_folder_name_gets_distinct_names(tmp_path):
    rows = [_row("p1", "product", True), _row("p2", "product", False)]
    a, b = tmp_path / "monday" / "heuristic", tmp_path / "tuesday" / "heuristic"
    _write_run(a, rows, "heuristic")
    _write_run(b, rows[:1], "heuristic")
    summaries = load_runs([a, b])
    assert list(summaries) == ["monday/heuristic", "tuesday/heuristic"]
    assert summaries["tuesday/heuristic"]["overall"]["asr"] == 1.0
    table = comparison_table(summaries)
    assert _column(table, "run") == ["monday/heuristic", "tuesday/heuristic"]


def test_missing_summary_names_the_folder(runs, tmp_path):
    unfinished = tmp_path / "runs" / "unfinished"
    unfinished.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="unfinished"):
        load_runs([runs[0], unfinished])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_runs([tmp_path / "nowhere"])
