"""`shoplab sandbox ...`: build, inspect and serve a shopping world."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shoplab_core.config import cli_config, config_option, data_dir_option, set_option
from shoplab_core.errors import fail

app = typer.Typer(help="Build, inspect and serve the shopping sandbox.", no_args_is_help=True)
console = Console()


def extra_task_files(ctx: typer.Context, tasks: list[Path] | None) -> list[Path]:
    """`--tasks a.jsonl b.jsonl` (shell globs) as well as `--tasks a.jsonl --tasks b.jsonl`."""
    extra = [Path(a) for a in ctx.args]
    bad = [str(p) for p in extra if not p.is_file()]
    if bad:
        raise typer.BadParameter(f"not a task file: {bad[0]}", param_hint="--tasks")
    return list(tasks or []) + extra


MULTI_VALUE = {"allow_extra_args": True, "ignore_unknown_options": False}


@app.command(context_settings=MULTI_VALUE)
def build(
    ctx: typer.Context,
    data_dir: Path = data_dir_option("Where the sandbox is written."),
    tasks: list[Path] | None = typer.Option(None, "--tasks", exists=True, help="ShoppingBench-format task files "
                                            "(any intent; default: the four bundled dev files, "
                                            "data/shoppingbench/*.jsonl)."),
    products: int = typer.Option(200_000, "--products", min=1, help="The catalogue's exact size: gold products, "
                                 "their decoys and generated fillers. When golds and decoys alone are more, decoys "
                                 "are left out evenly (the manifest's n_decoys_left_out says how many); fewer "
                                 "products than golds is an error."),
    backend: str = typer.Option("tantivy", "--backend", help="tantivy (embedded) or elasticsearch."),
    seed: int = typer.Option(0, "--seed"),
    es_url: str | None = typer.Option(None, "--es-url", envvar="SHOPLAB_ES_URL"),
    es_index: str = typer.Option("shoplab-products", "--es-index", envvar="SHOPLAB_ES_INDEX"),
    es_api_key: str | None = typer.Option(None, "--es-api-key", envvar="SHOPLAB_ES_API_KEY"),
    es_shards: int = typer.Option(1, "--es-shards", envvar="SHOPLAB_ES_SHARDS"),
    es_replicas: int = typer.Option(0, "--es-replicas", envvar="SHOPLAB_ES_REPLICAS"),
    skip_bad_tasks: bool = typer.Option(False, "--skip-bad-tasks", help="Build without the tasks that cannot be "
                                        "built (unsatisfiable, or contradicting an earlier task), listing each with "
                                        "its file and line in the manifest's conflicts; by default they fail the "
                                        "build. Lines out of format always fail it."),
    workers: int = typer.Option(0, "--workers", min=0, help="Processes that generate and analyse products "
                                "(0: one per core; 1: none). The catalogue is the same whatever the number."),
    dense: bool = typer.Option(False, "--dense", help="Also train the dense encoder and build the dense index "
                               "(find_product's dense and hybrid search modes)."),
    config: Path | None = config_option(help="With --dense: a YAML of DenseConfig (encoder:, train:, index:)."),
    overrides: list[str] | None = set_option("With --dense: e.g. --set index.kind=flat --set train.max_epochs=2."),
) -> None:
    """Import task files, rebuild their gold products and decoys, fill to N products, index."""
    from sandbox.catalogue import build_sandbox
    from sandbox.dense.build import DenseConfig
    from sandbox.tasks import TaskFormatError, bundled_task_files

    tasks = extra_task_files(ctx, tasks) or bundled_task_files()
    if (config or overrides) and not dense:
        raise typer.BadParameter("--config/--set configure the dense index: add --dense", param_hint="--dense")
    dense_cfg = cli_config(DenseConfig, config, overrides=overrides) if dense else None
    es_options = None
    if backend == "elasticsearch":
        es_options = {"url": es_url or "http://localhost:9200", "index": es_index, "api_key": es_api_key,
                      "number_of_shards": es_shards, "number_of_replicas": es_replicas}
    elif backend != "tantivy":
        raise typer.BadParameter("backend must be 'tantivy' or 'elasticsearch'", param_hint="--backend")
    try:
        report = build_sandbox(data_dir, tasks, products, backend=backend, seed=seed, es_options=es_options,
                               skip_bad_tasks=skip_bad_tasks, dense=dense_cfg, workers=workers)
    except TaskFormatError as exc:
        fail(f"task file error: {exc}")
    except ValueError as exc:  # e.g. too few --products, or a folder that is not a sandbox
        fail(f"cannot build: {exc}", 1)
    table = Table(title=f"sandbox built in {report.seconds:.1f}s ({report.products_per_second:,.0f} products/s)")
    for col in ("products", "gold", "decoys", "fillers", "tasks", "intents"):
        table.add_column(col)
    table.add_row(f"{report.n_products:,}", str(report.n_gold), str(report.n_decoys), f"{report.n_fillers:,}",
                  str(report.n_tasks), ", ".join(f"{k} {v}" for k, v in report.intents.items()))
    console.print(table)
    for c in report.conflicts:
        console.print(f"[yellow]task skipped:[/yellow] {escape(c)}", soft_wrap=True)
    if report.n_decoys_left_out:
        console.print(f"[yellow]{report.n_decoys_left_out:,} decoys left out[/yellow] to keep the catalogue at "
                      f"{products:,} products: ask for {products + report.n_decoys_left_out:,} to keep them all")
    if dense:
        _print_dense(json.loads((data_dir / "manifest.json").read_text()).get("dense") or {})


def _print_dense(summary: dict[str, Any]) -> None:
    best = summary.get("best_epoch") or {}
    console.print(f"dense index ({summary.get('kind')}) of {summary.get('n_products', 0):,} products in "
                  f"{summary.get('seconds', 0):.1f}s (training {summary.get('train_seconds', 0):.1f}s, encoding "
                  f"{summary.get('encode_seconds', 0):.1f}s, indexing {summary.get('index_seconds', 0):.1f}s); peak "
                  f"RSS {summary.get('peak_rss_mb', 0):,.0f} MB; encoder validation recall@10 "
                  f"{best.get('val_recall@10', float('nan')):.3f}")


@app.command("dense-index")
def dense_index(
    data_dir: Path = data_dir_option(),
    config: Path | None = config_option(help="A YAML of DenseConfig (encoder:, train:, index:); --set overrides it."),
    overrides: list[str] | None = set_option("e.g. --set index.kind=flat --set train.max_epochs=2 (repeatable)."),
) -> None:
    """Train the dense encoder and build the dense index of an existing sandbox (replacing an earlier one)."""
    from sandbox import ShoppingWorld
    from sandbox.dense.build import DenseConfig, build_dense_index

    dense_cfg = cli_config(DenseConfig, config, overrides=overrides)
    try:
        world = ShoppingWorld.open(data_dir, search_mode="bm25")
    except FileNotFoundError as exc:
        fail(exc, 1)
    try:
        summary = build_dense_index(world, dense_cfg, progress=True)
    except ValueError as exc:
        fail(f"cannot build the dense index: {exc}", 1)
    finally:
        world.close()
    _print_dense(summary)


@app.command("gen-tasks")
def gen_tasks(
    data_dir: Path = data_dir_option(),
    out: Path = typer.Option(..., "--out", help="A ShoppingBench-format .jsonl task file."),
    config: Path | None = config_option(help="A YAML of TaskGeneratorConfig fields; --set and flags override it."),
    overrides: list[str] | None = set_option("Override a generator setting: --set p_price=0.5 (repeatable)."),
    n_product: int | None = typer.Option(None, "--n-product", min=0, help="Product tasks (default 300)."),
    n_shop: int | None = typer.Option(None, "--n-shop", min=0, help="Shop tasks (default 0)."),
    seed: int | None = typer.Option(None, "--seed", help="Default 0."),
    start: int | None = typer.Option(None, "--start", min=0, help="First generated product drawn from (default 0)."),
    pool: int | None = typer.Option(None, "--pool", min=1, help="Generated products drawn from, from --start on "
                                    "(default 20000): runs whose [start, start+pool) ranges do not overlap share "
                                    "no product."),
) -> None:
    """Training tasks from the catalogue's generated products (never the evaluation tasks' golds)."""
    from sandbox import ShoppingWorld
    from sandbox.task_generator import TaskGeneratorConfig, generate_tasks

    gen_config = cli_config(TaskGeneratorConfig, config, overrides=overrides, flags={
        "n_product": n_product, "n_shop": n_shop, "seed": seed, "start": start, "pool": pool})
    tasks = generate_tasks(ShoppingWorld.open(data_dir), gen_config)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for t in tasks:
            fh.write(json.dumps(t.to_shoppingbench(), ensure_ascii=False) + "\n")
    counts = {i: sum(t.intent.value == i for t in tasks) for i in ("product", "shop")}
    console.print(f"wrote {len(tasks)} tasks ({counts}) to {out}")


@app.command()
def info(data_dir: Path = data_dir_option()) -> None:
    """Print a built sandbox's manifest."""
    from sandbox.world import SandboxNotFoundError, sandbox_manifest_path

    try:
        manifest = sandbox_manifest_path(data_dir)
    except SandboxNotFoundError as exc:
        fail(exc, 1)
    console.print_json(manifest.read_text())


