"""The instructions of BEQUE's multi-instruction SFT, as chat messages (one short system line).

Prompts are short on purpose: on a CPU every prompt token is paid for in training and decoding.
"""

from __future__ import annotations

SYSTEM = "You write product search queries."
TASKS: dict[str, str] = {
    "rewrite": "Rewrite as a product search query: {query}",
    "quality": "Request: {query}\nSearch query: {rewrite}\nDoes this query find what the request means? Yes or No.",
    "title": "Write the title of a product that matches: {query}",
    "cot": "Explain briefly, then rewrite as a product search query: {query}",
}


def prompt_messages(task: str, **fields: str) -> list[dict[str, str]]:
    if task not in TASKS:
        raise ValueError(f"unknown instruction {task!r}; known: {', '.join(TASKS)}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TASKS[task].format(**fields)}]


def cot_answer(query_words: list[str], dropped: list[str], rewrite: str) -> str:
    """A short template reasoning trace, then the rewrite after "; rewrite:" (BEQUE's CoT task)."""
    keep = ", ".join(query_words[:6]) or "the product words"
    drop = ", ".join(dropped[:5]) or "nothing"
    return f"product words: {keep}; drop: {drop}; rewrite: {rewrite}"
