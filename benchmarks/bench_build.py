"""Benchmark `build_sandbox` (tantivy backend) at several catalogue sizes.

Each build runs in a fresh subprocess, so its peak RSS is its own: the child reports
`getrusage(RUSAGE_SELF).ru_maxrss` (covers all its threads, i.e. tantivy's indexing threads
too), and the parent additionally samples the child's RSS with psutil every 0.5 s, which gives
an RSS timeline (does memory grow with N?).

    .venv/bin/python benchmarks/bench_build.py --sizes 100000 1000000 2500000

Prints one JSON line to stdout and writes benchmarks/results/build.json. The built sandboxes
stay on disk as <work-dir>/sb_<size> for bench_search.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_search import code_fingerprint  # noqa: E402  (one definition of "which code was measured")

DEFAULT_TASKS = sorted(str(p) for p in (ROOT / "data" / "shoppingbench").glob("*.jsonl"))

# Runs inside the child process: the build, timed from inside, plus the child's own peak RSS.
CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
from sandbox.catalogue.build import build_sandbox
t_import = time.perf_counter() - t0
report = build_sandbox({data_dir!r}, {tasks!r}, {n}, backend="tantivy", seed={seed}, progress=False)
out = {{"report": report.as_dict(), "import_seconds": t_import,
        "child_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}
with open({out_path!r}, "w") as fh:
    json.dump(out, fh)
"""


def dir_size_mb(path: Path) -> float:
    total = 0
    for p in path.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
    return total / 2**20


def run_build(n: int, work: Path, tasks: list[str], seed: int, python: str) -> dict:
    import psutil

    data_dir = work / f"sb_{n}"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    fd, out_path = tempfile.mkstemp(prefix=f"build_{n}_", suffix=".json", dir=work)
    os.close(fd)
    code = CHILD.format(root=str(ROOT), data_dir=str(data_dir), tasks=tasks, n=n, seed=seed, out_path=out_path)
    load_before = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.Popen([python, "-c", code], cwd=str(ROOT))
    ps = psutil.Process(proc.pid)
    timeline: list[tuple[float, float]] = []  # (seconds, rss MB)
    peak_poll = 0.0
    cpu_times = None
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss / 2**20
            cpu_times = ps.cpu_times()
        except psutil.Error:
            break
        peak_poll = max(peak_poll, rss)
        timeline.append((round(time.perf_counter() - started, 1), round(rss, 1)))
        time.sleep(0.5)
    rc = proc.wait()
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    if rc != 0:
        raise SystemExit(f"build of {n} products failed with exit code {rc}")
    child = json.loads(Path(out_path).read_text())
    Path(out_path).unlink()
    report = child["report"]
    index_dir = data_dir / "index" / "tantivy"
    # Thin the timeline to ~40 points for the results file.
    step = max(1, len(timeline) // 40)
    return {
        "n_requested": n,
        "n_products": report["n_products"],
        "seconds_wall": round(wall, 2),  # subprocess start -> exit (interpreter start + imports + build)
        "seconds_build": report["seconds"],  # build_sandbox() itself, as it reports
        "products_per_second": round(report["n_products"] / report["seconds"], 1),
        "peak_rss_mb": round(child["child_maxrss_mb"], 1),
        "peak_rss_mb_polled": round(peak_poll, 1),
        "cpu_seconds_user": round(cpu_times.user, 1) if cpu_times else None,
        "cpu_seconds_system": round(cpu_times.system, 1) if cpu_times else None,
        "index_size_mb": round(dir_size_mb(index_dir), 1),
        "sandbox_size_mb": round(dir_size_mb(data_dir), 1),
        "index_segments": len(json.loads((index_dir / "meta.json").read_text()).get("segments", [])),
        "n_gold": report["n_gold"], "n_decoys": report["n_decoys"],
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "rss_timeline": timeline[::step],
        "data_dir": str(data_dir),
        "meets_target_3min": report["seconds"] < 180,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 2_500_000])
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work"))
    ap.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "build.json"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the results of sizes not run now that are already in --out")
    args = ap.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    code = code_fingerprint()
    results: dict[str, dict] = {}
    if args.merge and out.exists():
        results = json.loads(out.read_text()).get("builds", {})
    for n in args.sizes:
        print(f"building {n} products ...", file=sys.stderr, flush=True)
        r = run_build(n, work, args.tasks, args.seed, sys.executable)
        r["code"] = code
        results[str(n)] = r
        print(f"  {n}: {r['seconds_build']} s, {r['products_per_second']} prod/s, peak RSS {r['peak_rss_mb']} MB, "
              f"index {r['index_size_mb']} MB, load {r['loadavg_before']}", file=sys.stderr, flush=True)
    doc = {
        "benchmark": "build",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "target": {"n": 2_500_000, "max_seconds": 180},
        "builds": dict(sorted(results.items(), key=lambda kv: int(kv[0]))),
    }
    out.write_text(json.dumps(doc, indent=2))
    summary = {k: {f: v[f] for f in ("seconds_build", "products_per_second", "peak_rss_mb", "index_size_mb")}
               for k, v in doc["builds"].items()}
    print(json.dumps({"benchmark": "build", "out": str(out), "results": summary}))


if __name__ == "__main__":
    main()
