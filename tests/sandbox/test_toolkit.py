"""Tools declared once: a new tool is one method on a toolkit, and every surface derives from it."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import pytest
from fastapi.testclient import TestClient
from pydantic import Field
from transformers.utils import get_json_schema

from sandbox import (
    ErrorKind,
    ShoppingEnv,
    ToolError,
    Toolkit,
    describe_tools,
    load_toolkits,
    tool,
    tool_specs,
    toolkit_names,
    trl_environment_class,
)
from sandbox.server import create_app
from sandbox.tools import TOOLS


class ShelfTools(Toolkit):
    """A toolkit a user might add: one method, nothing else written anywhere."""

    group = "shelf"

    @tool("read")
    def count_shelf(self, env: ShoppingEnv, shelf: Annotated[str, Field(description="The shelf's name.")],
                    times: Annotated[int, Field(ge=1, le=5, description="How often to count, 1 to 5.")] = 1) -> Any:
        """Count the products on a shelf of the shop.

        Anything after the first paragraph is for developers, not for the model.
        """
        if shelf == "missing":
            raise ToolError("no shelf called missing", ErrorKind.not_found)
        return {"shelf": shelf, "count": times * len(shelf), "tasks": len(env.world.tasks)}


def test_a_new_tool_is_one_method_and_appears_unchanged_everywhere(world):
    kit = ShelfTools()
    [spec] = ShelfTools.specs()
    description = "Count the products on a shelf of the shop."
    assert (spec.name, spec.kind, spec.group, spec.description) == ("count_shelf", "read", "shelf", description)

    # OpenAI tool JSON: the signature is the schema, Field descriptions document parameters.
    env = ShoppingEnv(world, toolkits=[kit])
    [schema] = [t for t in env.openai_tools() if t["function"]["name"] == "count_shelf"]
    params = schema["function"]["parameters"]
    assert schema["function"]["description"] == description
    assert params["required"] == ["shelf"] and params["properties"]["times"]["maximum"] == 5
    assert params["properties"]["shelf"] == {"description": "The shelf's name.", "type": "string"}

    # The prompt's tool text, full and compact.
    full = describe_tools(env.tool_specs())
    assert f"- count_shelf: {description}\n    shelf (string, required): The shelf's name." in full
    assert "- count_shelf(shelf, times?): Count the products on a shelf of the shop." in \
        describe_tools(env.tool_specs(), "compact")

    # The episode runs it with the sandbox's validation and typed errors.
    ok = env.step("count_shelf", {"shelf": "abc", "times": 2})
    assert ok.ok and ok.data == {"shelf": "abc", "count": 6, "tasks": len(world.tasks)}
    bad = env.step("count_shelf", {"shelf": "abc", "times": 9})
    assert bad.error_kind == "invalid_arguments" and "times" in bad.observation
    missing = env.step("count_shelf", {"shelf": "missing"})
    assert missing.error_kind == "not_found" and missing.observation == "Error: no shelf called missing"

    # The HTTP routes: listed in /tools, a stateless GET route, and a step of an episode.
    client = TestClient(create_app(world, max_episodes=4, toolkits=[kit]))
    listed = {t["function"]["name"]: t for t in client.get("/tools").json()}
    assert listed["count_shelf"]["function"] == schema["function"] and listed["count_shelf"]["group"] == "shelf"
    got = client.get("/count_shelf", params={"shelf": "abc", "times": "3"})
    assert got.status_code == 200 and got.json()["count"] == 9
    assert client.get("/count_shelf", params={"shelf": "missing"}).status_code == 404
    assert client.get("/count_shelf", params={"times": "2"}).status_code == 422
    route = next(p for p in client.get("/openapi.json").json()["paths"] if p == "/count_shelf")
    assert route
    episode = client.post("/episodes", json={"tools": ["shelf", "terminate"]}).json()
    assert [t["function"]["name"] for t in episode["tools"]] == ["terminate", "count_shelf"]
    step = client.post(f"/episodes/{episode['episode_id']}/step",
                       json={"tool": "count_shelf", "arguments": {"shelf": "missing"}}).json()
    assert step["ok"] is False and step["error_kind"] == "not_found"

    # TRL's environment_factory: a public method TRL reads with transformers' get_json_schema.
    class Episode(trl_environment_class(env.tool_specs())):
        def _step(self, name, arguments):
            return env.step(name, arguments).observation

    trl_schema = get_json_schema(Episode().count_shelf)
    assert trl_schema["function"]["name"] == "count_shelf"
    assert trl_schema["function"]["description"] == description
    assert trl_schema["function"]["parameters"]["required"] == ["shelf"]
    assert set(trl_schema["function"]["parameters"]["properties"]) == {"shelf", "times"}
    assert '"count":3' in Episode().count_shelf(shelf="abc")


def test_sandbox_schemas_are_derived_from_the_toolkits():
    assert list(TOOLS) == ["find_product", "view_product_information", "recommend_product", "terminate",
                           "calculate", "add_to_cart", "view_cart", "remove_from_cart"]
    assert [s.name for s in tool_specs(["shoppingbench"])] == list(TOOLS)[:4]
    assert [s.name for s in tool_specs(["cart", "terminate"])] == ["terminate", "add_to_cart", "view_cart",
                                                                   "remove_from_cart"]
    with pytest.raises(ValueError, match="unknown tools"):
        tool_specs(["shelf"])


def test_a_tool_without_docstring_or_types_is_refused_at_declaration():
    class NoDoc(Toolkit):
        @tool("read")
        def nodoc(self, x: int) -> int:
            return x

    with pytest.raises(TypeError, match="docstring"):
        NoDoc.specs()

    class Untyped(Toolkit):
        @tool("write")
        def untyped(self, x) -> int:
            """Do it."""
            return x

    with pytest.raises(TypeError, match="annotation"):
        Untyped.specs()
    with pytest.raises(ValueError, match="read' or 'write"):
        tool("sometimes")


def test_two_toolkits_declaring_one_name_are_refused(world):
    class Again(Toolkit):
        @tool("read")
        def find_product(self, q: str) -> str:
            """Shadow the sandbox's search."""
            return q

    with pytest.raises(ValueError, match="declared by both"):
        ShoppingEnv(world, toolkits=[Again()])