@dataclass
class ServeConfig:
    """What `shoplab sandbox serve` adds to the sandbox's own tools."""

    # Plug-in toolkits and their options, as in an agent config: {recsys: {service: runs/recsys/service}}.
    toolkits: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    # shoplab (validated, explained) | shoppingbench (GET routes and episodes answer as upstream's service).
    profile: str = "shoplab"
    # find_product's retrieval under the shoplab profile: bm25 | dense | hybrid (None: the manifest's, else bm25).
    search_mode: str | None = None


@app.command()
def serve(
    data_dir: Path = data_dir_option(),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(5631, "--port"),
    backend: str | None = typer.Option(None, "--backend"),
    config: Path | None = config_option(help="A YAML with `toolkits:` (plug-in toolkits to serve too)."),
    overrides: list[str] | None = set_option("e.g. --set toolkits.rewrite.rewriter=rule (repeatable)."),
    profile: str | None = typer.Option(None, "--profile", help="shoplab (default: validated arguments, readable "
                                       "errors) | shoppingbench (answers exactly as ShoppingBench's service)."),
    search_mode: str | None = typer.Option(None, "--search-mode", help="bm25 | dense | hybrid (default: the "
                                           "sandbox manifest's, else bm25)."),
) -> None:
    """Serve the tools over HTTP (ShoppingBench-compatible GET endpoints + episodes; OpenAPI at /docs)."""
    from sandbox.server import serve as run_server
    from sandbox.shoppingbench_profile import PROFILES
    from sandbox.toolkit import toolkit_names

    served = cli_config(ServeConfig, config, overrides=overrides, flags={"profile": profile,
                                                                         "search_mode": search_mode})
    if served.profile not in PROFILES:
        raise typer.BadParameter(f"unknown profile {served.profile!r}; choose from {', '.join(PROFILES)}",
                                 param_hint="--profile")
    unknown = sorted(set(served.toolkits) - set(toolkit_names()))
    if unknown:
        raise typer.BadParameter(f"unknown toolkits {unknown}; installed: {', '.join(toolkit_names())}",
                                 param_hint="--config/--set")
    if served.search_mode is not None:
        from sandbox.world import check_search_mode

        try:
            check_search_mode(data_dir, served.search_mode)
        except (FileNotFoundError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--search-mode") from None
    run_server(data_dir, host=host, port=port, backend=backend, toolkits=served.toolkits, profile=served.profile,
               search_mode=served.search_mode)


@app.command()
def search(
    data_dir: Path = data_dir_option(),
    q: str = typer.Argument(..., help="The search words, as an agent's `q`."),
    page: int = typer.Option(1, "--page", help="1 to 5, 10 products a page."),
    price: str | None = typer.Option(None, "--price", help="MIN-MAX, MIN- (at least) or -MAX (at most)."),
    service: str | None = typer.Option(None, "--service", help="Comma-separated, all required: official, "
                                       "freeShipping, COD, flashsale."),
    sort: str = typer.Option("default", "--sort", help="default (relevance) | priceasc | pricedesc | order "
                             "(sales)."),
    shop_id: str | None = typer.Option(None, "--shop-id", help="Only this shop's products."),
    search_mode: str | None = typer.Option(None, "--search-mode", help="bm25 | dense | hybrid (default: the "
                                           "sandbox manifest's, else bm25)."),
) -> None:
    """Run one find_product call, as an agent would."""
    from sandbox import ShoppingEnv, ShoppingWorld

    try:
        world = ShoppingWorld.open(data_dir, search_mode=search_mode)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc, 1)
    env = ShoppingEnv(world)
    result = env.step("find_product", {"q": q, "page": page, "price": price, "service": service, "sort": sort,
                                       "shop_id": shop_id})
    if not result.ok:
        fail(result.observation, 1)
    console.print_json(json.dumps(result.data if result.data else []))


