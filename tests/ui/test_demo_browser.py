"""The Gradio demo end to end: a real server on a free port, driven by headless Debian Chromium.

The chat model is scripted (deterministic flows), except in the last test, which runs the real
default model (SmolLM2-135M-Instruct on transformers) through the same page.
"""

from __future__ import annotations

import re
import time

import pytest

from agents.llm import LLMConfig, SamplingConfig
from tests.scripted_shopper import ScriptedShopper
from ui import DemoConfig
from ui.browser import cart_items, free_port, launch_chromium, open_page, send
from ui.config import DemoSettings

pytestmark = pytest.mark.slow  # drives Chromium

STEP_TIMEOUT_MS = 60_000


def wait_for_cards(page, n: int) -> None:
    """Wait until the chat shows n product cards; on timeout, say what the page showed instead."""
    try:
        page.wait_for_function(f"document.querySelectorAll('#chat .sl-card').length >= {n}", timeout=STEP_TIMEOUT_MS)
    except Exception as exc:
        cards = page.locator("#chat .sl-card").count()
        raise AssertionError(f"{cards} product cards, not {n}; the message box holds "
                             f"{page.input_value('#chat-input textarea')!r}; the chat ends with:\n"
                             f"{page.inner_text('#chat')[-2000:]}") from exc


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as chromium:
        yield chromium


def serve(world, llm_factory, **demo):
    from ui import launch_demo

    settings = DemoSettings(data_dir=str(world.data_dir), port=free_port(), tasks_per_intent=3, **demo)
    config = DemoConfig(demo=settings)
    config.llm = LLMConfig(sampling=SamplingConfig(max_new_tokens=48))
    app, backend = launch_demo(config, world=world, llm_factory=llm_factory, block=False, warm=False, quiet=True)
    return app, backend, f"http://{settings.host}:{settings.port}/"


@pytest.fixture(scope="module")
def shopper():
    return ScriptedShopper(delay_s=0.3)  # slow enough that two users' episodes overlap


@pytest.fixture(scope="module")
def finished_runs(world, similarity, tmp_path_factory):
    """A runs folder holding one finished heuristic run, for the Runs tab."""
    from agents.registry import make_agent
    from agents.runner import RunConfig, run_benchmark
    from sandbox.tasks import first_per_intent

    root = tmp_path_factory.mktemp("runs")
    run_benchmark(world, first_per_intent(world.tasks.values(), 1), lambda: make_agent("heuristic"), root / "heuristic",
                  RunConfig(agent="heuristic"), similarity=similarity, progress=False)
    return root


@pytest.fixture(scope="module")
def scripted_app(world, shopper, finished_runs):
    app, _, url = serve(world, lambda cfg: shopper, runs_dir=str(finished_runs))
    yield url
    app.close()


def test_the_page_names_the_model_shows_work_at_once_and_gives_the_message_box_the_row(browser, scripted_app):
    page = open_page(browser, scripted_app)
    assert "smollm2-135m-instruct" in page.inner_text("#header")
    assert "tantivy" not in page.inner_text("#header")
    box, row = page.locator("#chat-input").bounding_box(), page.locator("#chat-input").locator("..").bounding_box()
    assert box["width"] >= 0.6 * row["width"]
    send(page, "water bottle")
    # Within a second, long before the first tool step (each takes 0.3 s and the model is still "loading").
    page.wait_for_selector("#chat >> text=Working on it", timeout=1_500)
    page.wait_for_selector("#chat .sl-card", timeout=STEP_TIMEOUT_MS)
    assert "Working on it" not in page.inner_text("#chat")


def test_the_runs_tab_shows_a_finished_episode_step_by_step(browser, scripted_app, finished_runs):
    page = open_page(browser, scripted_app)
    page.get_by_role("tab", name="Runs").click()
    page.wait_for_selector("#runs-episode-view >> text=find_product(", timeout=STEP_TIMEOUT_MS)
    view = page.inner_text("#runs-episode-view")
    assert "recommend_product(" in view and "scored" in view


