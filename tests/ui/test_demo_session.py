"""The demo's session layer without a browser: chat turns, carts, tasks, settings, failures, escaping."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from agents.llm import LLMError
from tests.scripted_shopper import ScriptedShopper
from ui import DemoBackend, DemoConfig, DemoError, TurnQueue, TurnSettings, render
from ui.browser import free_port
from ui.config import DemoSettings

REACT = TurnSettings(agent="react", max_steps=8)


@pytest.fixture(scope="module")
def shopper():
    return ScriptedShopper()


@pytest.fixture(scope="module")
def backend(world, shopper):
    config = DemoConfig(demo=DemoSettings(data_dir=str(world.data_dir), tasks_per_intent=5, budget=None))
    return DemoBackend(config, world=world, llm_factory=lambda cfg: shopper)


def last(turn):
    """The final state of a streamed turn."""
    *_, final = turn
    return final


def titles(messages):
    return [m["metadata"]["title"] for m in messages if m.get("metadata")]


def test_a_chat_turn_streams_tool_steps_then_product_cards(backend):
    session = backend.new_session()
    updates = list(session.chat("stainless steel water bottle", REACT))
    assert len(updates) >= 4, "each event is streamed as it happens"
    final = updates[-1]
    steps = titles(final)
    assert any(t.startswith("🔎 find_product(") and '"stainless steel water bottle"' in t for t in steps)
    assert any("recommend_product(" in t for t in steps) and any("terminate(" in t for t in steps)
    assert all(m["metadata"]["status"] == "done" for m in final if m.get("metadata"))
    search_body = next(m["content"] for m in final if m.get("metadata", {}).get("title", "").startswith("🔎"))
    assert "1. " in search_body and "id `" in search_body
    cards = final[-1]["content"]
    assert cards.count('class="sl-card"') == 2
    recommended = session.history[-1]["content"]
    assert recommended.startswith("I recommended") and session.history[-2]["content"] == "stainless steel water bottle"
    # What the shopper saw can go in the cart from the panel.
    assert len(session.cart_choices()) >= 2


def test_later_turns_show_the_agent_the_conversation_so_far(backend, shopper):
    session = backend.new_session()
    last(session.chat("water bottle", REACT))
    last(session.chat("a cheaper one please", REACT))
    prompt = shopper.prompts[-1]
    assert [m["content"] for m in prompt if m["role"] == "user"][:2] == ["water bottle", "a cheaper one please"]
    assert prompt[2]["role"] == "assistant" and prompt[2]["content"].startswith("I recommended")


def test_the_agent_fills_this_sessions_cart_and_no_other(backend):
    first, second = backend.new_session(), backend.new_session()
    last(first.chat("add a water bottle to my cart", REACT))
    assert len(first.cart_summary()["items"]) == 1
    assert second.cart_summary()["items"] == []
    pid = second.cart_choices()[0][1] if second.cart_choices() else first.cart_summary()["items"][0]["product_id"]
    assert second.add_to_cart(pid, 3) is None
    assert second.cart_summary()["items"][0]["quantity"] == 3
    assert first.cart_summary()["items"][0]["quantity"] == 1
    # The cart outlives the conversation.
    first.new_chat()
    assert len(first.cart_summary()["items"]) == 1 and first.transcript == [] and first.history == []


def test_cart_panel_uses_the_sandbox_tools_and_their_errors(backend):
    session = backend.new_session()
    assert session.add_to_cart("no-such-id", 1).startswith("Error: no such product")
    assert session.add_to_cart("", 1).startswith("Error:")
    pid = next(iter(backend.world.tasks.values())).reward[0].product_id
    assert session.add_to_cart(pid, 500).startswith("Error: invalid arguments for add_to_cart")
    assert session.add_to_cart(pid, 2) is None
    summary = session.cart_summary()
    assert summary["items"][0]["quantity"] == 2
    session.set_budget(1.0)
    assert session.cart_summary()["within_budget"] is False
    html = render.cart_panel(session.cart_summary())
    assert 'data-items="1"' in html and "over budget" in html
    with pytest.raises(DemoError):
        session.set_budget("lots")
    assert session.remove_from_cart(pid) is None and session.cart_summary()["items"] == []
    assert session.remove_from_cart(pid).startswith("Error:")


def test_the_best_wallet_voucher_is_applied(backend):
    session = backend.new_session()
    voucher = backend.wallet[0]
    hits = backend.world.filler_products(200)
    product = next(p for p in hits if p["price"] >= voucher.threshold)
    assert session.add_to_cart(product["product_id"], 1) is None
    summary = session.cart_summary()
    assert summary["voucher"] is not None and summary["discount"] > 0
    assert summary["total_after_voucher"] == pytest.approx(summary["total"] - summary["discount"])


def test_an_llm_failure_is_a_message_and_the_session_keeps_working(backend):
    session = backend.new_session()
    final = last(session.chat("this request will fail", REACT))
    text = " ".join(m["content"] for m in final)
    assert "⚠️ The language model failed" in text and "scripted backend is down" in text
    assert "Traceback" not in text
    again = last(session.chat("water bottle", REACT))
    assert 'class="sl-card"' in again[-1]["content"]


def test_a_model_that_cannot_load_is_a_message(world):
    def broken(cfg):
        raise LLMError(f"model folder {cfg.model} does not exist")

    backend = DemoBackend(DemoConfig(demo=DemoSettings(data_dir=str(world.data_dir))), world=world,
                          llm_factory=broken)
    final = last(backend.new_session().chat("water bottle", REACT))
    assert final[0]["content"].startswith("⚠️") and "does not exist" in final[0]["content"]


def test_settings_from_the_browser_are_validated(backend, shopper):
    with pytest.raises(DemoError, match="unknown backend"):
        TurnSettings(backend="gpt-pirate").validated(30)
    with pytest.raises(DemoError, match="unknown agent"):
        TurnSettings(agent="rm -rf").validated(30)
    with pytest.raises(DemoError, match="numbers"):
        TurnSettings(temperature="hot").validated(30)
    clamped = TurnSettings(temperature=9, max_steps=500).validated(30)
    assert clamped.temperature == 2.0 and clamped.max_steps == 30
    session = backend.new_session()
    last(session.chat("water bottle", TurnSettings(temperature=0.7, max_steps=3)))
    assert shopper.samplings[-1].temperature == 0.7
    refused = last(session.chat("water bottle", TurnSettings(agent="oracle")))
    assert "only runs in the Benchmark task tab" in refused[0]["content"]


def test_the_max_steps_setting_bounds_the_episode(backend):
    final = last(backend.new_session().chat("add a water bottle to my cart", TurnSettings(max_steps=2)))
    calls = [t for t in titles(final) if "(" in t and not t.startswith("💭")]
    assert len(calls) <= 2


def test_a_benchmark_task_ends_with_its_score_breakdown_and_gold(backend):
    task_id = backend.task_choices("product")[0][1]
    task = backend.tasks[task_id]
    session = backend.new_session()
    *_, (messages, score_html, gold_html) = session.run_task(task_id, TurnSettings(agent="oracle"))
    assert 'data-success="true"' in score_html and "the gold product itself" in score_html
    assert f'data-product-id="{task.reward[0].product_id}"' in gold_html
    # An agent that recommends the top search hits: where that is not the gold, each constraint is listed.
    breakdowns = []
    for _, tid in backend.task_choices("product"):
        *_, (messages, score_html, _) = session.run_task(tid, REACT)
        assert any("find_product(" in t for t in titles(messages)) and "data-success" in score_html
        if "the gold product itself" not in score_html:
            breakdowns.append((backend.tasks[tid], score_html))
    assert breakdowns, "the top hit was the gold for every task: no breakdown was shown"
    for task, score_html in breakdowns:
        assert score_html.count("<tr><td>") == task.reward[0].n_constraints()
        assert "title like" in score_html and ("✗" in score_html or 'data-success="true"' in score_html)
    with pytest.raises(DemoError):
        list(session.run_task("no-such-task", TurnSettings(agent="oracle")))


def test_rewrite_rows_show_what_each_query_retrieves(backend):
    rows = backend.rewrite_rows("cheap stainless steel water bottle for kids to take to school please")
    assert rows[0]["original"] and rows[0]["query"].startswith("cheap stainless")
    assert len(rows) >= 2 and all(not r["original"] for r in rows[1:])
    assert all(len(r["hits"]) <= 5 and (r["total"] == 0 or r["hits"]) for r in rows)
    with pytest.raises(DemoError):
        backend.rewrite_rows("!!!")


def test_model_and_catalogue_text_is_escaped():
    hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    card = render.product_card({"product_id": hostile, "title": hostile, "price": 1, "shop_id": hostile,
                                "service": [hostile], "attributes": {hostile: [hostile]},
                                "main_image_url": "javascript:alert(3)"})
    assert "<script>" not in card and "<img src=x" not in card and "javascript:" not in card
    assert "<script>" not in render.tool_step_body("find_product", hostile)
    assert "<script>" not in render.tool_step_title("find_product", {"q": hostile})
    assert "<script>" not in render.tool_step_title(hostile, hostile)
    assert "<script>" not in render.score_panel({"success": False, "intent": hostile, "constraint_score": 0,
                                                  "gt": 0, "per_product": [{"product_id": hostile, "checks": [
                                                      {"field": "title", "requirement": hostile, "met": False}]}]})


def test_demo_cli_explains_a_missing_sandbox(tmp_path):
    from shoplab_cli import app

    result = CliRunner().invoke(app, ["demo", "--data-dir", str(tmp_path / "nowhere"), "--port", "7999"])
    assert result.exit_code != 0
    assert "no sandbox in" in result.output and "shoplab sandbox build" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_demo_command_serves_on_localhost_and_stops_cleanly(world, tmp_path, stop):
    """`shoplab demo` as a user runs it: a real process, bound to 127.0.0.1, closed by Ctrl-C or SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx
    import psutil

    port = free_port()
    cmd = [sys.executable, "-c", "from shoplab_cli import app; app()", "demo", "--data-dir", str(world.data_dir),
           "--port", str(port), "--rewriter", "none"]
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log:  # a file, not a pipe: a full pipe would block the server's writes
        # SIGINT ignored, as a background job of a non-interactive shell inherits it.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.time() + 120
        page = None
        while time.time() < deadline and proc.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/config", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert page is not None and page.status_code == 200, log_path.read_text()[-2000:]
        config = page.text
        assert "shoplab" in config and "chat-input" in config and "task-run" in config
        listening = {c.laddr.ip for c in psutil.Process(proc.pid).net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listening == {"127.0.0.1"}, "the demo must not listen beyond this machine by default"
        proc.send_signal(getattr(signal, stop))
        assert proc.wait(timeout=60) == 0
        assert "closing server" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_at_most_two_models_stay_loaded_and_the_oldest_is_closed(world):
    loaded = []

    class Tracked(ScriptedShopper):
        def __init__(self, model):
            super().__init__()
            self.model, self.closed = model, False
            loaded.append(self)

        def close(self):
            self.closed = True

    backend = DemoBackend(DemoConfig(demo=DemoSettings(data_dir=str(world.data_dir))), world=world,
                          llm_factory=lambda cfg: Tracked(cfg.model))
    first = backend.llm(TurnSettings(model="a"))
    assert backend.llm(TurnSettings(model="a")) is first, "a loaded model is shared, not reloaded"
    backend.llm(TurnSettings(model="b"))
    backend.llm(TurnSettings(model="c"))
    assert [(m.model, m.closed) for m in loaded] == [("a", True), ("b", False), ("c", False)]
    backend.close()
    assert all(m.closed for m in loaded)


def test_a_benchmark_agent_config_runs_in_the_demo():
    from pathlib import Path

    from sandbox import tool_specs

    configs = Path(__file__).resolve().parents[2] / "configs" / "agents"
    default_tools = DemoConfig()
    default_tools.use_agent_config(configs / "react_smollm2_transformers.yaml")
    assert default_tools.llm.backend == "transformers"
    assert "add_to_cart" in [spec.name for spec in tool_specs(default_tools.agent.tools)]
    student = DemoConfig()
    student.use_agent_config(configs / "react_smollm2_distilled.yaml")
    assert student.agent.tools == ["find_product", "view_product_information", "recommend_product", "terminate"]
    assert student.llm.chat_template == "tool" and student.agent.system_prompt == "system_hermes"


def test_a_huge_chat_message_is_cut_and_the_transcript_stays_bounded(backend):
    from ui.session import MAX_MESSAGE_CHARS, MAX_TRANSCRIPT_MESSAGES, bounded_transcript, clip_message

    assert len(clip_message("x" * 1_000_000)) == MAX_MESSAGE_CHARS == 2000
    assert clip_message("  hi  ") == "hi" and clip_message(None) == ""
    long = [{"role": "assistant", "content": str(i)} for i in range(3 * MAX_TRANSCRIPT_MESSAGES)]
    kept = bounded_transcript(long)
    assert len(kept) == MAX_TRANSCRIPT_MESSAGES and kept[-1]["content"] == long[-1]["content"]
    session = backend.new_session()
    for _ in session.chat("water bottle " * 100_000, TurnSettings(agent="heuristic", max_steps=8)):
        pass
    assert len(session.last_message) <= MAX_MESSAGE_CHARS
    assert all(len(m["content"]) <= MAX_MESSAGE_CHARS for m in session.history if m["role"] == "user")


def test_chat_messages_of_a_tab_run_one_at_a_time_in_the_order_sent():
    import threading

    turns = TurnQueue()
    first = turns.take()
    assert first.holding and not first.waiting
    second = turns.take()
    assert second.waiting
    with pytest.raises(DemoError, match="already waiting"):
        turns.take()  # bounded: a third message is refused, readably
    ran: list[str] = []

    def run(ticket):
        ticket.wait()
        ran.append("second")

    waiter = threading.Thread(target=run, args=(second,))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and ran == []  # it waits while the first turn runs
    first.close()
    waiter.join(10)
    assert ran == ["second"] and second.holding
    second.close()
    assert turns.take().holding


def test_a_message_sent_as_a_turn_ends_does_not_jump_the_waiting_one():
    turns = TurnQueue()
    first, second = turns.take(), turns.take()
    first.close()  # the turn is free, but the second message has not woken up yet
    with pytest.raises(DemoError, match="already waiting"):
        turns.take()
    second.wait()
    assert second.holding
    second.close()


def test_a_tab_closed_while_its_message_waits_leaves_the_queue():
    turns = TurnQueue()
    running, abandoned = turns.take(), turns.take()
    abandoned.close()  # Gradio closed the turn's generator before it ran
    replacement = turns.take()  # not refused: the abandoned message no longer counts
    assert replacement.waiting
    running.close()
    replacement.wait()
    assert replacement.holding
    replacement.close()
    assert turns.take().holding


def test_each_browser_tab_keeps_one_session_and_closed_or_oldest_tabs_are_dropped(world, shopper):
    config = DemoConfig(demo=DemoSettings(data_dir=str(world.data_dir), tasks_per_intent=1, max_sessions=2,
                                          closed_tab_ttl_s=0.3))
    backend = DemoBackend(config, world=world, llm_factory=lambda cfg: shopper)
    alice = backend.session("tab-a")
    alice.set_budget(50)
    # Every event of a tab reaches the same cart and chat.
    assert backend.session("tab-a") is alice and backend.session("tab-a").cart_summary()["budget"] == 50
    bob = backend.session("tab-b")
    assert bob is not alice and backend.open_tabs == 2
    backend.session("tab-a")  # alice is the most recently used now
    backend.session("tab-c")  # a third tab: bob, the least recently used, is dropped
    assert backend.session("tab-a") is alice and backend.session("tab-b") is not bob
    # A close followed by an event from the same tab (a network blip) keeps the session.
    backend.drop_session("tab-a")
    assert backend.open_tabs == 1
    assert backend.session("tab-a") is alice and backend.open_tabs == 2
    # A tab that stays closed past the grace period loses it.
    backend.drop_session("tab-a")
    time.sleep(0.4)
    assert backend.session("tab-a") is not alice
    assert backend.session(None) is not backend.session(None)  # no session hash: nothing is kept
