"""The Gradio shopping-assistant demo over the agents and the sandbox (`shoplab demo`).

`DemoConfig`, `DemoBackend` and `DemoSession` need no Gradio; `build_demo` and `launch_demo`
import it when first used (the `ui` extra).
"""

from typing import Any

from ui.config import CART_GROUP, DEMO_TOOLS, DemoConfig, DemoSettings
from ui.session import DemoBackend, DemoError, DemoSession, EpisodeView, TurnSettings

__all__ = ["CART_GROUP", "DEMO_TOOLS", "DemoBackend", "DemoConfig", "DemoError", "DemoSession", "DemoSettings",
           "EpisodeView", "TurnSettings", "build_demo", "launch_demo"]


def __getattr__(name: str) -> Any:
    if name in ("build_demo", "launch_demo"):
        from ui import app

        return getattr(app, name)
    raise AttributeError(name)
