"""The Gradio app: chat with the shopping agent, a cart panel, benchmark tasks, query rewrites, settings."""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from agents.llm import BACKENDS  # noqa: E402
from sandbox import ShoppingWorld  # noqa: E402
from ui import render  # noqa: E402
from ui.config import DemoConfig  # noqa: E402
from ui.session import (  # noqa: E402
    DEMO_AGENTS,
    MAX_MESSAGE_CHARS,
    DemoBackend,
    DemoError,
    DemoSession,
    LLMFactory,
    TurnSettings,
    bounded_transcript,
    clip_message,
)

logger = logging.getLogger("shoplab.demo")

WORKING = {"role": "assistant", "content": "The agent is reading your request and searching the catalogue.",
           "metadata": {"title": "⏳ Working on it…", "status": "pending"}}
EXAMPLES = ["A stainless steel water bottle under 300 with free shipping",
            "A 12 inch heavy-duty rubber wheel for a pushcart",
            "Building blocks for kids from an official store"]


def _warning(exc: BaseException) -> str:
    return f"⚠️ {render.esc(exc)}" if isinstance(exc, DemoError) else \
        f"⚠️ Something went wrong ({type(exc).__name__}); the demo is still running, try again."


def _guarded(handler: Callable[..., Any], on_error: Callable[[str], Any]) -> Callable[..., Any]:
    """A handler whose failure becomes a message in the page, never a stack trace."""

    def run(*args: Any) -> Any:
        try:
            return handler(*args)
        except Exception as exc:  # noqa: BLE001
            if not isinstance(exc, DemoError):
                logger.exception("demo handler %s failed", getattr(handler, "__name__", handler))
            return on_error(_warning(exc))

    return run


