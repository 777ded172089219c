"""The tool chat template (`agents.llm.chat_templates`) on a tokenizer, with TRL's response parser."""

from __future__ import annotations

from typing import Any

from agents.llm.chat_templates import TOOL_CHAT_TEMPLATE
from shoplab_core.models import ensure_pad_token

__all__ = ["TOOL_CHAT_TEMPLATE", "use_tool_chat_template"]


def use_tool_chat_template(tokenizer: Any) -> Any:
    """Give a ChatML tokenizer the tool template and the matching response parser; returns it."""
    missing = [t for t in ("<|im_start|>", "<|im_end|>") if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        raise ValueError(f"the tool chat template needs a ChatML tokenizer; this one lacks {missing}")
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    ensure_pad_token(tokenizer)
    from trl.chat_template_utils import _SUPPORTS_RESPONSE_TEMPLATE, qwen3_schema, qwen3_template

    if _SUPPORTS_RESPONSE_TEMPLATE:
        tokenizer.response_template = qwen3_template
    else:
        tokenizer.response_schema = qwen3_schema
    return tokenizer
