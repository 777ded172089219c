"""How the search's rewrite stage fuses the query's list with a rewrite's: each rule on the same rewrites.

Every rewriter of a BEQUE run (rule, SFT, SFT+PRO, SFT+DPO where trained) rewrites the held-out and
validation queries and the heuristic agent's task queries once (greedy; what `rewrite eval` decoded is read
from its `eval/rewrites.json`); each fusion rule then scores the same rewrites:
hit@10 / hit@50 on both query sets (the deployed list, as `rewrite eval` scores it) and the heuristic
agent's ASR per intent on the sandbox's tasks. The rules:

- `original_first`: the product's rule (`sandbox.rewrite_stage.fuse_with_original`): RRF, the query's
  own list wins ties.
- `rewrites_first`: the rule before 2026-12: RRF, the rewrites' lists win ties.
- `original_weight_0.8` / `original_weight_1.2`: weighted RRF, the query's list weighted 0.8 / 1.2,
  winning ties (sensitivity around the product's rule).

    .venv/bin/python benchmarks/rewrite_fusion_rules.py --run-dir runs/rewrite --data-dir runs/sandbox

Prints one JSON line; writes benchmarks/results/rewrite/fusion_rules.{json,md}.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import typer

from agents.scripted import HeuristicAgent
from rewrite import RuleRewriter
from rewrite.data import read_queries
from rewrite.evaluate import retrieval_metrics
from rewrite.model import RewriteModel, TableRewriter
from sandbox.rewrite_stage import RRF_K, fuse_with_original, weighted_rrf
from shoplab_core.stats import paired_bootstrap
from training.beque.pipeline import RewritePipeline, RewritePipelineConfig, intent_order

RESULTS = Path(__file__).parent / "results"


def weighted_fusion(original_weight: float, original_first: bool):
    """RRF with the query's list weighted `original_weight`; ties go to the list given first."""
    def fuse(original: Sequence[str], rewritten: Sequence[Sequence[str]], k: int = RRF_K) -> list[str]:
        lists, weights = [original, *rewritten], [original_weight] + [1.0] * len(rewritten)
        if not original_first:
            lists, weights = lists[1:] + lists[:1], weights[1:] + weights[:1]
        return [pid for pid, _ in weighted_rrf(lists, weights, k)]
    return fuse


RULES = {
    "original_first": fuse_with_original,
    "rewrites_first": weighted_fusion(1.0, original_first=False),
    "original_weight_0.8": weighted_fusion(0.8, original_first=True),
    "original_weight_1.2": weighted_fusion(1.2, original_first=True),
}


def run_folder(rule: str, rewriter: str) -> str:
    return f"{rule}_{rewriter.replace('+', '_')}"