def test_a_message_streams_tool_steps_then_product_cards(browser, scripted_app, tmp_path):
    page = open_page(browser, scripted_app)
    send(page, "stainless steel water bottle")
    page.wait_for_selector("#chat .sl-card", timeout=STEP_TIMEOUT_MS)
    chat = page.inner_text("#chat")
    assert 'find_product(q="stainless steel water bottle")' in chat
    assert "recommend_product(" in chat and "terminate(" in chat
    assert page.locator("#chat .sl-card").count() == 2
    # Steps are compact until opened: the search step expands to its hits.
    step = page.get_by_text('find_product(q="stainless steel water bottle")').first
    step.click()
    page.wait_for_function("/· id \\d+/.test(document.querySelector('#chat').innerText)", timeout=STEP_TIMEOUT_MS)
    assert cart_items(page) == 0
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
    # The rewrite panel shows how the configured rewriter rewrote the message, and what each query finds.
    page.get_by_role("tab", name="Rewrite").click()
    try:
        page.wait_for_selector("#rewrite-out .sl-rewrite >> text=stainless steel water bottle", timeout=STEP_TIMEOUT_MS)
    except Exception as exc:
        selected = page.locator("[role=tab][aria-selected=true]").all_inner_texts()
        raise AssertionError(f"no rewrite panel; selected tab {selected}; #rewrite-out holds "
                             f"{page.inner_html('#rewrite-out')[:1000]!r}") from exc
    assert page.locator("#rewrite-out ol li").count() >= 1
    page.get_by_role("tab", name="Chat").click()

    # A failing LLM shows a message, and the same tab keeps working.
    send(page, "this request will fail")
    page.wait_for_selector("#chat >> text=The language model failed", timeout=STEP_TIMEOUT_MS)
    assert "Traceback" not in page.inner_text("#chat")
    send(page, "water bottle")
    wait_for_cards(page, 4)


def test_a_message_sent_while_a_turn_runs_is_answered_after_it(browser, scripted_app):
    page = open_page(browser, scripted_app)
    send(page, "water bottle")
    page.wait_for_selector("#chat >> text=water bottle", timeout=STEP_TIMEOUT_MS)  # the turn has started
    assert page.locator("#chat .sl-card").count() == 0  # ... and is still running (each step takes 0.3 s)
    send(page, "stainless steel water bottle")
    # The shopper starts typing the next message while the first turn still runs: the message already
    # sent is the one answered, not this draft.
    page.fill("#chat-input textarea", "a draft not sent yet")
    wait_for_cards(page, 4)
    chat = page.inner_text("#chat")
    first, second = 'find_product(q="water bottle")', 'find_product(q="stainless steel water bottle")'
    assert first in chat and second in chat and chat.index(first) < chat.index(second), chat[-2000:]
    assert "draft" not in chat


@pytest.fixture(scope="module")
def slow_app(world, finished_runs):
    shopper = ScriptedShopper(delay_s=2.0)  # a turn takes 6 s or more: time to send two more messages
    app, backend, url = serve(world, lambda cfg: shopper, runs_dir=str(finished_runs))
    make_session = backend.new_session

    def slow_new_session():
        time.sleep(1.0)  # a tab's first event arrives while its session is still being made
        return make_session()

    backend.new_session = slow_new_session
    yield url, backend
    app.close()


def test_one_message_waits_for_the_running_turn_and_a_third_is_refused_with_its_text_kept(browser, slow_app):
    url, backend = slow_app
    page = open_page(browser, url)
    send(page, "water bottle")  # at once: the tab's session is made by this event
    page.wait_for_selector("#chat >> text=water bottle", timeout=STEP_TIMEOUT_MS)
    send(page, "stainless steel water bottle")
    # Taken at once: the box empties while the first turn still runs.
    page.wait_for_function("document.querySelector('#chat-input textarea').value === ''", timeout=STEP_TIMEOUT_MS)
    send(page, "a third one")
    page.wait_for_selector("text=already waiting", timeout=STEP_TIMEOUT_MS)
    assert page.locator("#chat .sl-card").count() == 0  # the first turn was still running
    assert page.input_value("#chat-input textarea") == "a third one"  # kept, to send later
    wait_for_cards(page, 4)
    chat = page.inner_text("#chat")
    # Both turns in one chat: the first was not lost to a second session made for the same tab.
    assert 'find_product(q="water bottle")' in chat and 'find_product(q="stainless steel water bottle")' in chat
    assert "a third one" not in chat
    # Closing the tab marks its session closed (dropped after demo.closed_tab_ttl_s).
    assert backend.open_tabs == 1
    page.context.close()
    deadline = time.monotonic() + 30
    while backend.open_tabs and time.monotonic() < deadline:
        time.sleep(0.2)
    assert backend.open_tabs == 0


