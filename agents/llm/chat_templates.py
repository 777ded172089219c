"""A tool-calling, training-compatible chat template for ChatML models such as SmolLM2.

SmolLM2-135M-Instruct ships a plain ChatML template: no tool calls, no tool role, and no
`{% generation %}` markers, so TRL can neither mask the loss to assistant turns nor run its
tool-calling loop. SmolLM2 uses the same special tokens as Qwen2.5 (`<|im_start|>`, `<|im_end|>`),
so this template renders tool calls and tool results exactly as Qwen2.5 does (Hermes style):

    <|im_start|>assistant
    <tool_call>
    {"name": "find_product", "arguments": {"q": "rubber wheel"}}
    </tool_call><|im_end|>
    <|im_start|>user
    <tool_response>
    [...]
    </tool_response><|im_end|>

and wraps every assistant turn, its closing `<|im_end|>` included, in `{% generation %}` markers
(SFT `assistant_only_loss`; the model is trained to stop). It is prefix-preserving (TRL's GRPO
tool loop requires that), and TRL's Qwen3 response template parses its output back into tool
calls. The tool list is not rendered from `tools=`: the system prompt carries a compact list
(`sandbox.describe_tools`), so SFT data, GRPO prompts and inference all show the model the
same words, and a long JSON schema does not eat a CPU's token budget.
"""

from __future__ import annotations

# An assistant turn's text, closing `<|im_end|>` included.
_ASSISTANT_TURN = (
    "{%- if message.content %}{{- message.content }}{%- endif %}"
    "{%- if message.tool_calls %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- set fn = tool_call.function if tool_call.function is defined else tool_call %}"
    "{%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + fn.name + '\", \"arguments\": ' }}"
    "{%- if fn.arguments is string %}{{- fn.arguments }}{%- else %}{{- fn.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>' }}"
)

TOOL_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'system' or message.role == 'user' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    # A turn marked `no_loss` (a training conversation's deliberate mistake, training.distill.data) is
    # rendered the same but left outside the generation markers: the model sees it, never learns it.
    "{%- if message.no_loss %}" + _ASSISTANT_TURN + "{%- else %}"
    "{%- generation %}" + _ASSISTANT_TURN + "{%- endgeneration %}"
    "{%- endif %}"
    "{{- '\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CHAT_TEMPLATES = {"tool": TOOL_CHAT_TEMPLATE}


def resolve_chat_template(name: str | None) -> str | None:
    """A named template (`tool`), a path to a .jinja file, or None for the model's own."""
    if not name:
        return None
    if name in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[name]
    from pathlib import Path

    path = Path(name)
    if not path.is_file():
        raise ValueError(f"chat_template {name!r} is neither one of {sorted(CHAT_TEMPLATES)} nor a file")
    return path.read_text(encoding="utf-8")