def main(run_dir: Path = typer.Option(Path("runs/rewrite"), help="A BEQUE run (its data/ and trained stages)."),
         data_dir: Path = typer.Option(Path("runs/sandbox"), help="The sandbox the run was built on."),
         config: Path = typer.Option(Path("configs/rewrite/beque_smollm2.yaml")),
         out: Path = typer.Option(RESULTS / "rewrite" / "fusion_rules.json")) -> None:
    cfg = RewritePipelineConfig.from_yaml(config, [f"data_dir={data_dir}", f"run_dir={run_dir}"])
    pipe = RewritePipeline(cfg, progress=False)
    sets = {"heldout": read_queries(cfg.path("data", "queries_heldout.jsonl"))[: cfg.eval.n_heldout],
            "validation": pipe.validation_queries()}
    tasks = sorted(pipe.world.tasks.values(), key=lambda t: t.task_id)
    heuristic = HeuristicAgent()
    instructions = list(dict.fromkeys(heuristic.query_from_instruction(t.query) for t in tasks))
    texts = [q.query for qs in sets.values() for q in qs] + instructions

    # what `rewrite eval` decoded (eval/rewrites.json) is reused; the rest (the validation queries) is decoded here
    eval_file = cfg.path("eval", "rewrites.json")
    cached = json.loads(eval_file.read_text()) if eval_file.exists() else {}
    rewrites: dict[str, list[str]] = {"none": [""] * len(texts)}
    decode_s: dict[str, dict[str, float]] = {}
    for name, source in pipe.rewriters().items():
        if source is None:
            continue
        started = time.perf_counter()
        table = dict(cached.get(name, {}))
        missing = list(dict.fromkeys(t for t in texts if t not in table))
        if isinstance(source, RuleRewriter):
            table.update({t: source.rewrite(t) for t in missing})
        elif missing:
            model = RewriteModel.load(source, batch_size=cfg.eval.batch_size)
            table.update(zip(missing, model.rewrite_many(missing), strict=True))
        rewrites[name] = [table[t] for t in texts]
        decode_s[name] = {"decoded": len(missing), "seconds": round(time.perf_counter() - started, 1)}

    rows: dict[str, dict[str, dict]] = {}
    per_query: dict[tuple[str, str, str], list[int]] = {}
    work = cfg.path("fusion_rules")
    for rule, fuse in RULES.items():
        # the deployed search and the judge both call fuse_with_original: swap it in both for this rule
        with mock.patch("sandbox.rewrite_stage.fuse_with_original", fuse), \
                mock.patch("rewrite.retrieval.fuse_with_original", fuse):
            for name, texts_rw in rewrites.items():
                row: dict = {}
                offset = 0
                for split, queries in sets.items():
                    metrics = retrieval_metrics(pipe.judge, queries, texts_rw[offset: offset + len(queries)],
                                                (10, 50), name, progress=False)
                    offset += len(queries)
                    for k in (10, 50):
                        row[f"{split} hit@{k}"] = round(metrics[f"hit@{k}"], 4)
                        per_query[(rule, name, f"{split} hit@{k}")] = metrics["per_query"][f"hit@{k}"]
                if name != "none":
                    table = TableRewriter(dict(zip(instructions, ([r] for r in texts_rw[offset:]), strict=True)))
                    asr = pipe.heuristic_asr(name, tasks, table, work / run_folder(rule, name))
                    row.update({f"ASR {i}": v for i, v in asr.items()})
                rows.setdefault(rule, {})[name] = row
    none_asr = pipe.heuristic_asr("none", tasks, None, work / "none")  # no rewrite stage: the same under every rule
    for rule in RULES:
        rows[rule]["none"].update({f"ASR {i}": v for i, v in none_asr.items()})

    comparisons = []
    for name in rewrites:
        if name == "none":
            continue
        for metric in ("heldout hit@10", "heldout hit@50", "validation hit@10", "validation hit@50"):
            stats = paired_bootstrap(per_query[("original_first", name, metric)],
                                     per_query[("rewrites_first", name, metric)], seed=cfg.seed)
            comparisons.append({"rewriter": name, "metric": metric} | {k: round(v, 4) for k, v in stats.items()})
        runs = {rule: {r["task_id"]: (r["intent"], float(r["success"])) for r in map(
            json.loads, (work / run_folder(rule, name) / "results.jsonl").open())}
            for rule in ("original_first", "rewrites_first")}
        ids = sorted(runs["original_first"])
        for intent in ("all", "web"):
            chosen = [t for t in ids if intent == "all" or runs["original_first"][t][0] == intent]
            stats = paired_bootstrap([runs["original_first"][t][1] for t in chosen],
                                     [runs["rewrites_first"][t][1] for t in chosen], seed=cfg.seed)
            comparisons.append({"rewriter": name, "metric": f"heuristic success, {intent} tasks ({len(chosen)})"}
                               | {k: round(v, 4) for k, v in stats.items()})
    result = {"run_dir": str(run_dir), "data_dir": str(data_dir), "decode_seconds": decode_s,
              "n": {k: len(v) for k, v in sets.items()} | {"tasks": len(tasks)}, "rules": rows,
              "original_first_minus_rewrites_first": comparisons}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(json.dumps({"bench": "rewrite_fusion_rules", "out": str(out),
                      "web_asr": {r: {n: v.get("ASR web") for n, v in rows[r].items()} for r in rows}}))


def markdown(result: dict) -> str:
    rows = result["rules"]
    columns = [c for c in next(iter(next(iter(rows.values())).values())) if c.startswith(("heldout", "validation"))]
    intents = ["ASR " + i for i in intent_order({c.removeprefix("ASR ") for r in rows.values() for v in r.values()
                                                 for c in v if c.startswith("ASR ")})]
    lines = ["| fusion rule | rewriter | " + " | ".join(columns + intents) + " |",
             "|---|---|" + "---:|" * (len(columns) + len(intents))]
    for rule, by_name in rows.items():
        for name, row in by_name.items():
            lines.append(f"| {rule} | {name} | " + " | ".join(f"{row.get(c, float('nan')):.3f}"
                                                              for c in columns + intents) + " |")
    lines += ["", "| rewriter | metric | original_first − rewrites_first | 95% CI (paired bootstrap) |",
              "|---|---|---:|---|"]
    for c in result["original_first_minus_rewrites_first"]:
        lines.append(f"| {c['rewriter']} | {c['metric']} | {c['diff']:+.4f} | [{c['low']:+.4f}, {c['high']:+.4f}] |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    typer.run(main)
