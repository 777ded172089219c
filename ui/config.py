"""What the demo serves: which sandbox, which agent and model, which rewriter, how many users at once.

A demo YAML has up to three sections: `llm:` and `agent:` exactly as in `configs/agents/*.yaml`
(so any benchmark agent config runs in the demo), and `demo:` for the fields below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agents.llm import LLMConfig
from agents.react import ReactConfig
from agents.react.config import DEFAULT_TOOLS
from shoplab_core.config import load_config

CART_GROUP = "cart"  # sandbox.CartTools: the chat's agent shops into the shopper's cart
DEMO_TOOLS = [*DEFAULT_TOOLS, CART_GROUP]


@dataclass
class DemoSettings:
    data_dir: str = "runs/sandbox"
    host: str = "127.0.0.1"
    port: int = 7860
    # Episodes running at once across all users; further requests wait in Gradio's queue.
    concurrency: int = 4
    max_queue: int = 64
    # Browser tabs whose cart and chat are kept; past this the least recently used tab's are dropped.
    max_sessions: int = 1000
    # A closed tab's cart and chat are kept this long (a network blip reads as a close; the tab comes back).
    closed_tab_ttl_s: float = 3600.0
    # `rule`, a trained rewrite stage folder (runs/rewrite/align_pro), or null for no rewrite panel.
    rewriter: str | None = "rule"
    rewrite_hits: int = 5  # products shown for the original query and for each rewrite
    # Vouchers in a chat shopper's wallet: the platform vouchers of the sandbox with the lowest thresholds.
    wallet_size: int = 3
    budget: float | None = None  # a chat shopper's default budget (editable in the cart panel)
    tasks_per_intent: int = 30  # benchmark tasks offered per intent
    max_steps: int = 12  # default of the settings slider; a task episode may raise it to the agent's max
    history_turns: int = 3  # earlier chat exchanges the agent sees
    # The Runs tab shows the finished runs (`shoplab bench run --out`) found under this folder; only those.
    runs_dir: str = "runs"


@dataclass
class DemoConfig:
    demo: DemoSettings = field(default_factory=DemoSettings)
    llm: LLMConfig = field(default_factory=LLMConfig)
    agent: ReactConfig = field(default_factory=lambda: ReactConfig(tools=list(DEMO_TOOLS)))

    @classmethod
    def from_yaml(cls, path: str | Path) -> DemoConfig:
        """The file's demo:/llm:/agent: sections over the defaults (an agent without `tools` gets DEMO_TOOLS)."""
        return load_config(cls, path)

    def use_agent_config(self, path: str | Path) -> None:
        """Serve a benchmark agent config (`configs/agents/*.yaml`): its llm: and agent: sections.

        A config that keeps ShoppingBench's default tools gains the cart tools; one that lists its own
        tools (a distilled student trained on four) keeps exactly those.
        """
        self.llm = LLMConfig.from_yaml(path)
        agent = ReactConfig.from_yaml(path)
        if agent.tools == ReactConfig().tools:
            agent.tools = list(DEMO_TOOLS)
        self.agent = agent
