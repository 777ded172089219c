"""Benchmark `build_sandbox` (tantivy backend) at several catalogue sizes, beside a baseline.

Each build runs in a fresh subprocess, so its peak RSS is its own: the child reports
`getrusage(RUSAGE_SELF).ru_maxrss` (covers all its threads, i.e. tantivy's indexing threads
too), and the parent samples the build's process tree every 0.5 s: the build process's RSS (a
timeline: does memory grow with N?) and the tree's PSS (its worker processes included, each
shared page counted once). CPU seconds are the build process's and its workers' together.

With `--baseline-ref REF` every size is also built by the code at git commit REF (extracted with
`git archive`, run the same way, right after), so the ratio holds on a noisy machine.

    .venv/bin/python benchmarks/bench_build.py --sizes 200000 2500000 10000000 --baseline-ref 60359db \
        --baseline-sizes 200000 2500000

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
report = build_sandbox({data_dir!r}, {tasks!r}, {n}, backend="tantivy", seed={seed}, progress=False, **{kwargs!r})
own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
out = {{"report": report.as_dict(), "import_seconds": t_import,
        "cpu_seconds": own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime,
        "cpu_seconds_workers": workers.ru_utime + workers.ru_stime,
        "child_maxrss_mb": own.ru_maxrss / 1024, "workers_maxrss_mb": workers.ru_maxrss / 1024}}
with open({out_path!r}, "w") as fh:
    json.dump(out, fh)
"""


def dir_size_mb(path: Path) -> float:
    total = 0
    for p in path.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
    return total / 2**20


def tree_memory(proc) -> tuple[float, float, float, float]:
    """(RSS of the process, its anonymous part, its file-backed part, PSS of the process and its children)
    in MB. The file-backed part is mostly index segments tantivy maps while it merges them: page cache the
    kernel can drop, unlike the anonymous part."""
    import psutil

    rss = proc.memory_info().rss
    anon = file = 0
    with open(f"/proc/{proc.pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
            elif line.startswith("RssFile:"):
                file = int(line.split()[1]) * 1024
    pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            pss += p.memory_full_info().pss
        except psutil.Error:
            pass
    return rss / 2**20, anon / 2**20, file / 2**20, pss / 2**20


def run_build(n: int, work: Path, tasks: list[str], seed: int, python: str, root: Path = ROOT,
              label: str = "", kwargs: dict | None = None) -> dict:
    import psutil

    data_dir = work / f"sb_{n}{label}"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    fd, out_path = tempfile.mkstemp(prefix=f"build_{n}_", suffix=".json", dir=work)
    os.close(fd)
    code = CHILD.format(root=str(root), data_dir=str(data_dir), tasks=tasks, n=n, seed=seed, out_path=out_path,
                        kwargs=kwargs or {})
    load_before = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.Popen([python, "-c", code], cwd=str(root))
    ps = psutil.Process(proc.pid)
    timeline: list[tuple[float, ...]] = []  # (seconds, rss, anonymous, file-backed, tree pss) MB
    peak_poll = peak_pss = peak_anon = peak_file = 0.0
    while proc.poll() is None:
        try:
            rss, anon, file, pss = tree_memory(ps)
        except (psutil.Error, FileNotFoundError):
            break
        peak_poll, peak_pss = max(peak_poll, rss), max(peak_pss, pss)
        peak_anon, peak_file = max(peak_anon, anon), max(peak_file, file)
        timeline.append((round(time.perf_counter() - started, 1), round(rss, 1), round(anon, 1), round(file, 1),
                         round(pss, 1)))
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
        "cpu_seconds": round(child["cpu_seconds"], 1),  # the build process and its workers
        "cpu_seconds_workers": round(child["cpu_seconds_workers"], 1),
        "peak_rss_mb": round(child["child_maxrss_mb"], 1),
        "peak_rss_mb_polled": round(peak_poll, 1),
        "peak_tree_pss_mb": round(peak_pss, 1),  # with the workers, shared pages counted once
        "peak_anon_mb_polled": round(peak_anon, 1),  # the build process's anonymous memory
        "peak_file_mb_polled": round(peak_file, 1),  # its file-backed pages (mapped index segments)
        "workers_peak_rss_mb": round(child["workers_maxrss_mb"], 1),
        "index_size_mb": round(dir_size_mb(index_dir), 1),
        "sandbox_size_mb": round(dir_size_mb(data_dir), 1),
        "index_segments": len(json.loads((index_dir / "meta.json").read_text()).get("segments", [])),
        "n_gold": report["n_gold"], "n_decoys": report["n_decoys"],
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "rss_timeline": timeline[::step],
        "data_dir": str(data_dir),
    }


