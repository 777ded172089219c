"""Trajectory distillation end to end: teacher → data → SFT → step GRPO → episode GRPO → evaluation.

ShoppingBench's recipe (METHODS.md §7) on a CPU-sized student. Each step reads the previous
step's folder under `run_dir` and writes its own, so a step can be rerun alone
(`shoplab train distill --config F --steps sft,grpo_step`), and a finished step is skipped
unless `--force` (a killed training step continues from its last checkpoint with `--resume`).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from shoplab_core.config import load_config
from training.stage_config import GRPOStageConfig, LoraSettings, SFTStageConfig

STEPS = ("teacher", "data", "sft", "grpo_step", "grpo_episode", "eval")
# Teacher episodes, training conversations and the student's evaluation share one profile: the
# conversations are built with shoplab's observations and rules, so the student is measured under them
# too (the `shoppingbench` profile's rules are the learning-loops issue's to adopt).
DISTILL_PROFILE = "shoplab"
STUDENT_TOOLS = ["shoppingbench"]  # the toolkit group: ShoppingBench's four tools, no calculate


@dataclass
class TeacherSettings:
    agent: str = "teacher"           # a registered agent: `teacher` (scripted, grounded) or `react` with llm_config
    llm_config: str | None = None    # for an LLM teacher: a YAML with an `llm:` section (vLLM / OpenAI endpoint)
    task_files: list[str] = field(default_factory=list)  # imported training tasks; empty = generate
    n_product: int = 1000            # generated tasks (sandbox.task_generator)
    n_shop: int = 0
    task_seed: int = 0
    trials: int = 1
    parallel: int = 1
    # Extra teacher runs to distil from (any `shoplab bench run` output on training tasks, e.g. an LLM
    # teacher served elsewhere); their successful episodes join the teacher step's.
    run_dirs: list[str] = field(default_factory=list)


@dataclass
class StudentAgentSettings:
    """The student's `ReactConfig` (agents.react): the same at data building, GRPO and evaluation."""
    system_prompt: str = "system_hermes"
    tool_descriptions: str = "compact"
    tools: list[str] = field(default_factory=lambda: list(STUDENT_TOOLS))
    max_steps: int = 12
    max_observation_chars: int = 600
    old_observation_chars: int = 600
    keep_full_observations: int = 2
    max_format_errors: int = 3

    def react_config(self):
        from agents.react import ReactConfig

        return ReactConfig(**asdict(self))


@dataclass
class DataSettings:
    unit: str = "episode"            # episode | step (see training.distill.data)
    intents: list[str] = field(default_factory=lambda: ["product"])
    max_tokens: int = 1400           # longer episodes are dropped (ShoppingBench: 16k)
    max_examples: int = 240          # episodes for SFT (the CPU budget); -1 = all
    step_prompts: int = 64           # per-step prompts for step GRPO; -1 = all
    seed: int = 0
    # Skip the first N episodes of the seeded shuffle: a warm-started SFT pass (sft.init_adapter) then
    # sees the episodes the earlier pass with the same seed and max_examples = N did not.
    skip_examples: int = 0
    # [proposal] The share of episodes given one failed first search (a mistake the student was seen to
    # make, answered by the real tool, left out of the loss) before the teacher's: error-recovery turns.
    error_recovery: float = 0.0
    # SFT datasets (`<run>/data/sft` folders) of earlier passes: their tasks are left out, so a warm-started
    # pass (sft.init_adapter) trains on episodes the adapter has not seen, whatever this pass's filters.
    exclude_tasks_of: list[str] = field(default_factory=list)


@dataclass
class EvalSettings:
    task_files: list[str] = field(default_factory=lambda: [
        "data/shoppingbench/synthesize_product_dev.jsonl", "data/shoppingbench/synthesize_shop_dev.jsonl",
        "data/shoppingbench/synthesize_voucher_dev.jsonl", "data/shoppingbench/synthesize_web_simpleqa_dev.jsonl"])
    limit_per_intent: int | None = None
    intents: list[str] = field(default_factory=list)  # only these intents for the students; [] = all
    backend: str = "vllm"
    max_new_tokens: int = 160
    parallel: int = 8
    stages: list[str] = field(default_factory=lambda: ["zero_shot", "sft", "grpo_step", "grpo_episode"])


