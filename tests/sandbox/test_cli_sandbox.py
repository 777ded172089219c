"""`shoplab sandbox ...` from the command line, as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
from typer.testing import CliRunner

from shoplab_cli import app

TASKS = sorted(str(p) for p in Path(__file__).resolve().parents[2].glob("data/shoppingbench/*.jsonl"))


def test_build_info_search_export(tmp_path):
    runner = CliRunner()
    out = tmp_path / "sb"
    # `--tasks a b c` as a shell glob expands, and `--tasks a --tasks b` both work.
    built = runner.invoke(app, ["sandbox", "build", "--data-dir", str(out), "--tasks", *TASKS, "--products", "4000"])
    assert built.exit_code == 0, built.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_products"] == 4000 and manifest["n_tasks"] == 312
    assert set(manifest["intents"]) == {"product", "shop", "voucher", "web"}

    info = runner.invoke(app, ["sandbox", "info", "--data-dir", str(out)])
    assert info.exit_code == 0 and '"n_products": 4000' in info.output

    found = runner.invoke(app, ["sandbox", "search", "--data-dir", str(out), "rubber wheel", "--price", "10-500",
                                "--sort", "priceasc"])
    assert found.exit_code == 0, found.output
    prices = [p["price"] for p in json.loads(found.output)]
    assert prices == sorted(prices) and all(10 <= p <= 500 for p in prices)
    bad = runner.invoke(app, ["sandbox", "search", "--data-dir", str(out), "wheel", "--price", "abc"])
    assert bad.exit_code == 1 and "price must look like" in bad.output

    parquet = tmp_path / "products.parquet"
    exported = runner.invoke(app, ["sandbox", "export", "--data-dir", str(out), "--out", str(parquet)])
    assert exported.exit_code == 0, exported.output
    ds = datasets.load_dataset("parquet", data_files=str(parquet))["train"]
    assert ds.num_rows == 4000 and len(set(ds["product_id"])) == 4000
    assert isinstance(json.loads(ds[0]["attributes"]), dict)


def test_build_rejects_a_bad_task_file_with_its_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "x", "reward": {"product_id": "1", "title": ["t"]}}\n{"query": "y"}\n')
    result = CliRunner().invoke(app, ["sandbox", "build", "--data-dir", str(tmp_path / "sb"), "--tasks", str(bad),
                                      "--products", "100"])
    assert result.exit_code == 2
    assert "bad.jsonl:2" in "".join(result.output.split())


def test_info_on_a_folder_that_is_not_a_sandbox(tmp_path):
    result = CliRunner().invoke(app, ["sandbox", "info", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "not a built sandbox" in " ".join(result.output.split())