def extract_baseline(ref: str, work: Path) -> Path:
    """The sandbox package as it was at git commit `ref`, in work/baseline_<sha>."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    dest = work / f"baseline_{sha}"
    if not (dest / "sandbox").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "sandbox"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


TARGETS = {2_500_000: 60.0, 10_000_000: 480.0}  # seconds; and peak RSS < 1.5 GB at 10M
MAX_RSS_MB_10M = 1536


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 2_500_000])
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work"))
    ap.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "build.json"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the results of sizes not run now that are already in --out")
    ap.add_argument("--workers", type=int, default=0, help="build workers (0: one per core)")
    ap.add_argument("--baseline-ref", default=None, help="also build with the code at this git commit")
    ap.add_argument("--baseline-sizes", type=int, nargs="*", default=None,
                    help="the sizes to build with the baseline too (default: all)")
    args = ap.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    baseline = extract_baseline(args.baseline_ref, work) if args.baseline_ref else None
    baseline_sizes = set(args.baseline_sizes if args.baseline_sizes is not None else args.sizes)

    code = code_fingerprint()
    results: dict[str, dict] = {}
    if args.merge and out.exists():
        results = json.loads(out.read_text()).get("builds", {})
    for n in args.sizes:
        print(f"building {n} products ...", file=sys.stderr, flush=True)
        r = run_build(n, work, args.tasks, args.seed, sys.executable, kwargs={"workers": args.workers})
        r["code"] = code
        r["workers"] = args.workers
        if n in TARGETS:
            r["target_seconds"] = TARGETS[n]
            r["meets_target"] = r["seconds_build"] < TARGETS[n] and (
                n != 10_000_000 or r["peak_rss_mb"] < MAX_RSS_MB_10M)
        if baseline is not None and n in baseline_sizes:
            print(f"  ... and with the baseline {args.baseline_ref}", file=sys.stderr, flush=True)
            b = run_build(n, work, args.tasks, args.seed, sys.executable, root=baseline, label="_baseline")
            shutil.rmtree(b["data_dir"], ignore_errors=True)  # only its figures are kept
            r["baseline"] = {"ref": args.baseline_ref, **{k: v for k, v in b.items() if k != "data_dir"}}
            r["speedup_vs_baseline"] = round(b["seconds_build"] / r["seconds_build"], 2)
            r["cpu_ratio_vs_baseline"] = round(r["cpu_seconds"] / b["cpu_seconds"], 2)
        results[str(n)] = r
        print(f"  {n}: {r['seconds_build']} s, {r['cpu_seconds']} CPU s, peak RSS {r['peak_rss_mb']} MB "
              f"(anonymous {r['peak_anon_mb_polled']}, file-backed {r['peak_file_mb_polled']}; tree PSS "
              f"{r['peak_tree_pss_mb']} MB), index {r['index_size_mb']} MB, load {r['loadavg_before']}"
              + (f"; baseline {r['baseline']['seconds_build']} s ({r['speedup_vs_baseline']}x)"
                 if "baseline" in r else ""), file=sys.stderr, flush=True)
    doc = {
        "benchmark": "build",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "targets": {"seconds": {str(k): v for k, v in TARGETS.items()}, "max_rss_mb_10M": MAX_RSS_MB_10M},
        "builds": dict(sorted(results.items(), key=lambda kv: int(kv[0]))),
    }
    out.write_text(json.dumps(doc, indent=2))
    fields = ("seconds_build", "cpu_seconds", "peak_rss_mb", "peak_tree_pss_mb", "index_size_mb",
              "speedup_vs_baseline")
    summary = {k: {f: v.get(f) for f in fields} for k, v in doc["builds"].items()}
    print(json.dumps({"benchmark": "build", "out": str(out), "results": summary}))


if __name__ == "__main__":
    main()