@dataclass
class DistillConfig:
    student: str = "smollm2-135m-instruct"
    data_dir: str = "runs/sb200k"
    run_dir: str = "runs/distill"
    seed: int = 0
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    student_agent: StudentAgentSettings = field(default_factory=StudentAgentSettings)
    data: DataSettings = field(default_factory=DataSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    sft: SFTStageConfig = field(default_factory=lambda: SFTStageConfig(
        epochs=1, learning_rate=2e-4, batch_size=1, grad_accum=4, max_length=1536, tool_chat_template=True,
        bf16=True, save_steps=20))
    # ShoppingBench's RL: GRPO on per-step prompts, reward = format (0/1) + tool-call match [-3, 3].
    grpo_step: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    # GRPO whose reward is the sandbox's score of the student's whole episode (TRL environment_factory).
    grpo_episode: GRPOStageConfig = field(default_factory=lambda: GRPOStageConfig(
        max_steps=3, max_completion_length=640, max_tool_calling_iterations=4, beta=0.0, save_steps=1, tasks=16))
    eval: EvalSettings = field(default_factory=EvalSettings)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> DistillConfig:
        return load_config(cls, path, overrides=overrides)

    def path(self, *parts: str) -> Path:
        return Path(self.run_dir).joinpath(*parts)


class DistillPipeline:
    def __init__(self, cfg: DistillConfig, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        cfg.path().mkdir(parents=True, exist_ok=True)
        cfg.path("config.json").write_text(json.dumps(asdict(cfg), indent=2))

    @cached_property
    def world(self):
        from sandbox import ShoppingWorld

        return ShoppingWorld.open(self.cfg.data_dir)

    @cached_property
    def student_path(self) -> str:
        from agents.llm.models import resolve_model

        return resolve_model(self.cfg.student)

    def tool_specs(self):
        from sandbox import tool_specs

        return tool_specs(self.cfg.student_agent.tools)

    def _log(self, step: str, info: dict[str, Any]) -> None:
        with self.cfg.path("steps.jsonl").open("a") as fh:
            fh.write(json.dumps({"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}) + "\n")

    # -- teacher ----------------------------------------------------------------------------
    def teacher(self) -> dict[str, Any]:
        """Teacher episodes on training tasks (generated from the catalogue, or imported files)."""
        from agents.registry import agent_needs_llm, make_agent
        from agents.runner import RunConfig, run_benchmark
        from sandbox.tasks import load_tasks

        t = self.cfg.teacher
        if t.task_files:
            tasks = load_tasks(t.task_files)
        else:
            from sandbox.task_generator import TaskGeneratorConfig, generate_tasks

            tasks = generate_tasks(self.world, TaskGeneratorConfig(n_product=t.n_product, n_shop=t.n_shop,
                                                                   seed=t.task_seed))
        held_out = _evaluation_ids(self.cfg.eval.task_files)
        leaked = [task.task_id for task in tasks if task.task_id in held_out or task.query in held_out]
        if leaked:
            raise ValueError(f"{len(leaked)} training tasks are evaluation tasks (e.g. {leaked[0]}); "
                             "distillation never trains on the evaluation set")
        self.cfg.path().mkdir(parents=True, exist_ok=True)
        with self.cfg.path("train_tasks.jsonl").open("w", encoding="utf-8") as fh:
            for task in tasks:
                fh.write(json.dumps(task.to_shoppingbench(), ensure_ascii=False) + "\n")
        kwargs: dict[str, Any] = {}
        chat = None
        if agent_needs_llm(t.agent):
            from agents.llm import LLMConfig, make_llm

            if not t.llm_config:
                raise ValueError(f"teacher agent {t.agent!r} needs teacher.llm_config (a YAML with an llm: section)")
            chat = make_llm(LLMConfig.from_yaml(t.llm_config))
            chat.expect_clients(t.parallel)  # episodes in parallel share one batching client
            kwargs = {"llm": chat}
        try:
            summary = run_benchmark(self.world, tasks, lambda: make_agent(t.agent, **kwargs), self.cfg.path("teacher"),
                                    RunConfig(agent=t.agent, trials=t.trials, parallel=t.parallel, max_steps=30,
                                              profile=DISTILL_PROFILE),
                                    progress=self.progress)
        finally:
            if chat is not None:
                chat.close()
        info = {"tasks": len(tasks), "asr": summary["overall"]["asr"],
                "per_intent": {k: v["asr"] for k, v in summary.items() if isinstance(v, dict) and "asr" in v}}
        self._log("teacher", info)
        return info

    # -- data -------------------------------------------------------------------------------
    def data(self) -> dict[str, Any]:
        from shoplab_core.models import load_tokenizer
        from training.chat_template import use_tool_chat_template
        from training.distill.data import build_distill_datasets

        d = self.cfg.data
        if d.skip_examples < 0:
            raise ValueError(f"data.skip_examples must be >= 0, got {d.skip_examples}")
        runs = ([self.cfg.path("teacher")] if self.cfg.path("teacher", "results.jsonl").exists() else [])
        runs += [Path(r) for r in self.cfg.teacher.run_dirs]
        if not runs:
            raise FileNotFoundError("no teacher episodes: run the teacher step or list teacher.run_dirs")
        held_out = _evaluation_ids(self.cfg.eval.task_files)
        for run in runs:
            from agents.trajectories import iter_episodes

            leaked = next((r["task_id"] for r in iter_episodes([run]) if r["task_id"] in held_out), None)
            if leaked:
                raise ValueError(f"{run} holds episodes of evaluation task {leaked}; never distil from them")
        sft, steps, report = build_distill_datasets(runs, self.cfg.student_agent.react_config(), self.tool_specs(),
                                                    unit=d.unit, error_recovery=d.error_recovery,
                                                    observe=self.search_observer(), seed=d.seed)
        tokenizer = use_tool_chat_template(load_tokenizer(self.student_path))

        def n_tokens(row: dict[str, Any]) -> int:
            messages = row["messages"] if "messages" in row else row["prompt"] + row["completion"]
            return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))

        sft = sft.filter(lambda r: r["intent"] in d.intents) if "intent" in sft.column_names else sft
        if d.exclude_tasks_of:
            from datasets import load_from_disk

            seen: set[str] = set()
            for folder in d.exclude_tasks_of:
                if not Path(folder).is_dir():
                    raise FileNotFoundError(f"data.exclude_tasks_of: {folder} is not a saved SFT dataset "
                                            "(give an earlier run's data/sft folder)")
                seen.update(load_from_disk(str(folder))["task_id"])
            sft = sft.filter(lambda r: r["task_id"] not in seen)
        sft = sft.map(lambda r: {"n_tokens": n_tokens(r)})
        too_long = sum(n > d.max_tokens for n in sft["n_tokens"])
        sft = sft.filter(lambda r: r["n_tokens"] <= d.max_tokens)
        if d.skip_examples or 0 <= d.max_examples < len(sft):
            stop = len(sft) if d.max_examples < 0 else min(len(sft), d.skip_examples + d.max_examples)
            if d.skip_examples >= stop:
                raise ValueError(f"data.skip_examples={d.skip_examples} leaves none of the {len(sft)} episodes")
            sft = sft.shuffle(seed=d.seed).select(range(d.skip_examples, stop))
        steps = steps.filter(lambda r: r["intent"] in d.intents)
        # Step GRPO learns the decisions, not the format: the first step (the query and filters) and
        # the choice after seeing results carry them; a random subset keeps both.
        order = list(range(len(steps)))
        random.Random(d.seed).shuffle(order)
        if 0 <= d.step_prompts < len(order):
            steps = steps.select(sorted(order[:d.step_prompts]))
        sft.save_to_disk(str(self.cfg.path("data", "sft")))
        steps.save_to_disk(str(self.cfg.path("data", "steps")))
        info = {**report.as_dict(), "dropped_too_long": too_long, "sft_examples": len(sft),
                "sft_tokens": int(sum(sft["n_tokens"])), "step_prompts": len(steps)}
        self.cfg.path("data", "report.json").write_text(json.dumps(info, indent=2))
        self._log("data", info)
        return info

    def search_observer(self):
        """`find_product` in this sandbox as the student meets it: its tools, the distillation profile."""
        from sandbox import ShoppingEnv

        def observe(request: str, arguments: dict[str, Any]) -> str:
            env = ShoppingEnv(self.world, tools=self.cfg.student_agent.tools, instruction=request,
                              profile=DISTILL_PROFILE)
            return env.step("find_product", arguments).observation

        return observe

    # -- training ---------------------------------------------------------------------------
    def sft(self, resume: bool = False) -> dict[str, Any]:
        from datasets import load_from_disk

        from training.stages import run_sft_stage

        dataset = load_from_disk(str(self.cfg.path("data", "sft")))
        dataset = dataset.select_columns([c for c in ("messages", "prompt", "completion") if c in dataset.column_names])
        out = run_sft_stage(self.student_path, dataset, self.cfg.path("sft"), self.cfg.sft, self.cfg.lora,
                            seed=self.cfg.seed, resume=resume, merge=True)
        info = json.loads((out / "stage.json").read_text())["metrics"]
        self._log("sft", info)
        return info


    def _start_model(self, *stages: str) -> str:
        """The policy a stage starts from: the last finished earlier stage's merged model, else the student."""
        from training.stages import stage_policy_model

        for stage in stages:
            if self.cfg.path(stage, "stage.json").exists():
                return stage_policy_model(self.cfg.path(stage))
        return self.student_path

    def grpo_step(self, resume: bool = False) -> dict[str, Any]:
        """GRPO on per-step prompts; reward = format (0/1) + tool-call correctness against the teacher's turn."""
        from datasets import load_from_disk

        from training.stages import run_grpo_stage
        from training.tool_reward import format_reward, tool_call_reward

        dataset = load_from_disk(str(self.cfg.path("data", "steps"))).select_columns(["prompt", "reference"])
        out = run_grpo_stage(self._start_model("sft"), dataset, self.cfg.path("grpo_step"), self.cfg.grpo_step,
                             reward_funcs=[format_reward, tool_call_reward], lora=self.cfg.lora, seed=self.cfg.seed,
                             resume=resume)
        info = json.loads((out / "stage.json").read_text())["metrics"]
        self._log("grpo_step", info)
        return info

    def episode_tasks(self) -> list:
        from sandbox.tasks import load_task_file

        tasks = [t for t in load_task_file(self.cfg.path("train_tasks.jsonl")) if t.intent.value in self.cfg.data.intents]
        # The last tasks of the training file: SFT drew a random subset, these are mostly unseen episodes.
        return tasks[-self.cfg.grpo_episode.tasks:]

    def grpo_episode(self, resume: bool = False) -> dict[str, Any]:
        """GRPO over whole episodes in the sandbox (TRL environment_factory); reward = the scorer's verdict."""
        from sandbox import default_title_similarity
        from training.episode_env import environment_factory
        from training.stages import run_grpo_stage

        tasks = self.episode_tasks()
        sa = self.cfg.student_agent
        factory = environment_factory(self.world, tasks, default_title_similarity(), tools=sa.tools,
                                      max_steps=sa.max_steps, max_observation_chars=sa.max_observation_chars)
        out = run_grpo_stage(self._start_model("grpo_step", "sft"), episode_prompt_dataset(tasks, sa),
                             self.cfg.path("grpo_episode"), self.cfg.grpo_episode, environment_factory=factory,
                             lora=self.cfg.lora, seed=self.cfg.seed, resume=resume)
        info = json.loads((out / "stage.json").read_text())["metrics"]
        self._log("grpo_episode", info)
        return info

    # -- evaluation -------------------------------------------------------------------------
    def eval_model(self, stage: str) -> str | None:
        if stage == "zero_shot":
            return self.student_path
        path = self.cfg.path(stage, "stage.json")
        if not path.exists():
            return None
        from training.stages import stage_policy_model

        return stage_policy_model(self.cfg.path(stage))

    def eval(self, stages: list[str] | None = None) -> dict[str, Any]:
        """Every student stage (and the heuristic, oracle agents) on the dev tasks, one table."""
        from agents.llm import LLMConfig, make_llm
        from agents.registry import make_agent
        from agents.runner import RunConfig, run_benchmark
        from sandbox.tasks import first_per_intent, load_tasks

        e = self.cfg.eval
        tasks = [self.world.tasks.get(t.task_id, t) for t in load_tasks(e.task_files)]
        if e.limit_per_intent:
            tasks = first_per_intent(tasks, e.limit_per_intent)
        table: dict[str, Any] = {}
        # The scripted agents run on every task (seconds); the students on `intents` (hours on a CPU).
        student_tasks = [t for t in tasks if not e.intents or t.intent.value in e.intents]
        for agent in ("heuristic", "oracle"):
            summary = run_benchmark(self.world, tasks, lambda a=agent: make_agent(a), self.cfg.path("eval", agent),
                                    RunConfig(agent=agent, max_steps=30, profile=DISTILL_PROFILE),
                                    progress=self.progress)
            table[agent] = _row(summary)
        agent_cfg = self.cfg.student_agent.react_config()
        for stage in stages or e.stages:
            model = self.eval_model(stage)
            if model is None:
                continue
            llm_cfg = LLMConfig(backend=e.backend, model=model, tool_format="native", chat_template="tool",
                                max_batch_size=e.parallel, max_model_len=4096,
                                sampling={"temperature": 0.0, "max_new_tokens": e.max_new_tokens})
            chat = make_llm(llm_cfg)
            chat.expect_clients(e.parallel)
            try:
                summary = run_benchmark(
                    self.world, student_tasks, lambda c=chat: make_agent("react", llm=c, config=agent_cfg, tool_format="native"),
                    self.cfg.path("eval", stage),
                    RunConfig(agent="react", parallel=e.parallel, max_steps=agent_cfg.max_steps, profile=DISTILL_PROFILE,
                              llm=llm_cfg.as_dict()), progress=self.progress)
            finally:
                chat.close()
            table[stage] = _row(summary)
        self.cfg.path("eval", "table.json").write_text(json.dumps(table, indent=2))
        self._log("eval", table)
        return table


def student_system_prompt(settings: StudentAgentSettings) -> str:
    """The student's system prompt, exactly as its ReAct agent builds it at inference."""
    from sandbox import tool_specs

    return settings.react_config().system_message(tool_specs(settings.tools), "native")


def episode_prompt_dataset(tasks: list, settings: StudentAgentSettings):
    """Episode GRPO's rows: the student's opening prompt and the task id `reset` starts from."""
    from datasets import Dataset

    system = student_system_prompt(settings)
    return Dataset.from_list([{"prompt": [{"role": "system", "content": system}, {"role": "user", "content": t.query}],
                               "task_id": t.task_id} for t in tasks])


def _row(summary: dict[str, Any]) -> dict[str, Any]:
    out = {"overall": summary["overall"]["asr"], "n": summary["overall"]["n"]}
    for intent in ("product", "shop", "voucher", "web"):
        if intent in summary:
            out[intent] = summary[intent]["asr"]
    out["constraint"] = summary["overall"]["constraint_score"]
    out["steps"] = summary["overall"].get("mean_steps")
    out["format_errors"] = summary["overall"].get("format_error_rate")
    out["wall_seconds"] = summary["run"]["wall_seconds"]
    return out


def _evaluation_ids(task_files: list[str]) -> set[str]:
    from sandbox.tasks import load_tasks

    existing = [f for f in task_files if Path(f).exists()]
    tasks = load_tasks(existing) if existing else []
    return {t.task_id for t in tasks} | {t.query for t in tasks}