def build_demo(backend: DemoBackend) -> gr.Blocks:
    config = backend.config
    defaults = backend.default_settings()
    manifest = backend.world.manifest
    n_products = manifest.get("n_products") or 0

    with gr.Blocks(title="shoplab · shopping assistant") as demo:
        gr.Markdown(f"## 🛍️ shoplab shopping assistant\n{render.esc(backend.model_banner())} It shops in a "
                    f"catalogue of **{n_products:,} products**; each tool call it makes appears as a step you can "
                    "expand.", elem_id="header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Chat", id="chat"):
                        chatbot = gr.Chatbot(show_label=False, elem_id="chat", height=560, sanitize_html=False,
                                             group_consecutive_messages=False, feedback_options=None,
                                             placeholder="Ask for a product: what it is, your budget, the "
                                                         "services you want.")
                        with gr.Row(equal_height=True):
                            # The buttons keep their width (scale 0); the message box takes the rest of the row.
                            message = gr.Textbox(show_label=False, placeholder="What are you looking for?",
                                                 elem_id="chat-input", scale=1, max_length=MAX_MESSAGE_CHARS)
                            send = gr.Button("Send", variant="primary", elem_id="chat-send", scale=0, min_width=80)
                            new_chat = gr.Button("New chat", elem_id="chat-new", scale=0, min_width=130)
                        gr.Examples(EXAMPLES, inputs=message, label="Try")
                    with gr.Tab("Benchmark task", id="task"):
                        intents = backend.intents
                        first_intent = intents[0] if intents else None
                        with gr.Row():
                            intent = gr.Radio(intents, value=first_intent, label="Intent", elem_id="task-intent")
                            first_tasks = backend.task_choices(first_intent) if first_intent else []
                            task = gr.Dropdown(first_tasks, value=first_tasks[0][1] if first_tasks else None,
                                               label="Task", elem_id="task-pick", scale=3)
                        task_query = gr.Markdown(_task_markdown(backend, first_tasks[0][1] if first_tasks else None),
                                                 elem_id="task-query")
                        run_task = gr.Button("Run the agent on this task", variant="primary", elem_id="task-run")
                        task_chat = gr.Chatbot(label="Episode", elem_id="task-chat", height=460, sanitize_html=False,
                                               group_consecutive_messages=False, feedback_options=None)
                        with gr.Row():
                            score = gr.HTML(elem_id="task-score")
                            gold = gr.HTML(elem_id="task-gold")
                    with gr.Tab("Rewrite", id="rewrite", visible=backend.has_rewriter):
                        gr.Markdown(f"Query rewriter: `{render.esc(config.demo.rewriter)}`. Each chat message is "
                                    "rewritten here too.")
                        with gr.Row():
                            rewrite_query = gr.Textbox(show_label=False, placeholder="A long-tail query",
                                                       elem_id="rewrite-input", scale=5)
                            rewrite_button = gr.Button("Rewrite", elem_id="rewrite-run", scale=1)
                        rewrite_out = gr.HTML(elem_id="rewrite-out")
                    with gr.Tab("Runs", id="runs"):
                        gr.Markdown("Finished benchmark runs (`shoplab bench run --out runs/...`), episode by "
                                    "episode, as `shoplab bench show` prints them.")
                        runs = backend.run_folders()
                        with gr.Row():
                            run_pick = gr.Dropdown(runs, value=runs[0] if runs else None, label="Run",
                                                   elem_id="runs-pick", scale=3)
                            refresh_runs = gr.Button("Refresh", elem_id="runs-refresh", scale=0, min_width=90)
                        episode_pick = gr.Dropdown([], label="Episode", elem_id="runs-episode")
                        episode_out = gr.HTML(elem_id="runs-episode-view")
            with gr.Column(scale=2):
                cart = gr.HTML(render.cart_panel({"items": [], "total": 0, "total_after_voucher": 0,
                                                  "budget": config.demo.budget}), elem_id="cart")
                gr.HTML(render.wallet_panel([v.describe() for v in backend.wallet]), elem_id="wallet")
                with gr.Row():
                    pick = gr.Dropdown([], label="Product", allow_custom_value=True, elem_id="cart-pick", scale=3)
                    quantity = gr.Number(1, label="Qty", precision=0, minimum=1, maximum=99, elem_id="cart-qty",
                                         scale=1)
                with gr.Row():
                    add = gr.Button("Add to cart", elem_id="cart-add")
                    remove = gr.Button("Remove", elem_id="cart-remove")
                budget = gr.Number(config.demo.budget, label="Budget (0 = no limit)", minimum=0, elem_id="budget")
                cart_note = gr.Markdown(elem_id="cart-note")
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    agent = gr.Dropdown(list(DEMO_AGENTS), value=defaults.agent, label="Agent", elem_id="set-agent")
                    llm_backend = gr.Dropdown(list(BACKENDS), value=defaults.backend, label="LLM backend",
                                              elem_id="set-backend")
                    model = gr.Textbox(defaults.model, label="Model (alias, HF folder or name)", elem_id="set-model")
                    temperature = gr.Slider(0.0, 1.5, value=defaults.temperature, step=0.05, label="Temperature",
                                            elem_id="set-temperature")
                    max_steps = gr.Slider(1, config.agent.max_steps, value=defaults.max_steps, step=1,
                                          label="Max tool calls", elem_id="set-max-steps")
        settings_inputs = [agent, llm_backend, model, temperature, max_steps]

        def per_tab(handler: Callable[..., Any]) -> Callable[..., Any]:
            """`handler(session, *inputs)` as a Gradio handler, given the session of the tab that sent the event."""
            if inspect.isgeneratorfunction(handler):
                def stream(request: gr.Request, *inputs: Any) -> Iterator[Any]:
                    yield from handler(backend.session(request.session_hash), *inputs)

                return stream

            def call(request: gr.Request, *inputs: Any) -> Any:
                return handler(backend.session(request.session_hash), *inputs)

            return call

        def settings_of(*values: Any) -> TurnSettings:
            return TurnSettings(*values).validated(config.agent.max_steps)

        def cart_outputs(sess: DemoSession, note: str = "", pick_first: bool = False) -> tuple[str, Any, str]:
            choices = sess.cart_choices()
            picker = gr.update(choices=choices, value=choices[0][1]) if pick_first and choices else \
                gr.update(choices=choices)
            return render.cart_panel(sess.cart_summary()), picker, note

        keep_cart = (gr.update(), gr.update(), gr.update())

        def respond(sess: DemoSession, text: str, *values: Any) -> Iterator[tuple]:
            text = clip_message(text)
            if not text:
                yield gr.update(), gr.update(), *keep_cart
                return
            try:
                ticket = sess.turns.take()
            except DemoError as exc:
                # A toast, and the text stays in the box: the chat belongs to the running turn.
                gr.Warning(str(exc))
                yield gr.update(), gr.update(), *keep_cart
                return
            try:
                if ticket.waiting:
                    # The message is taken (the box empties) while the chat keeps streaming the running turn.
                    yield gr.update(), "", *keep_cart
                    ticket.wait()
                before = bounded_transcript(list(sess.transcript) + [{"role": "user", "content": render.esc(text)}])
                # A sign of life at once: loading a model or the first model turn can take seconds.
                yield before + [WORKING], "", *cart_outputs(sess)
                try:
                    settings = settings_of(*values)
                    messages: list[dict[str, Any]] = []
                    for messages in sess.chat(text, settings):
                        yield before + (messages or [WORKING]), gr.update(), *cart_outputs(sess)
                    sess.transcript = bounded_transcript(before + messages)
                    yield sess.transcript, gr.update(), *cart_outputs(sess, pick_first=True)
                except Exception as exc:  # noqa: BLE001 - the chat shows it, the app keeps serving
                    if not isinstance(exc, DemoError):
                        logger.exception("chat turn failed")
                    sess.transcript = bounded_transcript(before + [{"role": "assistant", "content": _warning(exc)}])
                    yield sess.transcript, gr.update(), *cart_outputs(sess)
            finally:
                ticket.close()  # the next message of this tab may run (or leaves the queue, if this tab closed)

        def reset_chat(sess: DemoSession) -> tuple:
            sess.new_chat()
            return [], *cart_outputs(sess)

        def rewrite_html(text: str) -> str:
            if not backend.has_rewriter:
                return ""
            return render.rewrite_panel(text, backend.rewrite_rows(text))

        def rewrite_last(sess: DemoSession) -> str:
            return rewrite_html(sess.last_message) if sess.last_message else gr.update()

        def add_to_cart(sess: DemoSession, product_id: str, qty: Any) -> tuple:
            error = sess.add_to_cart(product_id, qty)
            return cart_outputs(sess, render.esc(error) if error else "Added.")

        def remove_from_cart(sess: DemoSession, product_id: str) -> tuple:
            error = sess.remove_from_cart(product_id)
            return cart_outputs(sess, render.esc(error) if error else "Removed.")

        def set_budget(sess: DemoSession, value: Any) -> tuple:
            sess.set_budget(value)
            return cart_outputs(sess)

        def pick_intent(name: str) -> tuple:
            choices = backend.task_choices(name)
            first = choices[0][1] if choices else None
            return gr.update(choices=choices, value=first), _task_markdown(backend, first)

        def show_task(task_id: str) -> str:
            return _task_markdown(backend, task_id)

        def solve(sess: DemoSession, task_id: str, *values: Any) -> Iterator[tuple]:
            try:
                yield from sess.run_task(task_id, settings_of(*values))
            except Exception as exc:  # noqa: BLE001
                if not isinstance(exc, DemoError):
                    logger.exception("task episode failed")
                yield [{"role": "assistant", "content": _warning(exc)}], "", ""

        def list_runs() -> Any:
            folders = backend.run_folders()
            return gr.update(choices=folders, value=folders[0] if folders else None)

        def list_episodes(run: str | None) -> tuple[Any, str]:
            if not run:
                return gr.update(choices=[], value=None), "No finished runs yet: `shoplab bench run ... --out runs/NAME`."
            rows = backend.run_episodes(run)
            choices = [(f"{'✓' if r.get('success') else '✗'} {r['task_id']} (trial {r.get('trial', 0)})", i)
                       for i, r in enumerate(rows)]
            from agents.viewer import episode_html

            # The first episode from the rows just read (show_episode would list and read the run again).
            return gr.update(choices=choices, value=0 if choices else None), episode_html(rows[0]) if rows else ""

        def show_episode(run: str | None, index: Any) -> str:
            if not run or index is None:
                return ""
            from agents.viewer import episode_html

            rows = backend.run_episodes(run)
            i = int(index)
            if not 0 <= i < len(rows):
                raise DemoError("pick an episode from the list")
            return episode_html(rows[i])

        cart_out = [cart, pick, cart_note]
        # "multiple": a message sent while the previous turn runs is taken with the text it was sent with,
        # and waits in the tab's TurnQueue (Gradio's "once" drops the click; "always_last" re-reads the
        # box when the turn ends, so a draft typed meanwhile would be sent instead).
        chat_event = dict(fn=per_tab(respond), inputs=[message, *settings_inputs], outputs=[chatbot, message, *cart_out],
                          concurrency_id="episode", trigger_mode="multiple")
        for trigger in (send.click, message.submit):
            turn = trigger(**chat_event)
            if backend.has_rewriter:
                turn.then(per_tab(_guarded(rewrite_last, lambda msg: msg)), outputs=[rewrite_out])
        new_chat.click(per_tab(reset_chat), outputs=[chatbot, *cart_out])
        note_only = lambda msg: (gr.update(), gr.update(), msg)  # noqa: E731
        add.click(per_tab(_guarded(add_to_cart, note_only)), inputs=[pick, quantity], outputs=cart_out)
        remove.click(per_tab(_guarded(remove_from_cart, note_only)), inputs=[pick], outputs=cart_out)
        budget.change(per_tab(_guarded(set_budget, note_only)), inputs=[budget], outputs=cart_out)
        intent.change(pick_intent, inputs=[intent], outputs=[task, task_query])
        task.change(show_task, inputs=[task], outputs=[task_query])
        run_task.click(per_tab(solve), inputs=[task, *settings_inputs], outputs=[task_chat, score, gold],
                       concurrency_id="episode")
        run_note = lambda msg: (gr.update(), msg)  # noqa: E731
        refresh_runs.click(list_runs, outputs=[run_pick])
        run_pick.change(_guarded(list_episodes, run_note), inputs=[run_pick], outputs=[episode_pick, episode_out])
        episode_pick.change(_guarded(show_episode, lambda msg: msg), inputs=[run_pick, episode_pick],
                            outputs=[episode_out])
        demo.load(_guarded(list_episodes, run_note), inputs=[run_pick], outputs=[episode_pick, episode_out])

        def forget_tab(request: gr.Request) -> None:
            backend.drop_session(request.session_hash)

        demo.unload(forget_tab)  # a closed tab's cart and chat go after demo.closed_tab_ttl_s
        if backend.has_rewriter:
            for trigger in (rewrite_button.click, rewrite_query.submit):
                trigger(_guarded(rewrite_html, lambda msg: msg), inputs=[rewrite_query], outputs=[rewrite_out])
    return demo


