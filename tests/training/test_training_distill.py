"""Training stages on a tiny locally built model: SFT on teacher episodes, step and episode GRPO,
the `shoplab train` CLI (resume after a real kill), and the distillation chain end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from shoplab_cli import app
from tests.tiny_lm import build_tiny_chat_model
from training.distill.pipeline import DISTILL_PROFILE
from training.tool_reward import step_reward, tool_call_correctness

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # trains SFT / GRPO stages and kills a training process
STUDENT = {"system_prompt": "system_hermes", "tool_descriptions": "compact", "max_steps": 8,
           "tools": ["find_product", "view_product_information", "recommend_product", "terminate"],
           "max_observation_chars": 400, "old_observation_chars": 400}


# The tiny student memorises this many teacher episodes, so that the GRPO tests below start from a
# policy that makes real (if imperfect) tool calls when sampled.
MEMORISED = 3


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


# -- step reward (ShoppingBench / ToolRL) ------------------------------------------------------
REF = json.dumps([{"type": "function", "function": {"name": "find_product", "arguments": {
    "q": "rubber wheel", "price": "0-500"}}}])


def _turn(*calls: tuple[str, dict]) -> str:
    return "\n".join("<tool_call>\n" + json.dumps({"name": n, "arguments": a}) + "\n</tool_call>" for n, a in calls)


def test_step_reward_scores_an_exact_call_3_plus_format_and_orders_partial_matches():
    exact = step_reward(_turn(("find_product", {"q": "Rubber  Wheel", "price": "0-500"})) + "<|im_end|>", REF)
    assert exact == {"format": 1.0, "correctness": 3.0}
    wrong_value = step_reward(_turn(("find_product", {"q": "wheel", "price": "0-500"})), REF)["correctness"]
    missing_key = step_reward(_turn(("find_product", {"q": "wheel"})), REF)["correctness"]
    wrong_tool = step_reward(_turn(("terminate", {})), REF)["correctness"]
    assert 3.0 > wrong_value > missing_key > wrong_tool >= -3.0
    nothing = step_reward("I think you should buy a wheel.", REF)
    assert nothing == {"format": 0.0, "correctness": -3.0}


def test_step_reward_format_needs_clean_calls_and_ids_compare_as_sets():
    assert step_reward("Sure! " + _turn(("find_product", {"q": "rubber wheel", "price": "0-500"})), REF)["format"] == 0
    assert step_reward('<tool_call>\n{"name": "find_product", "arguments": {"q": </tool_call>', REF)["format"] == 0
    gold = [("recommend_product", {"product_ids": "111111,222222"})]
    assert tool_call_correctness(gold, [("recommend_product", {"product_ids": "222222, 111111"})]) == 3.0
    assert tool_call_correctness(gold, [("recommend_product", {"product_ids": "111111"})]) < 3.0
    # An extra call costs name credit: recommending and searching again is not the teacher's turn.
    both = [("recommend_product", {"product_ids": "111111,222222"}), ("find_product", {"q": "x"})]
    assert tool_call_correctness(gold, both) < 3.0


# -- data and a tiny student -------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_run(world, similarity, tmp_path_factory) -> Path:
    from agents.registry import make_agent
    from agents.runner import RunConfig, run_benchmark
    from sandbox.task_generator import TaskGeneratorConfig, generate_tasks

    tasks = generate_tasks(world, TaskGeneratorConfig(n_product=12, pool=2000, seed=3))
    out = tmp_path_factory.mktemp("teacher")
    run_benchmark(world, tasks, lambda: make_agent("teacher", similarity=similarity), out,
                  RunConfig(agent="teacher", profile=DISTILL_PROFILE), similarity=similarity,
                  progress=False)
    with (out / "tasks.jsonl").open("w") as fh:
        for t in tasks:
            fh.write(json.dumps(t.to_shoppingbench()) + "\n")
    return out


@pytest.fixture(scope="module")
def distill_data(teacher_run):
    from training.distill.data import build_distill_datasets
    from training.distill.pipeline import StudentAgentSettings

    settings = StudentAgentSettings(**STUDENT)
    from sandbox import TOOLS

    sft, steps, report = build_distill_datasets([teacher_run], settings.react_config(),
                                                [TOOLS[n] for n in settings.tools])
    assert report.tasks_kept >= 6, report
    return sft, steps


@pytest.fixture(scope="module")
def tiny_student(distill_data, tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    from training.chat_template import use_tool_chat_template

    sft, _ = distill_data
    probe = tmp_path_factory.mktemp("probe")
    base = build_tiny_chat_model(probe, ["<tool_call> </tool_call> product_ids"], vocab_size=300)
    tok = use_tool_chat_template(AutoTokenizer.from_pretrained(base))
    corpus = [tok.apply_chat_template(json.loads(json.dumps(m)), tokenize=False) for m in sft["messages"]] * 2
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny_student"), corpus, vocab_size=1200, max_positions=2048,
                                 hidden_size=128)


def _assistant_loss(model_dir: Path, messages: list[list[dict]]) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.chat_template import use_tool_chat_template

    tok = use_tool_chat_template(AutoTokenizer.from_pretrained(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for conv in messages:
            enc = tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
            ids = torch.tensor([enc["input_ids"]])
            labels = torch.where(torch.tensor([enc["assistant_masks"]]) == 1, ids, torch.full_like(ids, -100))
            n = int((labels[0, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / count


@pytest.fixture(scope="module")
def sft_stage(tiny_student, distill_data, tmp_path_factory) -> Path:
    from training.stage_config import SFTStageConfig
    from training.stages import run_sft_stage

    sft, _ = distill_data
    # Full fine-tuning: a tiny random model must learn the call format well enough to make real
    # tool calls in the GRPO tests below. (LoRA is what the CLI tests train.)
    cfg = SFTStageConfig(max_steps=120, batch_size=2, learning_rate=3e-3, max_length=1024, tool_chat_template=True,
                         save_steps=20, warmup_ratio=0.0, full_finetune=True)
    memorised = sft.select(range(MEMORISED)).select_columns(["messages"])
    return run_sft_stage(str(tiny_student), memorised, tmp_path_factory.mktemp("sft") / "sft", cfg, merge=True)


def test_sft_on_teacher_episodes_lowers_the_assistant_loss_and_saves_loadable_stages(sft_stage, tiny_student,
                                                                                      distill_data):
    from transformers import AutoTokenizer

    from agents.llm.chat_templates import TOOL_CHAT_TEMPLATE

    sft, _ = distill_data
    fixed = [json.loads(json.dumps(m)) for m in sft["messages"][:MEMORISED]]
    info = json.loads((sft_stage / "stage.json").read_text())
    assert info["metrics"]["steps"] == 120
    merged = Path(info["merged"])
    before, after = _assistant_loss(tiny_student, fixed), _assistant_loss(merged, fixed)
    assert after < 0.5 * before, (before, after)
    # The saved tokenizer carries the tool template the student was trained with.
    assert AutoTokenizer.from_pretrained(merged).chat_template == TOOL_CHAT_TEMPLATE


def test_step_grpo_runs_on_step_prompts_and_updates_the_policy(sft_stage, distill_data, tmp_path):
    from safetensors.torch import load_file

    from training.stage_config import GRPOStageConfig, LoraSettings
    from training.stages import run_grpo_stage, stage_policy_model
    from training.tool_reward import format_reward, tool_call_reward

    sft, steps = distill_data
    seen = set(sft["task_id"][:MEMORISED])
    steps = steps.filter(lambda r: r["task_id"] in seen)
    cfg = GRPOStageConfig(max_steps=3, max_completion_length=48, temperature=1.5, learning_rate=1e-3, bf16=False,
                          save_steps=3)
    out = run_grpo_stage(stage_policy_model(sft_stage), steps.select_columns(["prompt", "reference"]), tmp_path / "g",
                         cfg, reward_funcs=[format_reward, tool_call_reward], lora=LoraSettings(r=4, alpha=8),
                         merge=False)
    metrics = json.loads((out / "stage.json").read_text())["metrics"]
    assert metrics["steps"] == 3 and len(metrics["rewards"]) == 3
    components = metrics["reward_components"][0]
    assert {"rewards/format_reward/mean", "rewards/tool_call_reward/mean"} <= set(components)
    assert all(-3.0 <= r <= 4.0 for r in metrics["rewards"])
    assert any(s > 0 for s in metrics["reward_std"]), json.dumps(metrics)
    lora_b = [v for k, v in load_file(out / "adapter" / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().sum()) > 0 for v in lora_b), "the adapter never moved from its init"


# -- episode GRPO: the sandbox as TRL's environment_factory --------------------------------------
def test_shopping_tool_env_scores_the_episode_and_keeps_bad_calls_alive(world, similarity):
    from sandbox.task_generator import TaskGeneratorConfig, generate_tasks
    from training.episode_env import environment_factory

    task = generate_tasks(world, TaskGeneratorConfig(n_product=1, pool=500, seed=1))[0]
    env = environment_factory(world, [task], similarity, max_observation_chars=300)()
    assert env.find_product(q="x").startswith("Error")  # before reset: an error, not an exception
    with pytest.raises(KeyError):
        env.reset(task_id="no-such-task")
    env.reset(task_id=task.task_id, prompt=[])
    assert env.get_reward() == 0.0
    assert "page" in env.find_product(q="anything", page=99)
    assert len(env.find_product(q=task.reward[0].title[0])) <= 300 + 40
    gold = task.reward[0].product_id
    assert gold in env.recommend_product(product_ids=gold)
    env.terminate()
    assert env.get_reward() == pytest.approx(1.0)
    env.reset(task_id=task.task_id)
    assert env.get_reward() == 0.0  # reset starts a fresh episode


def test_episode_grpo_rolls_out_real_tool_calls_in_the_sandbox(sft_stage, world, similarity, teacher_run, distill_data,
                                                              tmp_path):
    from sandbox.tasks import load_task_file
    from training.distill.pipeline import StudentAgentSettings, episode_prompt_dataset
    from training.episode_env import environment_factory
    from training.stage_config import GRPOStageConfig, LoraSettings
    from training.stages import run_grpo_stage, stage_policy_model

    seen = set(distill_data[0]["task_id"][:MEMORISED])
    tasks = [t for t in load_task_file(teacher_run / "tasks.jsonl") if t.task_id in seen]
    factory = environment_factory(world, tasks, similarity, max_steps=6, max_observation_chars=400)
    cfg = GRPOStageConfig(max_steps=2, max_completion_length=200, max_tool_calling_iterations=2, temperature=0.3,
                          beta=0.0, bf16=False, save_steps=2)
    out = run_grpo_stage(stage_policy_model(sft_stage), episode_prompt_dataset(tasks, StudentAgentSettings(**STUDENT)),
                         tmp_path / "ep", cfg, environment_factory=factory, lora=LoraSettings(r=4, alpha=8),
                         merge=False)
    info = json.loads((out / "stage.json").read_text())["metrics"]
    assert info["steps"] == 2 and all(0.0 <= r <= 1.0 for r in info["rewards"])
    assert "rewards/ShoppingToolEnv/mean" in info["reward_components"][0]
    state = json.loads(sorted(out.glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    calls = [h["tools/call_frequency"] for h in state["log_history"] if "tools/call_frequency" in h]
    assert calls and max(calls) > 0, "the student made no tool call in any rollout"


# -- the CLI ---------------------------------------------------------------------------------------
def _sft_job(tmp_path: Path, tiny_student: Path, dataset: Path, max_steps: int) -> Path:
    job = {"model": str(tiny_student), "dataset": str(dataset), "out_dir": str(tmp_path / "sft_cli"), "merge": False,
           "lora": {"r": 4, "alpha": 8}, "sft": {"max_steps": max_steps, "batch_size": 1, "save_steps": 2,
                                                "learning_rate": 1e-3, "max_length": 1024,
                                                "tool_chat_template": True}}
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_train_sft_resumes_after_a_kill_with_the_same_step_count(tiny_student, distill_data, tmp_path):
    sft, _ = distill_data
    data = tmp_path / "episodes"
    sft.select_columns(["messages"]).save_to_disk(str(data))
    config = _sft_job(tmp_path, tiny_student, data, max_steps=16)
    out = tmp_path / "sft_cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "shoplab_cli", "train", "sft", "--config", str(config)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint-4" / "trainer_state.json").exists():
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    checkpoints = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert checkpoints and checkpoints[-1] < 16 and not (out / "stage.json").exists(), "not killed mid-run"
    result = _ok(CliRunner().invoke(app, ["train", "sft", "--config", str(config), "--resume"]))
    metrics = json.loads((out / "stage.json").read_text())["metrics"]
    assert metrics["steps"] == 16, result.output
    assert metrics["resumed_from"] and int(metrics["resumed_from"].rsplit("-", 1)[1]) >= checkpoints[-1] - 2
    assert (out / "checkpoint-16").is_dir()
    # The adapter loads onto the base with PEFT (as vLLM's LoRARequest reads it).
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_student), out / "adapter")


def test_train_cli_reports_bad_configs_and_data_as_errors(tiny_student, tmp_path):
    bad = _sft_job(tmp_path, tiny_student, tmp_path / "missing.jsonl", max_steps=2)
    result = CliRunner().invoke(app, ["train", "sft", "--config", str(bad)])
    assert result.exit_code == 2 and "missing.jsonl" in result.output
    result = CliRunner().invoke(app, ["train", "sft", "--config", str(bad), "--set", "sft.no_such_key=1"])
    assert result.exit_code == 2 and "no_such_key" in result.output
    result = CliRunner().invoke(app, ["train", "grpo", "--config", str(bad), "--set", "grpo_reward=bogus"])
    assert result.exit_code == 2 and "bogus" in result.output


def test_train_dpo_lowers_the_preference_loss(tiny_student, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"find rubber wheel {i}"}],
             "chosen": [{"role": "assistant", "content": "<tool_call>find_product</tool_call>"}],
             "rejected": [{"role": "assistant", "content": "I cannot help."}]} for i in range(8)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    job = {"model": str(tiny_student), "dataset": str(data), "out_dir": str(tmp_path / "dpo"), "merge": False,
           "lora": {"r": 4, "alpha": 8}, "dpo": {"max_steps": 12, "batch_size": 4, "learning_rate": 5e-3,
                                                "max_length": 128}}
    config = tmp_path / "dpo.yaml"
    config.write_text(yaml.safe_dump(job))
    _ok(CliRunner().invoke(app, ["train", "dpo", "--config", str(config)]))
    metrics = json.loads((tmp_path / "dpo" / "stage.json").read_text())["metrics"]
    assert metrics["steps"] == 12 and metrics["last_logged_loss"] < metrics["first_logged_loss"]


def test_distill_chain_runs_end_to_end_from_the_cli(small_sandbox, tiny_student, tmp_path):
    cfg = {
        "student": str(tiny_student), "data_dir": str(small_sandbox), "run_dir": str(tmp_path / "run"),
        "teacher": {"n_product": 10, "n_shop": 2},
        "student_agent": STUDENT,
        "data": {"max_tokens": 1200, "max_examples": 8, "step_prompts": 8},
        "lora": {"r": 4, "alpha": 8},
        "sft": {"max_steps": 4, "batch_size": 1, "grad_accum": 1, "learning_rate": 1e-3, "max_length": 1200,
                "tool_chat_template": True, "bf16": False, "save_steps": 2},
        "grpo_step": {"max_steps": 1, "max_completion_length": 24, "bf16": False},
        "grpo_episode": {"max_steps": 1, "max_completion_length": 64, "max_tool_calling_iterations": 1,
                         "bf16": False, "tasks": 2},
        "eval": {"limit_per_intent": 1, "backend": "transformers", "max_new_tokens": 24, "parallel": 2,
                 "stages": ["sft"]},
    }
    config = tmp_path / "distill.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = _ok(CliRunner().invoke(app, ["train", "distill", "--config", str(config)]))
    run = tmp_path / "run"
    report = json.loads((run / "data" / "report.json").read_text())
    assert report["tasks_kept"] > 0 and 0 < report["sft_examples"] <= 8
    for stage in ("sft", "grpo_step", "grpo_episode"):
        assert (run / stage / "stage.json").exists(), stage
    table = json.loads((run / "eval" / "table.json").read_text())
    assert set(table) == {"heuristic", "oracle", "sft"} and table["oracle"]["overall"] == 1.0
    assert table["sft"]["n"] == 4 and "ASR on the dev tasks" in result.output
    # Training tasks never include an evaluation task.
    from sandbox.tasks import load_task_file

    dev = {t.query for f in (ROOT / "data" / "shoppingbench").glob("*.jsonl") for t in load_task_file(f)}
    assert not dev & {t.query for t in load_task_file(run / "train_tasks.jsonl")}
    # A second invocation skips finished steps instead of redoing them.
    again = _ok(CliRunner().invoke(app, ["train", "distill", "--config", str(config), "--steps", "sft"]))
    assert "done already" in again.output
    # A warm-started second pass draws the episodes the first pass of the same seed did not see.
    from datasets import load_from_disk

    from training.distill.pipeline import DistillConfig, DistillPipeline

    def users(skip: int, max_examples: int) -> list[str]:
        second = DistillConfig.from_yaml(config, overrides=[f"run_dir={tmp_path / f'skip{skip}'}",
                                                            f"teacher.run_dirs=[{run / 'teacher'}]",
                                                            f"data.skip_examples={skip}",
                                                            f"data.max_examples={max_examples}"])
        DistillPipeline(second, progress=False).data()
        return [m[1]["content"] for m in load_from_disk(str(second.path("data", "sft")))["messages"]]

    n = report["sft_examples"]
    first, rest = users(0, n // 2), users(n // 2, n - n // 2)
    assert first and rest and not set(first) & set(rest) and len(first) + len(rest) == n
    with pytest.raises(ValueError, match="leaves none"):
        users(n, 4)
    # ... or, by task, the episodes no earlier pass trained on.
    later = DistillConfig.from_yaml(config, overrides=[f"run_dir={tmp_path / 'later'}",
                                                       f"teacher.run_dirs=[{run / 'teacher'}]", "data.max_examples=-1",
                                                       f"data.exclude_tasks_of=[{tmp_path / 'skip0' / 'data' / 'sft'}]"])
    DistillPipeline(later, progress=False).data()
    left = load_from_disk(str(later.path("data", "sft")))
    assert len(left) and not set(left["task_id"]) & set(load_from_disk(str(tmp_path / "skip0" / "data" / "sft"))["task_id"])
    # Error-recovery turns: a failed first search, answered by the real tool, seen but never trained on.
    recovering = DistillConfig.from_yaml(config, overrides=[f"run_dir={tmp_path / 'recovery'}",
                                                            f"teacher.run_dirs=[{run / 'teacher'}]",
                                                            "data.error_recovery=1.0"])
    info = DistillPipeline(recovering, progress=False).data()
    assert info["recovery_turns"] > 0
    rows = [r for r in load_from_disk(str(recovering.path("data", "sft"))) if r["recovery"]]
    assert rows and {r["recovery"] for r in rows} <= {"price_bound_without_dash", "price_direction_flipped",
                                                     "price_with_currency", "unasked_service", "service_left_out"}
    from shoplab_core.models import load_tokenizer
    from training.chat_template import use_tool_chat_template

    tokenizer = use_tool_chat_template(load_tokenizer(str(tiny_student)))
    for row in rows[:3]:
        messages = row["messages"]
        first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
        mistake, answer, correct = messages[first], messages[first + 1], messages[first + 2]
        assert mistake["no_loss"] and not correct["no_loss"] and answer["role"] == "tool"
        assert json.loads(mistake["tool_calls"][0]["function"]["arguments"]) != json.loads(
            correct["tool_calls"][0]["function"]["arguments"])
        assert answer["content"].startswith(("[", "Error", "No products"))  # the sandbox's own answer
        out = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
        trained = tokenizer.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m])
        assert mistake["tool_calls"][0]["function"]["arguments"] not in trained
        assert correct["tool_calls"][0]["function"]["arguments"] in trained


def test_distill_refuses_teacher_runs_on_evaluation_tasks(small_sandbox, world, tmp_path):
    from training.distill.pipeline import DistillConfig, DistillPipeline

    dev_task = next(iter(world.tasks.values()))
    run = tmp_path / "llm_teacher"
    run.mkdir()
    (run / "results.jsonl").write_text(json.dumps({"task_id": dev_task.task_id, "success": True}) + "\n")
    cfg = DistillConfig(data_dir=str(small_sandbox), run_dir=str(tmp_path / "d"))
    cfg.teacher.run_dirs = [str(run)]
    with pytest.raises(ValueError, match="evaluation task"):
        DistillPipeline(cfg).data()
    cfg.teacher.run_dirs = []
    with pytest.raises(FileNotFoundError, match="no teacher episodes"):
        DistillPipeline(cfg).data()
