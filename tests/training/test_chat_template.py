"""The tool-calling ChatML template (`training.chat_template`) that distilled students train and run with.

Checked with TRL's own utilities, on a BPE tokenizer trained here (SmolLM2's special tokens, no weights):
what SFT masks, what GRPO's tool loop needs, and that the ReAct agent reads back what the template writes.
"""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from trl.chat_template_utils import (
    is_chat_template_prefix_preserving,
    is_chat_template_stop_token_trained,
    parse_response,
    supports_tool_calling,
)

from agents.react.parsing import parse_native_turn
from training.chat_template import TOOL_CHAT_TEMPLATE, use_tool_chat_template

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = ['<tool_call>\n{"name": "find_product", "arguments": {"q": "rubber wheel"}}\n</tool_call>',
          "<tool_response>\n[]\n</tool_response>", "system user assistant recommend_product terminate"]


def tiny_tokenizer(specials: list[str] | None = None, eos: str = "<|im_end|>", pad: str | None = "<|endoftext|>",
                   unk: str | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in milliseconds (as tests/tiny_lm.py does, without the model)."""
    specials = CHATML_SPECIALS if specials is None else specials
    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token=eos, pad_token=pad, unk_token=unk)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return use_tool_chat_template(tiny_tokenizer())


def _call(name: str, arguments) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


FIND = _call("find_product", {"q": "rubber wheel", "page": 1, "price": "0-500"})
VIEW = _call("view_product_information", {"product_ids": "8808731117,1238461156"})
RECOMMEND = _call("recommend_product", {"product_ids": "8808731117"})
TERMINATE = _call("terminate", {"status": "success"})

EPISODE = [
    {"role": "system", "content": "You are a shopping assistant."},
    {"role": "user", "content": "I need a rubber wheel under 500 pesos."},
    {"role": "assistant", "content": "", "tool_calls": [FIND]},
    {"role": "tool", "name": "find_product", "content": '[{"product_id":"8808731117"},{"product_id":"1238461156"}]'},
    {"role": "assistant", "content": "", "tool_calls": [VIEW]},
    {"role": "tool", "name": "view_product_information", "content": '[{"product_id":"8808731117","price":47.0}]'},
    {"role": "assistant", "content": "", "tool_calls": [RECOMMEND, TERMINATE]},
    {"role": "tool", "name": "recommend_product", "content": "Recommended 8808731117."},
    {"role": "tool", "name": "terminate", "content": "Episode over."},
]


def _block(call: dict) -> str:
    fn = call["function"]
    args = fn["arguments"] if isinstance(fn["arguments"], str) else json.dumps(fn["arguments"], ensure_ascii=False)
    return f'<tool_call>\n{{"name": "{fn["name"]}", "arguments": {args}}}\n</tool_call>'


def _assistant_text(message: dict) -> str:
    """What the template writes for an assistant turn (without its header), by the Hermes convention."""
    parts = [message["content"]] if message.get("content") else []
    parts += [_block(c) for c in message.get("tool_calls") or []]
    return "\n".join(parts) + "<|im_end|>"


def _spans(mask: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


def test_trl_accepts_it_for_tool_calling_and_prefix_preservation(tokenizer):
    assert tokenizer.chat_template == TOOL_CHAT_TEMPLATE
    assert supports_tool_calling(tokenizer)
    assert is_chat_template_prefix_preserving(tokenizer)
    assert is_chat_template_stop_token_trained(tokenizer)
    # The plain ChatML template it replaces would not do for tools (the reason this module exists).
    plain = tiny_tokenizer()
    plain.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                           "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert not supports_tool_calling(plain)


def test_renders_hermes_tool_calls_and_responses(tokenizer):
    text = tokenizer.apply_chat_template(EPISODE, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a shopping assistant.<|im_end|>\n"
                           "<|im_start|>user\nI need a rubber wheel under 500 pesos.<|im_end|>\n")
    assert f"<|im_start|>assistant\n{_block(FIND)}<|im_end|>\n" in text
    assert f"<|im_start|>assistant\n{_block(RECOMMEND)}\n{_block(TERMINATE)}<|im_end|>\n" in text
    assert "<|im_start|>tool" not in text  # tool results go back in a user turn, as Qwen2.5 does
    assert text.endswith("<|im_end|>\n")
    assert tokenizer.apply_chat_template(EPISODE[:2], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n")


def test_consecutive_tool_messages_share_one_user_turn(tokenizer):
    text = tokenizer.apply_chat_template(EPISODE, tokenize=False)
    tail = text[text.rindex("<|im_start|>"):]
    assert tail == ("<|im_start|>user\n<tool_response>\nRecommended 8808731117.\n</tool_response>\n"
                    "<tool_response>\nEpisode over.\n</tool_response><|im_end|>\n")
    assert text.count("<tool_response>") == 4
    # One tool message per turn closes its own user turn.
    assert text.count("<|im_start|>user") == 4


def test_assistant_mask_covers_exactly_the_assistant_turns(tokenizer):
    out = tokenizer.apply_chat_template(EPISODE, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    spans = _spans(mask)
    assistants = [m for m in EPISODE if m["role"] == "assistant"]
    assert [tokenizer.decode(ids[a:b]) for a, b in spans] == [_assistant_text(m) for m in assistants]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    for a, b in spans:
        assert ids[b - 1] == im_end  # trained to stop
        assert im_start not in ids[a:b]  # the header is prompt, not target
    unmasked = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    for m in EPISODE:
        if m["role"] != "assistant":
            assert m["content"] in unmasked
    assert "<tool_call>" not in unmasked and "<tool_response>" not in tokenizer.decode(
        [i for i, m in zip(ids, mask, strict=True) if m])


def test_a_no_loss_turn_renders_the_same_and_is_never_a_target(tokenizer):
    """An error-recovery conversation's deliberate mistake (`no_loss`) is in the prompt, not in the loss."""
    wrong = {"role": "assistant", "content": "", "no_loss": True,
             "tool_calls": [_call("find_product", {"q": "rubber wheel", "price": "500"})]}
    error = {"role": "tool", "name": "find_product", "content": "No products found."}
    episode = EPISODE[:2] + [wrong, error] + EPISODE[2:]
    plain = [{k: v for k, v in m.items() if k != "no_loss"} for m in episode]
    assert tokenizer.apply_chat_template(episode, tokenize=False) == tokenizer.apply_chat_template(plain, tokenize=False)
    out = tokenizer.apply_chat_template(episode, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    targets = [tokenizer.decode(ids[a:b]) for a, b in _spans(mask)]
    assert targets == [_assistant_text(m) for m in EPISODE if m["role"] == "assistant"]
    assert '"price": "500"' in tokenizer.decode(ids) and not any('"500"' in t for t in targets)


def test_string_and_dict_arguments_render_identically(tokenizer):
    args = {"q": "café table, 2 seats", "page": 2, "service": "COD,freeShipping"}
    as_dict = [EPISODE[1], {"role": "assistant", "content": "", "tool_calls": [_call("find_product", args)]}]
    as_text = [EPISODE[1], {"role": "assistant", "content": "",
                            "tool_calls": [_call("find_product", json.dumps(args, ensure_ascii=False))]}]
    a = tokenizer.apply_chat_template(as_dict, tokenize=False)
    assert a == tokenizer.apply_chat_template(as_text, tokenize=False)
    assert '"café table, 2 seats"' in a
    # A flat call ({"name", "arguments"} without "function") renders the same as well.
    flat = [EPISODE[1], {"role": "assistant", "content": "", "tool_calls": [{"name": "find_product", "arguments": args}]}]
    assert tokenizer.apply_chat_template(flat, tokenize=False) == a


def test_parse_response_reads_generated_tool_calls(tokenizer):
    prefix = tokenizer.apply_chat_template(EPISODE[:6], add_generation_prompt=True, return_dict=False)
    completion = f"{_block(RECOMMEND)}\n{_block(TERMINATE)}<|im_end|>"
    ids = tokenizer.encode(completion, add_special_tokens=False)
    parsed = parse_response(tokenizer, ids, prefix=prefix)
    assert parsed["role"] == "assistant" and parsed["content"] == ""
    assert parsed["tool_calls"] == [RECOMMEND, TERMINATE]
    assert all(isinstance(c["function"]["arguments"], dict) for c in parsed["tool_calls"])
    # Text before the calls stays content.
    ids = tokenizer.encode(f"Found it.\n{_block(FIND)}<|im_end|>", add_special_tokens=False)
    parsed = parse_response(tokenizer, ids, prefix=prefix)
    assert parsed["content"].strip() == "Found it." and parsed["tool_calls"] == [FIND]


def test_react_parser_reads_back_what_the_template_writes(tokenizer):
    with_text = {"role": "assistant", "content": "Two options, the first is cheaper.",
                 "tool_calls": [RECOMMEND, TERMINATE]}
    for message in [m for m in EPISODE if m["role"] == "assistant"] + [with_text]:
        rendered = tokenizer.apply_chat_template([EPISODE[1], message], tokenize=False)
        body = rendered.split("<|im_start|>assistant\n", 1)[1].split("<|im_end|>", 1)[0]
        turn = parse_native_turn(body, None)
        assert turn.format_ok and not turn.errors
        assert [(c.name, c.arguments) for c in turn.calls] == [
            (c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]


def test_use_tool_chat_template_sets_pad_and_parser():
    tok = use_tool_chat_template(tiny_tokenizer(pad=None))
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert getattr(tok, "response_template", None) is not None or getattr(tok, "response_schema", None) is not None
    kept = use_tool_chat_template(tiny_tokenizer())
    assert kept.pad_token == "<|endoftext|>"


@pytest.mark.parametrize("unk", [None, "<unk>"])
def test_refuses_a_tokenizer_without_chatml_tokens(unk):
    specials = ["<s>", "</s>"] + ([unk] if unk else [])
    tok = tiny_tokenizer(specials=specials, eos="</s>", pad=None, unk=unk)
    before = tok.chat_template
    with pytest.raises(ValueError, match=r"<\|im_start\|>"):
        use_tool_chat_template(tok)
    assert tok.chat_template == before  # left untouched
    half = tiny_tokenizer(specials=["<|endoftext|>", "<|im_start|>"], eos="<|endoftext|>")
    with pytest.raises(ValueError, match=r"lacks \['<\|im_end\|>'\]"):
        use_tool_chat_template(half)


def test_hermes_students_get_every_prompt_in_their_own_call_format():
    from agents.react import ReactConfig
    from agents.react.parsing import parse_native_turn

    hermes = ReactConfig(system_prompt="system_hermes")
    for name, values in (("format_error", {"error": "x"}), ("final_recommendation", {"seen_ids": "ids"})):
        example = hermes.prompt(name, **values)
        assert '"arguments"' in example and '"parameters"' not in example
        assert parse_native_turn(example[example.index("<tool_call>"):], None).calls
        assert '"parameters"' in ReactConfig().prompt(name, **values)  # the text format keeps its own