def _task_markdown(backend: DemoBackend, task_id: str | None) -> str:
    chosen = backend.tasks.get(str(task_id or ""))
    if chosen is None:
        return ""
    budget = f" · budget {chosen.voucher.budget:g}" if chosen.voucher else ""
    return f"**Request** ({chosen.intent.value}{budget}, {chosen.n_products} product(s)): {render.esc(chosen.query)}"


def warm_up(backend: DemoBackend) -> threading.Thread:
    """Load the default model and the scorer's embedder in the background, so the first user waits less."""

    def work() -> None:
        try:
            if backend.tasks:
                backend.similarity()
            backend.llm(backend.default_settings())
        except Exception:  # noqa: BLE001 - the first request reports it to the user
            logger.exception("warm-up failed")

    thread = threading.Thread(target=work, name="shoplab-warmup", daemon=True)
    thread.start()
    return thread


def launch_demo(config: DemoConfig, world: ShoppingWorld | None = None, llm_factory: LLMFactory | None = None,
                block: bool = True, warm: bool = True, quiet: bool = False) -> tuple[gr.Blocks, DemoBackend]:
    """Serve the demo on `config.demo.host:port`; with `block=False` it returns once the server is up."""
    backend = DemoBackend(config, world=world, llm_factory=llm_factory)
    if warm:
        warm_up(backend)
    demo = build_demo(backend)
    demo.queue(default_concurrency_limit=config.demo.concurrency, max_size=config.demo.max_queue)
    try:
        demo.launch(server_name=config.demo.host, server_port=config.demo.port, prevent_thread_lock=not block,
                    css=render.CSS, show_error=False, quiet=quiet, inbrowser=False)
    except KeyboardInterrupt:
        # Gradio closes on Ctrl-C once it waits; one that comes while the server is still starting lands here.
        print("Interrupted while starting... closing server.")
        demo.close()
        backend.close()
    return demo, backend
