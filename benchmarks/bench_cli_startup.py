"""How long `shoplab --help` and each command group's `--help` take, against an earlier commit, in one run.

The baseline is the code of `--baseline-ref` (default: the last commit before lazy exports), taken with
`git archive` into a temporary folder and run with the same Python; both are timed alternately, `--repeat`
times per command, and the median is reported.

    .venv/bin/python benchmarks/bench_cli_startup.py [--baseline-ref 7604f71] [--repeat 5]

Prints one JSON line, writes benchmarks/results/cli_startup.json. Target: every command < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [[], ["sandbox"], ["bench"], ["llm"], ["rewrite"], ["recsys"], ["train"], ["demo"],
            ["sandbox", "build"], ["bench", "run"], ["bench", "show"], ["rewrite", "query"]]
PACKAGES = ["shoplab_cli.py", "shoplab_core", "sandbox", "agents", "rewrite", "recsys_core", "training", "ui",
            "configs", "data/shoppingbench"]
TARGET_S = 1.0


def extract(ref: str, dest: Path) -> str:
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", sha, *PACKAGES], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return sha


def timed(cwd: Path, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "120"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "shoplab_cli", *argv, "--help"], cwd=cwd, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-ref", default="7604f71", help="The commit to compare with (before lazy exports).")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cli_startup.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sha = extract(args.baseline_ref, Path(tmp))
        timed(ROOT, [])  # warm the file cache once for both
        timed(Path(tmp), [])
        rows = []
        for argv in COMMANDS:
            ours, base = [], []
            for _ in range(args.repeat):  # alternate, so load on the machine hits both alike
                ours.append(timed(ROOT, argv))
                try:
                    base.append(timed(Path(tmp), argv))
                except subprocess.CalledProcessError:  # a command the baseline did not have
                    pass
            rows.append({"command": " ".join(["shoplab", *argv, "--help"]), "median_s": round(statistics.median(ours), 3),
                         "baseline_median_s": round(statistics.median(base), 3) if base else None})
    worst = max(r["median_s"] for r in rows)
    result = {"benchmark": "cli_startup", "baseline_ref": sha, "repeat": args.repeat, "target_s": TARGET_S,
              "worst_median_s": worst, "all_under_target": worst < TARGET_S,
              "baseline_worst_median_s": max((r["baseline_median_s"] or 0) for r in rows), "commands": rows,
              "python": platform.python_version(), "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "commands"}))


if __name__ == "__main__":
    main()
