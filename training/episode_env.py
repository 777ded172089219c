"""The sandbox as a TRL `environment_factory`: whole multi-turn episodes inside GRPO rollouts.

`GRPOTrainer(environment_factory=...)` builds one instance per rollout (pooled, then `reset`
with the dataset row), exposes its public methods as tools, runs the model's tool calls on it
turn after turn, and calls `get_reward()` when the rollout ends. Here each instance wraps a
`ShoppingEnv` for the row's task: the tools are the sandbox's own (same validation, same readable
errors), their observations are shortened as the student's agent shortens them, and the reward is
the sandbox scorer's verdict on the episode.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from agents.react.graph import shorten_observation
from sandbox import ShoppingEnv, ShoppingWorld
from sandbox.scorer import TitleSimilarity
from sandbox.tasks import Task


class ShoppingToolEnv:
    """One rollout's shopping episode. Public methods are the tools the model may call."""

    def __init__(self, world: ShoppingWorld, tasks: dict[str, Task], similarity: TitleSimilarity,
                 max_steps: int = 12, max_observation_chars: int = 600, success_weight: float = 0.5):
        self._world = world
        self._tasks = tasks
        self._similarity = similarity
        self._max_steps = max_steps
        self._max_chars = max_observation_chars
        self._success_weight = success_weight
        self._env: ShoppingEnv | None = None

    def reset(self, task_id: str, **_: Any) -> None:
        """Start the episode of the row's task; the prompt already holds the instruction."""
        if task_id not in self._tasks:
            raise KeyError(f"task {task_id} is not among the environment's training tasks")
        self._env = ShoppingEnv(self._world, self._tasks[task_id], max_steps=self._max_steps,
                                tools=["find_product", "view_product_information", "recommend_product", "terminate"])
        self._env.reset()
        return None

    def _step(self, tool: str, arguments: dict[str, Any]) -> str:
        if self._env is None:
            return "Error: the episode has not started"
        arguments = {k: v for k, v in arguments.items() if v not in (None, "")}
        return shorten_observation(self._env.step(tool, arguments).observation, self._max_chars)

    def find_product(self, q: str, page: int = 1, price: str = "", service: str = "", sort: str = "default",
                     shop_id: str = "") -> str:
        """Search for products and return up to 10 products, each with product_id, shop_id, title, price, service and sold_count.

        Args:
            q: The query used to search for products.
            page: Result page, 1 to 5.
            price: Price range such as "0-100" or "1000-".
            service: Comma-separated services: official, freeShipping, COD, flashsale.
            sort: default, priceasc, pricedesc or order.
            shop_id: Only search within this shop.
        """
        return self._step("find_product", {"q": q, "page": page, "price": price, "service": service, "sort": sort,
                                           "shop_id": shop_id})

    def view_product_information(self, product_ids: str) -> str:
        """Given product_ids, fetch their descriptions, SKU options and attributes.

        Args:
            product_ids: A comma-separated list of product_ids.
        """
        return self._step("view_product_information", {"product_ids": product_ids})

    def recommend_product(self, product_ids: str) -> str:
        """Recommend products to the user. The last recommendation is the answer.

        Args:
            product_ids: A comma-separated list of product_ids.
        """
        return self._step("recommend_product", {"product_ids": product_ids})

    def terminate(self, status: str = "success") -> str:
        """End the conversation once the task is done or cannot be done.

        Args:
            status: Whether the task was accomplished.
        """
        return self._step("terminate", {"status": status})

    def get_reward(self) -> float:
        """The sandbox's score of the episode: success (0/1) and the rule score, weighted."""
        if self._env is None:
            return 0.0
        score = self._env.score(self._similarity)
        w = self._success_weight
        return w * float(score.success) + (1 - w) * float(score.constraint_score)


def environment_factory(world: ShoppingWorld, tasks: list[Task], similarity: TitleSimilarity,
                        **kwargs: Any) -> Callable[[], ShoppingToolEnv]:
    """What `GRPOTrainer(environment_factory=...)` takes: a no-argument constructor."""
    return partial(ShoppingToolEnv, world, {t.task_id: t for t in tasks}, similarity, **kwargs)
