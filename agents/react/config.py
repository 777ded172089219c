"""The ReAct agent's settings: which tools, which prompts, how much of each observation to keep."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import describe_tools
from shoplab_core.config import load_config

PROMPT_DIR = Path(__file__).parent / "prompts"
# ShoppingBench's tools and `calculate`, named by their toolkit groups (sandbox.tools).
DEFAULT_TOOLS = ["shoppingbench", "utility"]


@dataclass
class ReactConfig:
    max_steps: int = 30  # ShoppingBench's limit, on both model turns and tool calls
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
    max_observation_chars: int = 1600
    # Older observations shrink to this many characters: the model keeps the thread of the
    # episode, the prompt stays short, and prefill (the cost on CPU) stays bounded.
    old_observation_chars: int = 300
    keep_full_observations: int = 2
    max_format_errors: int = 3  # consecutive unusable turns before the episode ends
    final_recommendation: bool = True

    @classmethod
    def from_yaml(cls, path: str | Path) -> ReactConfig:
        return load_config(cls, path, "agent")

    def system_message(self, tool_specs, tool_format: str = "text") -> str:
        """The system prompt for these tools: what the agent shows at inference and distillation trains on."""
        name = self.system_prompt or ("system_text" if tool_format == "text" else "system_native")
        return self.prompt(name, tools=describe_tools(tool_specs, self.tool_descriptions), max_steps=self.max_steps)

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
