"""Reading tool calls out of model text: everything recoverable is recovered, the rest is an error."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.react.parsing import MAX_CALLS_PER_TURN, parse_native_turn, parse_text_turn


def test_shoppingbench_format_with_think_calls_and_response():
    text = ('<think>search first</think>\n<tool_call>[{"name": "find_product", "parameters": {"q": "red shoes"}}, '
            '{"name": "view_product_information", "parameters": {"product_ids": "1,2"}}]</tool_call>'
            "<response>Looking.</response>")
    turn = parse_text_turn(text)
    assert turn.think == "search first" and turn.response == "Looking." and turn.format_ok
    assert [(c.name, c.arguments) for c in turn.calls] == [("find_product", {"q": "red shoes"}),
                                                           ("view_product_information", {"product_ids": "1,2"})]


def test_recoverable_variants():
    cases = {
        # one object instead of a list, and `arguments` instead of `parameters` (Hermes / Qwen)
        '<tool_call>{"name": "terminate", "arguments": {"status": "success"}}</tool_call>': {"status": "success"},
        # arguments as a JSON string (OpenAI style pasted as text)
        '<tool_call>[{"name": "terminate", "arguments": "{\\"status\\": \\"failure\\"}"}]</tool_call>':
            {"status": "failure"},
        # Python-style literal, code fence, missing closing tag
        "<tool_call>```json\n[{'name': 'terminate', 'parameters': {'status': 'success'}}]\n```": {"status": "success"},
        # the OpenAI tool-call shape
        '<tool_call>{"type": "function", "function": {"name": "terminate", "arguments": {}}}</tool_call>': {},
    }
    for text, args in cases.items():
        turn = parse_text_turn(text)
        assert turn.errors == [] and len(turn.calls) == 1, (text, turn)
        assert turn.calls[0].name == "terminate" and turn.calls[0].arguments == args


def test_several_tool_call_blocks_and_a_cap_per_turn():
    one = '<tool_call>{"name": "view_cart", "parameters": {}}</tool_call>'
    turn = parse_text_turn(one * 2)
    assert len(turn.calls) == 2 and not turn.errors
    many = "<tool_call>" + json.dumps([{"name": "view_cart", "parameters": {}}] * 9) + "</tool_call>"
    turn = parse_text_turn(many)
    assert len(turn.calls) == MAX_CALLS_PER_TURN and "at most" in turn.errors[0]


def test_unrecoverable_blocks_are_reported():
    assert "could not parse" in parse_text_turn("<tool_call>find_product(q='x')</tool_call>").errors[0]
    assert "must be an object" in parse_text_turn('<tool_call>{"name": "x", "parameters": [1]}</tool_call>').errors[0]
    assert "no 'name'" in parse_text_turn('<tool_call>[{"parameters": {}}]</tool_call>').errors[0]
    assert parse_text_turn("<tool_call></tool_call>").errors == ["empty <tool_call> block"]
    assert not parse_text_turn("just prose").format_ok


def test_native_calls_and_text_fallback():
    turn = parse_native_turn("", [{"id": "a", "function": {"name": "terminate", "arguments": '{"status": "success"}'}},
                                  {"id": "b", "function": {"name": "", "arguments": "{}"}}])
    assert turn.calls[0].id == "a" and turn.calls[0].arguments == {"status": "success"}
    assert turn.errors == ["a tool call has no 'name'"]
    assert parse_native_turn("Here are my picks.", None).response == "Here are my picks."
    # A model served without a tool parser writes its calls in the text: still found.
    assert parse_native_turn('<tool_call>{"name": "terminate", "arguments": {}}</tool_call>', None).calls


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('<>/[]{}":,tool_call nameparameters\\\'\n')) | st.characters(),
               max_size=300))
def test_parser_never_raises_on_arbitrary_text(text):
    for candidate in (text, "<tool_call>" + text, "<tool_call>[" + text + "]</tool_call>"):
        turn = parse_text_turn(candidate)
        assert all(isinstance(c.arguments, dict) and c.name for c in turn.calls)
