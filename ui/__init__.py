"""The Gradio shopping-assistant demo over the agents and the sandbox (`shoplab demo`).

`DemoConfig`, `DemoBackend` and `DemoSession` need no Gradio; `build_demo` and `launch_demo`
import it when first used (the `ui` extra). Public names load on first use (`shoplab_core.lazy`).
"""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ui.config": ["CART_GROUP", "DEMO_TOOLS", "DemoConfig", "DemoSettings"],
    "ui.session": ["DemoBackend", "DemoError", "DemoSession", "EpisodeView", "TurnQueue", "TurnSettings"],
    "ui.app": ["build_demo", "launch_demo"],
})
