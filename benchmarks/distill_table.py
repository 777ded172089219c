"""Collect a distillation run (`shoplab train distill`) into one results table.

    .venv/bin/python benchmarks/distill_table.py [--run-dir runs/distill]

Prints one JSON line; writes benchmarks/results/distill/{summary.json,table.md} and copies each
evaluated agent's summary.json next to them.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _read(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", default="runs/distill")
    args = parser.parse_args()
    run = Path(args.run_dir)
    out = ROOT / "benchmarks" / "results" / "distill"
    out.mkdir(parents=True, exist_ok=True)
    stages = {}
    for stage in ("sft", "grpo_step", "grpo_episode"):
        info = _read(run / stage / "stage.json")
        if info:
            stages[stage] = info["metrics"]
    summary = {"data": _read(run / "data" / "report.json"), "teacher": _read(run / "teacher" / "summary.json"),
               "stages": stages, "eval": _read(run / "eval" / "table.json") or {}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for agent in summary["eval"]:
        src = run / "eval" / agent / "summary.json"
        if src.exists():
            shutil.copy(src, out / f"eval_{agent}.json")
    lines = ["| agent | tasks | overall ASR | product | shop | voucher | web | constraint | steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for agent, row in summary["eval"].items():
        cells = [f"{row[k]:.3f}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in
                 ("overall", "product", "shop", "voucher", "web", "constraint")]
        steps = row.get("steps")
        lines.append(f"| {agent} | {row['n']} | " + " | ".join(cells) + f" | {steps:.1f} |" if steps is not None
                     else f"| {agent} | {row['n']} | " + " | ".join(cells) + " | |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print(json.dumps({"benchmark": "distill", "eval": summary["eval"],
                      "stages": {k: {m: v.get(m) for m in ("steps", "seconds", "first_logged_loss", "last_logged_loss",
                                                            "rewards")} for k, v in stages.items()}}))


if __name__ == "__main__":
    main()