def test_plugin_toolkits_are_found_by_entry_point_and_built_from_config(world):
    assert {"rewrite", "recsys"} <= set(toolkit_names())
    rewrite, recsys = load_toolkits({"rewrite": {"rewriter": "rule"}, "recsys": None}, world)
    env = ShoppingEnv(world, toolkits=[rewrite, recsys])
    assert {"rewrite_query", "rank_products", "similar_products", "recommend_next"} <= set(env.tool_names)
    unconfigured = env.step("rank_products", {"product_ids": ["x"]})
    assert unconfigured.error_kind == "unavailable" and "shoplab recsys build-service" in unconfigured.observation
    rewritten = env.step("rewrite_query", {"query": "cheap red running shoes for men under 50 dollars please"})
    assert rewritten.ok and rewritten.data["rewrites"]
    with pytest.raises(ValueError, match="unknown toolkits"):
        load_toolkits({"nope": {}}, world)
    # Two instances never share loaded state: each has its own rewriter.
    other = load_toolkits({"rewrite": {"rewriter": "rule"}}, world)[0]
    assert other.rewriter() is not rewrite.rewriter()


def test_error_kinds_decide_http_status_not_message_text():
    assert ErrorKind.invalid_arguments.http_status == 422
    assert ErrorKind.internal.http_status == 500
    assert ErrorKind.not_found.http_status == 404
    assert ErrorKind.unavailable.http_status == 503
    assert ToolError("x").kind is ErrorKind.rejected
    assert "env" not in inspect.signature(ShelfTools.specs()[0].args_model).parameters
