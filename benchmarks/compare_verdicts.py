"""Per-task verdicts of two benchmark runs, side by side: did a change alter what any agent scores?

    python benchmarks/compare_verdicts.py RUN_A RUN_B [RUN_A2 RUN_B2 ...]

Each pair of run folders (`results.jsonl` from `shoplab bench run`) is compared task by task on
success, constraint score, gt and the recommended ids; prints one JSON line per pair and writes
them to benchmarks/results/compare_verdicts.jsonl. Exit status 1 when any pair differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIELDS = ("success", "constraint_score", "gt", "recommended")


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text(encoding="utf-8").split("\n") if line]


def verdicts(run: Path) -> dict[tuple[str, int], dict]:
    return {(r["task_id"], r["trial"]): {k: r.get(k) for k in FIELDS} for r in _rows(run)}


def trajectories(run: Path) -> dict[tuple[str, int], list]:
    """What the agent did and saw: each message's role, content and tool calls (timings left out)."""
    return {(r["task_id"], r["trial"]): [(m.get("role"), m.get("content"), json.dumps(m.get("tool_calls"), sort_keys=True))
                                         for m in r.get("trajectory") or []] for r in _rows(run)}


def compare(a: Path, b: Path) -> dict:
    va, vb = verdicts(a), verdicts(b)
    differ = sorted(k for k in va.keys() & vb.keys() if va[k] != vb[k])
    ta, tb = trajectories(a), trajectories(b)
    same_trajectory = sum(ta[k] == tb[k] for k in ta.keys() & tb.keys())
    return {"a": str(a), "b": str(b), "tasks_a": len(va), "tasks_b": len(vb), "common": len(va.keys() & vb.keys()),
            "only_a": len(va.keys() - vb.keys()), "only_b": len(vb.keys() - va.keys()),
            "differ": len(differ), "examples": [f"{t}#{k}" for t, k in differ[:5]],
            "success_a": sum(bool(v["success"]) for v in va.values()),
            "success_b": sum(bool(v["success"]) for v in vb.values()), "same_trajectory": same_trajectory,
            "identical": not differ and va.keys() == vb.keys()}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__)
        return 2
    out = Path(__file__).parent / "results" / "compare_verdicts.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(compare(Path(a), Path(b))) for a, b in zip(argv[::2], argv[1::2], strict=True)]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(json.loads(line)["identical"] for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
