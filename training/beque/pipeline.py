"""The BEQUE pipeline end to end: data → SFT → feedback → alignment (PRO or DPO) → evaluation.

Each step reads the previous step's folder under `run_dir` and writes its own, so steps can be
rerun alone from the CLI (`shoplab rewrite <step> --config FILE`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from datasets import Dataset

from rewrite import (
    DataConfig,
    EvalSettings,
    FeedbackSettings,
    RetrievalJudge,
    RewardWeights,
    RewriteModel,
    RuleRewriter,
    TableRewriter,
    build_rewrite_data,
    collect_feedback,
    feedback_headroom,
    preference_rows,
    prompt_messages,
    read_queries,
    retrieval_metrics,
)
from rewrite.data import read_jsonl, validation_queries, write_jsonl
from rewrite.longtail import LongTailQuery
from rewrite.model import distinct_rewrites
from shoplab_core.config import load_config
from shoplab_core.stats import paired_bootstrap
from training.stage_config import AlignStageConfig, LoraSettings, SFTStageConfig
from training.stages import run_dpo_stage, run_pro_stage, run_sft_stage, stage_policy_model

ALIGN_LOSSES = ("pro", "dpo")


@dataclass
class RewritePipelineConfig:
    model: str = "smollm2-135m-instruct"
    data_dir: str = "runs/sandbox"          # a built sandbox: its retrieval is the offline system
    run_dir: str = "runs/rewrite"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)
    align: AlignStageConfig = field(default_factory=AlignStageConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None,
                  flags: dict[str, Any] | None = None) -> RewritePipelineConfig:
        return load_config(cls, path, overrides=overrides, flags=flags)

    def path(self, *parts: str) -> Path:
        return Path(self.run_dir).joinpath(*parts)


class RewritePipeline:
    def __init__(self, cfg: RewritePipelineConfig, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        cfg.path().mkdir(parents=True, exist_ok=True)
        (cfg.path("config.json")).write_text(json.dumps(asdict(cfg), indent=2))

    # -- shared state -----------------------------------------------------------------
    @cached_property
    def world(self):
        from sandbox import ShoppingWorld

        return ShoppingWorld.open(self.cfg.data_dir)

    @cached_property
    def similarity(self):
        from sandbox import default_title_similarity

        return default_title_similarity()

    @cached_property
    def judge(self) -> RetrievalJudge:
        f = self.cfg.feedback
        return RetrievalJudge(self.world, self.similarity, depth=f.depth, relevance_k=f.relevance_k,
                              increment_k=f.increment_k, relevant_cosine=f.relevant_cosine,
                              weights=RewardWeights(f.w_hit, f.w_relevance, f.w_increment, f.w_fact),
                              fact_share=f.fact_share)

    @cached_property
    def base_model(self) -> str:
        from agents.llm.models import resolve_model

        return resolve_model(self.cfg.model)

    def _require(self, path: Path, step: str) -> Path:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `shoplab rewrite {step}` first")
        return path

    def _record(self, step: str, info: dict[str, Any]) -> dict[str, Any]:
        path = self.cfg.path("steps.json")
        steps = json.loads(path.read_text()) if path.exists() else {}
        steps[step] = info
        path.write_text(json.dumps(steps, indent=2))
        return info

    # -- steps ------------------------------------------------------------------------
    def build_data(self) -> dict[str, Any]:
        started = time.perf_counter()
        sampler = None
        if self.cfg.data.llm_candidate_queries > 0:
            model = RewriteModel(self.base_model, batch_size=self.cfg.feedback.batch_size)
            n = self.cfg.data.llm_samples

            def sampler(queries):
                raw = model.generate_raw(queries, num_return_sequences=n, do_sample=True, temperature=0.8)
                return [distinct_rewrites(texts) for texts in raw]
        stats = build_rewrite_data(self.judge, self.cfg.data, self.cfg.path("data"), self.cfg.seed, sampler,
                                   self.progress)
        return self._record("build-data", {**stats, "seconds": round(time.perf_counter() - started, 1)})

    def sft(self, resume: bool = False) -> Path:
        rows = read_jsonl(self._require(self.cfg.path("data", "sft.jsonl"), "build-data"))
        out = run_sft_stage(self.base_model, Dataset.from_list(rows), self.cfg.path("sft"), self.cfg.sft,
                            self.cfg.lora, seed=self.cfg.seed, resume=resume, merge=True)
        self._record("sft", json.loads((out / "stage.json").read_text())["metrics"])
        return out

    def feedback(self) -> dict[str, Any]:
        started = time.perf_counter()
        queries = read_queries(self._require(self.cfg.path("data", "queries_train.jsonl"), "build-data"))
        queries = queries[: self.cfg.feedback.n_queries]
        f = self.cfg.feedback
        model = RewriteModel.load(self._require(self.cfg.path("sft"), "sft"), batch_size=f.batch_size,
                                  max_new_tokens=f.max_new_tokens)
        model.torch.manual_seed(self.cfg.seed)  # the sampled candidates
        records = collect_feedback(
            lambda qs, n: model.candidates(qs, n, num_samples=f.num_samples, temperature=f.sample_temperature),
            self.judge, queries, f, self.cfg.path("feedback", "feedback.jsonl"), self.progress)
        stats = {"queries": len(records), "usable": sum(r["usable"] for r in records),
                 **feedback_headroom(records), "seconds": round(time.perf_counter() - started, 1)}
        return self._record("feedback", stats)

    def align(self, loss: str = "pro", resume: bool = False) -> Path:
        if loss not in ALIGN_LOSSES:
            raise ValueError(f"unknown alignment loss {loss!r}; choose one of {', '.join(ALIGN_LOSSES)}")
        records = read_jsonl(self._require(self.cfg.path("feedback", "feedback.jsonl"), "feedback"))
        pro, dpo = preference_rows(records, lambda q: prompt_messages("rewrite", query=q),
                                   self.cfg.align.max_pairs_per_query)
        rows = pro if loss == "pro" else dpo
        if not rows:
            raise ValueError("offline feedback gave no query with a preference (all candidates tied); "
                             "raise feedback.num_beams or n_queries")
        write_jsonl(self.cfg.path(f"align_{loss}", "train.jsonl"), rows)
        base = stage_policy_model(self._require(self.cfg.path("sft"), "sft"))
        if loss == "pro":
            out = run_pro_stage(base, Dataset.from_list(rows), self.cfg.path("align_pro"), self.cfg.align,
                                self.cfg.lora, seed=self.cfg.seed, resume=resume, validation=self._validation())
        else:
            out = run_dpo_stage(base, Dataset.from_list(rows), self.cfg.path("align_dpo"), self.cfg.align,
                                self.cfg.lora, seed=self.cfg.seed, resume=resume)
        self._record(f"align-{loss}", json.loads((out / "stage.json").read_text())["metrics"])
        return out

    def validation_queries(self) -> list[LongTailQuery]:
        """`align.validation_queries` queries no other step trains on, written once to data/."""
        n = self.cfg.align.validation_queries
        path = self.cfg.path("data", "queries_validation.jsonl")
        if path.exists():
            queries = read_queries(path)
            if len(queries) >= n:
                return queries[:n]
        queries = validation_queries(self.world, self.cfg.data, n, self.cfg.seed)
        write_jsonl(path, [q.as_dict() for q in queries])
        return queries

    def _validation(self):
        """The early-stopping score of an alignment stage: mean of hit@k over the validation queries, for
        every k of `eval.ks`, of the greedy rewrite as deployed (None when `align.validation_queries` is 0)."""
        if self.cfg.align.validation_queries <= 0:
            return None
        queries = self.validation_queries()
        ks = self.cfg.eval.ks

        def score(model, tokenizer) -> dict[str, float]:
            rewriter = RewriteModel.from_loaded(model, tokenizer, max_new_tokens=self.cfg.feedback.max_new_tokens,
                                                batch_size=self.cfg.eval.batch_size)
            row = retrieval_metrics(self.judge, queries, rewriter.rewrite_many([q.query for q in queries]), ks,
                                    "validation", progress=False)
            hits = {f"hit@{k}": row[f"hit@{k}"] for k in ks}
            return {"score": sum(hits.values()) / len(hits), **hits, "fact_dropped": row["fact_dropped"]}

        return score

    def rewriters(self) -> dict[str, Any]:
        """Every rewriter this run can evaluate: none, rule, and each trained stage that exists."""
        out: dict[str, Any] = {"none": None, "rule": RuleRewriter()}
        for name, folder in (("sft", "sft"), ("sft+dpo", "align_dpo"), ("sft+pro", "align_pro")):
            if (self.cfg.path(folder) / "stage.json").exists():
                out[name] = self.cfg.path(folder)
        return out

    def evaluate(self, only: list[str] | None = None) -> dict[str, Any]:
        from agents.scripted import HeuristicAgent

        ev = self.cfg.eval
        heldout = read_queries(self._require(self.cfg.path("data", "queries_heldout.jsonl"), "build-data"))
        heldout = heldout[: ev.n_heldout]
        tasks = sorted(self.world.tasks.values(), key=lambda t: t.task_id)
        if ev.agent_task_limit:
            tasks = tasks[: ev.agent_task_limit]
        heuristic = HeuristicAgent()
        instructions = list(dict.fromkeys(heuristic.query_from_instruction(t.query) for t in tasks))
        out = self.cfg.path("eval")
        table: dict[str, Any] = {}
        per_query: dict[str, dict[str, list[int]]] = {}
        decoded: dict[str, dict[str, str]] = {}  # rewriter -> text -> its greedy rewrite (held-out and task queries)
        if only and (out / "rewrites.json").exists():
            decoded = {k: v for k, v in json.loads((out / "rewrites.json").read_text()).items() if k not in only}
        if only and (out / "table.json").exists() and (out / "per_query.json").exists():
            # a partial rerun replaces its own rows and keeps the others (and their comparisons)
            table = {k: v for k, v in json.loads((out / "table.json").read_text()).items() if k not in only}
            per_query = {k: v for k, v in json.loads((out / "per_query.json").read_text()).items() if k in table}
        for name, source in self.rewriters().items():
            if only and name not in only:
                continue
            started = time.perf_counter()
            texts = [q.query for q in heldout] + (instructions if ev.agent_asr else [])
            if source is None:
                rewrites = [""] * len(texts)
            elif isinstance(source, RuleRewriter):
                rewrites = [source.rewrite(t) for t in texts]
            else:
                model = RewriteModel.load(source, batch_size=ev.batch_size)
                rewrites = model.rewrite_many(texts)
            decode_s = time.perf_counter() - started
            row = retrieval_metrics(self.judge, heldout, rewrites[: len(heldout)], ev.ks, name, self.progress)
            per_query[name] = row.pop("per_query")
            row["rewrite_seconds_per_query"] = round(decode_s / max(1, len(texts)), 4)
            examples = [{"query": q.query, "rewrite": r} for q, r in zip(heldout[:5], rewrites, strict=False)]
            if source is not None:
                decoded[name] = dict(zip(texts, rewrites, strict=True))
            if ev.agent_asr:
                table_rw = TableRewriter(dict(zip(instructions, ([r] for r in rewrites[len(heldout):]), strict=True)))
                row["agent"] = self.heuristic_asr(name, tasks, None if source is None else table_rw)
            row["examples"] = examples
            table[name] = row
        order = list(self.rewriters())
        table = dict(sorted(table.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        out.mkdir(parents=True, exist_ok=True)
        comparisons = paired_comparisons(per_query, ev.ks, seed=self.cfg.seed)
        (out / "per_query.json").write_text(json.dumps(per_query))
        (out / "rewrites.json").write_text(json.dumps(decoded))
        (out / "comparisons.json").write_text(json.dumps(comparisons, indent=2))
        (out / "table.json").write_text(json.dumps(table, indent=2))
        (out / "table.md").write_text(markdown_table(table, ev.ks) + "\n" + comparisons_table(comparisons))
        plot_eval(table, ev.ks, out / "hitrate.png")
        self._record("eval", {name: {k: v for k, v in row.items() if k != "examples"} for name, row in table.items()})
        return table

    def heuristic_asr(self, name: str, tasks, rewriter, out: Path | None = None) -> dict[str, Any]:
        """The heuristic agent's ASR per intent on `tasks` with `rewriter` in the search's rewrite stage (None: no
        rewrite stage); the episodes go to `out` (default eval/heuristic_<name>), replacing an earlier run there."""
        from agents.registry import make_agent
        from agents.runner import RunConfig, run_benchmark

        out = out or self.cfg.path("eval", f"heuristic_{name.replace('+', '_')}")
        if (out / "results.jsonl").exists():
            (out / "results.jsonl").unlink()  # a rewriter retrained since the last eval must be rerun
        config = RunConfig(agent="heuristic", parallel=1, rewriter=name, profile="shoplab")  # the rewrite stage is shoplab's
        summary = run_benchmark(self.world, tasks, lambda: make_agent("heuristic"), out, config, self.similarity,
                                progress=self.progress, query_rewriter=rewriter)
        return {intent: round(block["asr"], 4) for intent, block in summary.items() if isinstance(block, dict)
                and "asr" in block}

    def run_all(self, losses: tuple[str, ...] = ("pro", "dpo")) -> dict[str, Any]:
        started = time.perf_counter()
        timings: dict[str, float] = {}

        def timed(step: str, fn, *args):
            t = time.perf_counter()
            result = fn(*args)
            timings[step] = round(time.perf_counter() - t, 1)
            return result

        timed("build-data", self.build_data)
        timed("sft", self.sft)
        timed("feedback", self.feedback)
        for loss in losses:
            timed(f"align-{loss}", self.align, loss)
        table = timed("eval", self.evaluate)
        timings["total"] = round(time.perf_counter() - started, 1)
        self._record("timings", timings)
        return {"table": table, "timings": timings}


# Each trained rewriter against the base it must beat (BEQUE: PRO over SFT over no rewrite), and the rule floor.
COMPARISONS = (("sft", "none"), ("sft+pro", "sft"), ("sft+pro", "none"), ("sft+dpo", "sft"), ("sft+pro", "rule"))


def paired_comparisons(per_query: dict[str, dict[str, list[int]]], ks, seed: int = 0) -> list[dict[str, Any]]:
    """Paired bootstrap over the held-out queries of hit@k, for each pair of `COMPARISONS` evaluated."""
    out = []
    for a, b in COMPARISONS:
        if a in per_query and b in per_query:
            for k in ks:
                stats = paired_bootstrap(per_query[a][f"hit@{k}"], per_query[b][f"hit@{k}"], seed=seed)
                out.append({"a": a, "b": b, "metric": f"hit@{k}", **{s: round(v, 4) for s, v in stats.items()}})
    return out


def comparisons_table(comparisons: list[dict[str, Any]]) -> str:
    lines = ["| comparison | metric | difference | 95% CI (paired bootstrap over queries) | P(diff <= 0) |",
             "|---|---|---:|---|---:|"]
    for c in comparisons:
        lines.append(f"| {c['a']} − {c['b']} | {c['metric']} | {c['diff']:+.4f} | [{c['low']:+.4f}, {c['high']:+.4f}] "
                     f"| {c['p_le_0']:.3f} |")
    return "\n".join(lines) + "\n"


INTENT_ORDER = ("overall", "product", "shop", "voucher", "web")


def intent_order(intents) -> list[str]:
    """Intents in the tables' order: overall first, then ShoppingBench's four, then any other."""
    return sorted(intents, key=lambda i: (INTENT_ORDER.index(i) if i in INTENT_ORDER else len(INTENT_ORDER), i))


def markdown_table(table: dict[str, Any], ks) -> str:
    intents = intent_order({i for row in table.values() for i in (row.get("agent") or {})})
    head = ["rewriter", "relevance", "increment", "fact words dropped"] + [f"hit@{k}" for k in ks] + [f"hit_alone@{k}" for k in ks] + \
        [f"heuristic ASR {i}" for i in intents]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in table.items():
        cells = [name, f"{row['relevance']:.3f}", f"{row['increment']:.2f}", f"{row.get('fact_dropped', 0.0):.3f}"] + \
            [f"{row[f'hit@{k}']:.3f}" for k in ks] + [f"{row[f'hit_alone@{k}']:.3f}" for k in ks] + \
            [f"{(row.get('agent') or {}).get(i, float('nan')):.3f}" for i in intents]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_eval(table: dict[str, Any], ks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(ks))
    for j, k in enumerate(ks):
        axes[0].bar([i + j * width for i in range(len(names))], [table[n][f"hit@{k}"] for n in names], width,
                    label=f"hit@{k}")
    axes[0].set_xticks([i + width * (len(ks) - 1) / 2 for i in range(len(names))], names)
    axes[0].set_title("held-out long-tail queries: gold in top k (query + rewrite fused)")
    axes[0].legend()
    asr = [(table[n].get("agent") or {}).get("overall") for n in names]
    axes[1].bar(names, [a or 0 for a in asr], color="tab:green")
    axes[1].set_title("heuristic agent ASR on the sandbox's tasks")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
