"""The one config system (shoplab_core.config): precedence, `base:`, sections, readable errors, and the CLIs.

Precedence everywhere: dataclass defaults < YAML < --set key=value < explicit flags, and a flag the
user did not pass never overrides the YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest
from typer.testing import CliRunner

from shoplab_cli import app
from shoplab_core.config import ConfigError, load_config, parse_overrides, split_sections

ROOT = Path(__file__).resolve().parents[2]
DISTILLED = ROOT / "configs" / "agents" / "react_smollm2_distilled.yaml"


@dataclass
class Inner:
    lr: float = 0.1
    mode: Literal["fast", "slow"] = "fast"
    modules: str | list[str] = "all-linear"


@dataclass
class Outer:
    name: str = "default"
    steps: int = 1
    seed: int = 0
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=lambda: Inner(lr=0.5))  # a factory default other than Inner's own
    extra: Inner | None = None


def _text(result) -> str:
    """The CLI's output without rich's box drawing and line breaks."""
    return re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


def _yaml(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_precedence_defaults_yaml_set_flags(tmp_path):
    path = _yaml(tmp_path, "name: from_yaml\nsteps: 2\nseed: 2\ninner: {mode: slow}\n")
    assert load_config(Outer) == Outer()
    cfg = load_config(Outer, path)
    assert (cfg.name, cfg.steps, cfg.seed) == ("from_yaml", 2, 2)
    # the YAML merges over the field's default (the factory's lr 0.5, not Inner's 0.1)
    assert cfg.inner == Inner(lr=0.5, mode="slow")
    cfg = load_config(Outer, path, overrides=["steps=3", "seed=3", "inner.lr=1e-4", "tags=[a, b]"])
    assert (cfg.name, cfg.steps, cfg.seed, cfg.tags, cfg.inner.lr) == ("from_yaml", 3, 3, ["a", "b"], 1e-4)
    cfg = load_config(Outer, path, overrides=["steps=3", "seed=3"], flags={"seed": 4, "inner.modules": ["q"]})
    assert (cfg.steps, cfg.seed, cfg.inner.modules) == (3, 4, ["q"])


def test_a_flag_not_given_never_overrides(tmp_path):
    path = _yaml(tmp_path, "steps: 12\n")
    assert load_config(Outer, path, flags={"steps": None, "inner.lr": None}).steps == 12


def test_set_values_parse_as_yaml():
    assert parse_overrides(["a.b=3", "c=1e-4", "d=true", "e=null", "f=[x, y]", "g=runs/x", "h='7'"]) == {
        "a": {"b": 3}, "c": 1e-4, "d": True, "e": None, "f": ["x", "y"], "g": "runs/x", "h": "7"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["steps"])
    assert split_sections(["llm.model=x", "agent.max_steps=5"], ("llm", "agent")) == {
        "llm": ["model=x"], "agent": ["max_steps=5"]}
    with pytest.raises(ConfigError, match="start with one of llm, agent"):
        split_sections(["max_steps=5"], ("llm", "agent"))


def test_unknown_keys_name_the_key_and_the_file(tmp_path):
    path = _yaml(tmp_path, "steps: 2\ninner: {lrr: 0.3}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Outer, path)
    assert str(path) in str(exc.value) and "inner.lrr" in str(exc.value) and "known: lr, mode" in str(exc.value)
    with pytest.raises(ConfigError, match=r"unknown key.*\(stepz\)"):
        load_config(Outer, None, overrides=["stepz=3"])
    with pytest.raises(ConfigError, match=r"extra\.bogus"):
        load_config(Outer, None, overrides=["extra.bogus=1"])  # an Optional nested dataclass is checked too


def test_type_errors_are_readable(tmp_path):
    path = _yaml(tmp_path, "steps: many\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: `steps`: Input should be a valid integer.*'many'"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match=r"`inner\.mode`: Input should be 'fast' or 'slow'"):
        load_config(Outer, None, overrides=["inner.mode=medium"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="a config is a mapping"):
        load_config(Outer, _yaml(tmp_path, "- a\n- b\n", "list.yaml"))


def test_base_inheritance(tmp_path):
    (tmp_path / "sub").mkdir()
    _yaml(tmp_path, "name: parent\nsteps: 5\ninner: {lr: 0.2, mode: slow}\ntags: [a, b]\n", "parent.yaml")
    child = _yaml(tmp_path / "sub", "base: ../parent.yaml\nsteps: 6\ninner: {lr: 0.3}\ntags: [c]\n")
    cfg = load_config(Outer, child, overrides=["seed=9"])
    # mappings merge key by key, lists are replaced; the child's keys win, --set over both
    assert (cfg.name, cfg.steps, cfg.seed, cfg.tags) == ("parent", 6, 9, ["c"])
    assert cfg.inner == Inner(lr=0.3, mode="slow")
    loop = _yaml(tmp_path, "base: loop.yaml\n", "loop.yaml")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Outer, loop)


def test_sections_share_a_file_or_stand_alone(tmp_path):
    from agents.llm import LLMConfig
    from agents.react import ReactConfig

    agent = load_config(ReactConfig, DISTILLED, "agent")
    llm = load_config(LLMConfig, DISTILLED, "llm", overrides=["sampling.temperature=0.5"])
    assert agent.max_steps == 12 and agent.system_prompt == "system_hermes"
    assert llm.backend == "vllm" and llm.sampling.temperature == 0.5 and llm.sampling.max_new_tokens == 160
    alone = _yaml(tmp_path, "max_steps: 7\ntool_descriptions: compact\n")
    assert ReactConfig.from_yaml(alone).max_steps == 7
    only_llm = _yaml(tmp_path, "llm: {backend: openai, model: m}\n", "llm.yaml")
    assert ReactConfig.from_yaml(only_llm) == ReactConfig()  # no agent: section → the defaults
    assert LLMConfig.from_yaml(only_llm, model=None, base_url="http://x/v1").base_url == "http://x/v1"
    with pytest.raises(ConfigError, match=r"\[llm:\].*unknown LLM backend 'nope'"):
        load_config(LLMConfig, only_llm, "llm", overrides=["backend=nope"])  # __post_init__ checks still run


# ------------------------------------------------------------------------------------ through the CLIs


@pytest.fixture
def bench_run(monkeypatch):
    """`shoplab bench run` up to the agent factory: no sandbox, no model; returns what it was given."""
    import agents.llm
    import agents.registry
    import agents.runner
    import sandbox

    seen: dict = {}

    class FakeChat:
        def expect_clients(self, n):
            pass

        def close(self):
            pass

    def fake_make_llm(cfg):
        seen["llm"] = cfg
        return FakeChat()

    def fake_make_agent(name, **kwargs):
        seen["agent"] = kwargs.get("config")
        return SimpleNamespace()

    def fake_run_benchmark(world, tasks, factory, out, config, **kwargs):
        factory()
        seen["run"] = config
        return {"overall": {}}

    monkeypatch.setattr(sandbox.ShoppingWorld, "open",
                        staticmethod(lambda data_dir, **kw: SimpleNamespace(tasks={}, search_mode="bm25")))
    monkeypatch.setattr(agents.llm, "make_llm", fake_make_llm)
    monkeypatch.setattr(agents.registry, "make_agent", fake_make_agent)
    monkeypatch.setattr(agents.runner, "run_benchmark", fake_run_benchmark)

    def invoke(tmp_path, *extra):
        result = CliRunner().invoke(app, ["bench", "run", "--data-dir", str(tmp_path), "--agent", "react",
                                          "--out", str(tmp_path / "run"), *extra])
        return result, seen

    return invoke


def test_bench_run_keeps_the_yaml_max_steps_when_the_flag_is_not_given(bench_run, tmp_path):
    result, seen = bench_run(tmp_path, "--llm-config", str(DISTILLED))
    assert result.exit_code == 0, result.output
    assert seen["agent"].max_steps == 12  # configs/agents/react_smollm2_distilled.yaml, not --max-steps' 30
    assert seen["run"].max_steps == 12
    assert seen["llm"].backend == "vllm" and seen["llm"].sampling.max_new_tokens == 160


def test_bench_run_precedence_yaml_set_flag(bench_run, tmp_path):
    result, seen = bench_run(tmp_path, "--llm-config", str(DISTILLED), "--set", "agent.max_steps=9",
                             "--set", "llm.sampling.temperature=0.7", "--set", "llm.model=from_set")
    assert result.exit_code == 0, result.output
    assert seen["agent"].max_steps == 9 and seen["run"].max_steps == 9
    assert seen["llm"].sampling.temperature == 0.7 and seen["llm"].model == "from_set"
    result, seen = bench_run(tmp_path, "--llm-config", str(DISTILLED), "--set", "agent.max_steps=9",
                             "--max-steps", "5", "--set", "llm.model=from_set", "--model", "from_flag",
                             "--temperature", "0.2")
    assert result.exit_code == 0, result.output
    assert seen["agent"].max_steps == 5 and seen["run"].max_steps == 5
    assert seen["llm"].model == "from_flag" and seen["llm"].sampling.temperature == 0.2
    assert seen["llm"].sampling.max_new_tokens == 160  # the rest of the YAML's sampling section stays


def test_bench_run_without_a_config_uses_the_defaults(bench_run, tmp_path):
    from agents.react import ReactConfig

    result, seen = bench_run(tmp_path)
    assert result.exit_code == 0, result.output
    assert seen["agent"].max_steps == ReactConfig().max_steps == seen["run"].max_steps


def test_bench_run_reports_bad_keys(bench_run, tmp_path):
    result, _ = bench_run(tmp_path, "--llm-config", str(DISTILLED), "--set", "agent.max_stepz=3")
    assert result.exit_code == 2 and "max_stepz" in _text(result)
    result, _ = bench_run(tmp_path, "--set", "max_steps=3")
    assert result.exit_code == 2 and "llm, agent" in _text(result)


def test_recsys_cli_reports_bad_overrides():
    config = ROOT / "recsys_core" / "models" / "sasrec" / "smoke.yaml"
    result = CliRunner().invoke(app, ["recsys", "train", "--config", str(config), "--set", "train.epoch=3"])
    assert result.exit_code == 2 and "train.epoch" in _text(result)


def test_demo_flags_override_only_when_given(monkeypatch, tmp_path):
    pytest.importorskip("gradio")
    import ui.app

    seen = {}
    monkeypatch.setattr(ui.app, "launch_demo", lambda cfg: seen.setdefault("cfg", cfg))
    monkeypatch.setattr("ui.cli._stop_cleanly_on_signals", lambda: None)
    demo_yaml = _yaml(tmp_path, "demo: {port: 9000, concurrency: 2}\nllm: {model: from_yaml}\n")
    result = CliRunner().invoke(app, ["demo", "--config", str(demo_yaml), "--llm-config", str(DISTILLED),
                                      "--set", "demo.concurrency=3", "--port", "9001", "--rewriter", "none"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.demo.port, cfg.demo.concurrency, cfg.demo.rewriter) == (9001, 3, None)
    assert cfg.llm.model == "runs/distill/sft/merged" and cfg.agent.max_steps == 12  # --llm-config over the demo YAML
    assert cfg.demo.host == "127.0.0.1"  # not given: the default stays