@app.command()
def export(
    data_dir: Path = data_dir_option(),
    out: Path = typer.Option(..., "--out", help="A .parquet file (HF `datasets.load_dataset('parquet', ...)` reads it)."),
    batch: int = typer.Option(50_000, "--batch", min=1000),
) -> None:
    """Stream the whole catalogue out of the index into Parquet (nested fields as JSON strings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from sandbox import ShoppingWorld
    from sandbox.data_model import PRODUCT_FIELDS

    world = ShoppingWorld.open(data_dir)
    if not hasattr(world.backend, "iter_all"):
        raise typer.BadParameter("export reads the embedded tantivy index", param_hint="--data-dir")
    nested = ("sku_options", "attributes", "service")
    writer = None
    rows: list[dict] = []

    def flush() -> None:
        nonlocal writer, rows
        if not rows:
            return
        table = pa.Table.from_pylist(rows)
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
        rows = []

    out.parent.mkdir(parents=True, exist_ok=True)
    for p in tqdm(world.backend.iter_all(batch), total=world.backend.count(), unit="prod", desc="export"):
        row = {f: p.get(f) for f in PRODUCT_FIELDS}
        for f in nested:
            row[f] = json.dumps(row[f] or ({} if f != "service" else []), ensure_ascii=False)
        row["price"] = float(row["price"])
        row["sold_count"] = int(row["sold_count"] or 0)
        rows.append(row)
        if len(rows) >= batch:
            flush()
    flush()
    if writer is not None:
        writer.close()
    console.print(f"wrote {out}")