def test_two_sessions_do_not_share_a_cart(browser, scripted_app):
    alice, bob = open_page(browser, scripted_app), open_page(browser, scripted_app)
    # Both ask at once: the queue runs the two episodes side by side, each in its own session.
    send(alice, "add a water bottle to my cart")
    send(bob, "water bottle")
    alice.wait_for_selector('#cart .sl-cart[data-items="1"]', timeout=STEP_TIMEOUT_MS)
    bob.wait_for_selector("#chat .sl-card", timeout=STEP_TIMEOUT_MS)
    alice.wait_for_selector("#chat .sl-card", timeout=STEP_TIMEOUT_MS)
    assert cart_items(alice) == 1 and cart_items(bob) == 0
    alice_item = alice.get_attribute("#cart tr[data-product-id]", "data-product-id")

    # Bob adds the second product he was shown, with the panel (the sandbox's add_to_cart).
    second = bob.locator("#chat .sl-card").nth(1).get_attribute("data-product-id")
    bob.fill("#cart-qty input", "2")
    bob.fill("#cart-pick input", second)
    bob.keyboard.press("Enter")
    bob.click("#cart-add")
    bob.wait_for_selector('#cart .sl-cart[data-items="1"]', timeout=STEP_TIMEOUT_MS)
    assert bob.get_attribute("#cart tr[data-product-id]", "data-product-id") == second
    assert re.search(r"\b2\b", bob.inner_text("#cart tr[data-product-id]"))
    # Alice's cart is untouched.
    alice.wait_for_timeout(500)
    assert cart_items(alice) == 1
    assert alice.get_attribute("#cart tr[data-product-id]", "data-product-id") == alice_item


def test_benchmark_task_mode_shows_score_breakdown_and_gold(browser, scripted_app, world):
    page = open_page(browser, scripted_app)
    page.get_by_role("tab", name="Benchmark task").click()
    page.wait_for_selector("#task-query >> text=Request")
    second = page.locator("#task-pick input")
    second.click()
    option = page.locator("ul[role='listbox'] li").nth(1)
    chosen = option.get_attribute("aria-label").rstrip("…")
    option.click()
    page.wait_for_function(f"document.querySelector('#task-query').innerText.includes({chosen[:40]!r})")
    page.locator("#settings").click()  # the oracle knows the gold: its score must be a success
    page.locator("#set-agent input").click()
    page.locator("ul[role='listbox'] li", has_text="oracle").click()
    page.click("#task-run")
    page.wait_for_selector("#task-score .sl-score", timeout=STEP_TIMEOUT_MS)
    assert page.get_attribute("#task-score .sl-score", "data-success") == "true"
    assert page.locator("#task-gold .sl-card").count() >= 1
    assert "find_product(" in page.inner_text("#task-chat")


def test_the_real_default_model_answers_through_the_page(browser, world):
    from agents.llm import make_llm

    app, _, url = serve(world, make_llm, max_steps=3)
    try:
        page = open_page(browser, url)
        send(page, "stainless steel water bottle")
        # The episode ends with a closing assistant message: product cards or a plain answer.
        page.wait_for_function(
            "[...document.querySelectorAll('#chat .sl-card, #chat .message')].some(e => "
            "/The model produced|The agent|Here is what I recommend|sl-card|⚠️/.test(e.outerHTML))", timeout=300_000)
        page.wait_for_selector("#chat-send:not([disabled])", timeout=300_000)
        text = page.inner_text("#chat")
        assert "Traceback" not in text
        # A step the model took, or the closing message that says what it failed to do (ui.session).
        assert any(marker in text for marker in ("thinking", "note to the agent", "find_product(", "recommend",
                                                 "The model produced no valid tool call", "The agent",
                                                 "The language model failed")), text
    finally:
        app.close()


def test_the_default_chat_answers_a_water_bottle_under_500_with_one_under_500(browser, world):
    """The newcomer's first message, through `shoplab demo`'s own config (the shipped student): a product
    card, priced under 500. Its latency target (under 60 s) is measured on a quiet machine by
    `benchmarks/bench_demo.py --users 1 --message "A stainless steel water bottle under 500"`, not here: make
    test runs two test workers at once on two cores, which can double a CPU model's time."""
    from pathlib import Path

    from agents.llm import make_llm
    from ui import launch_demo

    config = DemoConfig.from_yaml(Path(__file__).resolve().parents[2] / "configs" / "demo" / "default.yaml")
    config.demo.data_dir, config.demo.port, config.demo.tasks_per_intent = str(world.data_dir), free_port(), 3
    assert config.llm.model == "shoplab-student"
    app, backend = launch_demo(config, world=world, llm_factory=make_llm, block=False, warm=True, quiet=True)
    try:
        page = open_page(browser, f"http://{config.demo.host}:{config.demo.port}/")
        assert "shoplab-student" in page.inner_text("#header") and "not installed" not in page.inner_text("#header")
        send(page, "A stainless steel water bottle under 500")
        page.wait_for_selector("#chat .sl-card", timeout=300_000)
        first = page.get_attribute("#chat .sl-card", "data-product-id")
        assert world.products([first])[first]["price"] < 500
    finally:
        app.close()
        backend.close()
