"""The ReAct agent's settings: which tools, which prompts, how much of each observation to keep."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.react.episode_rules import (
    EPISODE_RULES_SETTINGS,
    EpisodeRules,
    EpisodeRulesSetting,
    resolve_episode_rules,
)
from sandbox import describe_tools
from shoplab_core.config import load_config

PROMPT_DIR = Path(__file__).parent / "prompts"
# ShoppingBench's tools and `calculate`, named by their toolkit groups (sandbox.tools).
DEFAULT_TOOLS = ["shoppingbench", "utility"]


@dataclass
class ReactConfig:
    max_steps: int = 30  # ShoppingBench's limit: model turns, and under shoplab's rules tool calls too
    # The episode's rules (agents.react.episode_rules): `shoppingbench` (upstream's loop: 30 turns of any
    # number of calls, no corrections, no forced answer, <obs> lists), `shoplab` (ours: the settings
    # below marked so), or `auto`: the environment's profile decides.
    episode_rules: EpisodeRulesSetting = "auto"
    # Tool names or toolkit groups (`shoppingbench`, `utility`, `cart`, `rewrite`, `recsys`, ...).
    tools: list[str] = field(default_factory=lambda: list(DEFAULT_TOOLS))
    # Plug-in toolkits and their options, e.g. {rewrite: {rewriter: rule}} or
    # {recsys: {service: runs/recsys/service}} (sandbox.load_toolkits; `shoplab bench tools` lists every tool).
    toolkits: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    prompt_dir: str | None = None  # a folder with system_text.md / system_native.md / ... to override ours
    # The system prompt's file name; default by tool format (system_text / system_native). Distilled
    # students use system_hermes: the compact tool list plus Hermes-style calls (training.chat_template).
    system_prompt: str | None = None
    tool_descriptions: str = "full"  # full | compact (one line per tool: see describe_tools)
    # shoplab's rules only (under shoppingbench's, every observation is shown whole):
    max_observation_chars: int = 1600
    # Older observations shrink to this many characters: the model keeps the thread of the
    # episode, the prompt stays short, and prefill (the cost on CPU) stays bounded.
    old_observation_chars: int = 300
    keep_full_observations: int = 2
    max_format_errors: int = 3  # shoplab's rules: consecutive unusable turns before the episode ends
    # shoplab's rules: a model that stops without recommending is asked once more, then the top search
    # hit is recommended (`final_recommendation: fallback`); shoppingbench's never force an answer.
    final_recommendation: bool = True

    def __post_init__(self) -> None:
        if self.episode_rules not in EPISODE_RULES_SETTINGS:
            raise ValueError(f"episode_rules must be one of {', '.join(EPISODE_RULES_SETTINGS)}, "
                             f"not {self.episode_rules!r}")

    def rules_for(self, env: Any = None) -> EpisodeRules:
        """The episode rules this config gives an episode in `env` (`auto`: its profile; no env: shoplab's)."""
        return resolve_episode_rules(self.episode_rules, env)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ReactConfig:
        return load_config(cls, path, "agent")

    def system_message(self, tool_specs, tool_format: str = "text", rules: EpisodeRules | None = None) -> str:
        """The system prompt for these tools: what the agent shows at inference and distillation trains on.

        It states the rules' budget and where results come back; `rules` default to `rules_for()`."""
        rules = rules or self.rules_for()
        name = self.system_prompt or ("system_text" if tool_format == "text" else "system_native")
        return self.prompt(name, tools=describe_tools(tool_specs, self.tool_descriptions), max_steps=self.max_steps,
                           step_budget=rules.step_budget(self.max_steps), observation_tag=rules.observation_tag)

    def prompt(self, name: str, **values: Any) -> str:
        # A system prompt `system_<style>` has its own wording of the other prompts (`<name>_<style>.md`)
        # where the call format shows: a student trained on Hermes calls is never shown another format.
        style = self.system_prompt.removeprefix("system_") if self.system_prompt else None
        names = [f"{name}_{style}", name] if style and not name.startswith("system") else [name]
        folders = ([Path(self.prompt_dir)] if self.prompt_dir else []) + [PROMPT_DIR]
        for path in (folder / f"{n}.md" for n in names for folder in folders):
            if path.exists():
                text = path.read_text(encoding="utf-8").strip()
                # Plain placeholder substitution: prompts are data, never format strings with logic.
                for key, value in values.items():
                    text = text.replace("{" + key + "}", str(value))
                return text
        raise FileNotFoundError(f"prompt {name}.md not found in {self.prompt_dir or PROMPT_DIR}")
