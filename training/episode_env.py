"""The sandbox as a TRL `environment_factory`: whole multi-turn episodes inside GRPO rollouts.

`GRPOTrainer(environment_factory=...)` builds one instance per rollout (pooled, then `reset`
with the dataset row), exposes its public methods as tools, runs the model's tool calls on it
turn after turn, and calls `get_reward()` when the rollout ends. Here each instance wraps a
`ShoppingEnv` for the row's task: the tools are the sandbox's own (same validation, same readable
errors), their observations are shortened as the student's agent shortens them, and the reward is
the sandbox scorer's verdict on the episode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from agents.react.graph import shorten_observation
from sandbox import ShoppingEnv, ShoppingWorld, Toolkit, tool_specs, trl_environment_class
from sandbox.scorer import TitleSimilarity
from sandbox.tasks import Task

DEFAULT_EPISODE_TOOLS = ["shoppingbench"]  # ShoppingBench's four tools, as the distilled student has them


class _EpisodeBase:
    """One rollout's shopping episode; the subclass made by `tool_env_class` adds the tool methods."""

    def __init__(self, world: ShoppingWorld, tasks: dict[str, Task], similarity: TitleSimilarity,
                 max_steps: int = 12, max_observation_chars: int = 600, success_weight: float = 0.5,
                 tools: list[str] | None = None, toolkits: Sequence[Toolkit] = ()):
        self._world = world
        self._tasks = tasks
        self._similarity = similarity
        self._max_steps = max_steps
        self._max_chars = max_observation_chars
        self._success_weight = success_weight
        self._tools = list(tools or DEFAULT_EPISODE_TOOLS)
        self._toolkits = tuple(toolkits)
        self._env: ShoppingEnv | None = None

    def reset(self, task_id: str, **_: Any) -> None:
        """Start the episode of the row's task; the prompt already holds the instruction."""
        if task_id not in self._tasks:
            raise KeyError(f"task {task_id} is not among the environment's training tasks")
        self._env = ShoppingEnv(self._world, self._tasks[task_id], max_steps=self._max_steps, tools=self._tools,
                                toolkits=self._toolkits)
        self._env.reset()
        return None

    def _step(self, tool: str, arguments: dict[str, Any]) -> str:
        if self._env is None:
            return "Error: the episode has not started"
        arguments = {k: v for k, v in arguments.items() if v not in (None, "")}
        return shorten_observation(self._env.step(tool, arguments).observation, self._max_chars)

    def get_reward(self) -> float:
        """The sandbox's score of the episode: success (0/1) and the rule score, weighted."""
        if self._env is None:
            return 0.0
        score = self._env.score(self._similarity)
        w = self._success_weight
        return w * float(score.success) + (1 - w) * float(score.constraint_score)


def tool_env_class(tools: list[str] | None = None, toolkits: Sequence[Toolkit] = ()) -> type:
    """The episode class for these tools: its public methods are generated from the tools' own
    declarations (`sandbox.trl_environment_class`), so TRL sees exactly what the agents see."""
    methods = trl_environment_class(tool_specs(list(tools or DEFAULT_EPISODE_TOOLS), toolkits))
    return type("ShoppingToolEnv", (_EpisodeBase, methods), {"__doc__": _EpisodeBase.__doc__})


ShoppingToolEnv = tool_env_class()


def environment_factory(world: ShoppingWorld, tasks: list[Task], similarity: TitleSimilarity,
                        tools: list[str] | None = None, toolkits: Sequence[Toolkit] = (),
                        **kwargs: Any) -> Callable[[], Any]:
    """What `GRPOTrainer(environment_factory=...)` takes: a no-argument constructor."""
    cls = tool_env_class(tools, toolkits)
    return partial(cls, world, {t.task_id: t for t in tasks}, similarity, tools=tools, toolkits=toolkits, **kwargs)
