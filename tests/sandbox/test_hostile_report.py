"""The hostile-input report (benchmarks/hostile_report.py) on a reduced corpus: every surface but the build
must show 0 crashes, 0 calls over 1 s and 0 data lost."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import hostile_report  # noqa: E402

SURFACES = ("tools", "http", "runner", "demo", "parser")

# Cases the report finds that are not fixed yet (case name -> where); empty: every case must pass.
KNOWN_OPEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def report(world, tmp_path_factory):
    return hostile_report.run_report(world, SURFACES, quick=True, work=tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("surface", SURFACES)
def test_no_crash_no_slow_call_no_data_lost(report, surface):
    summary = report["summary"][surface]
    assert summary["tried"] >= 30, summary
    missed = [c for c in report["cases"] if c["surface"] == surface and (c["crash"] or c["over_1s"] or c["lost"])]
    new = [c for c in missed if c["case"] not in KNOWN_OPEN]
    assert not new, "\n".join(f"{c['case']}: crash={c['crash']} seconds={c['seconds']} lost={c['lost']} {c['note']}"
                              for c in new)


def test_the_report_counts_and_tables_every_case(report):
    cases = report["cases"]
    assert {c["surface"] for c in cases} == set(SURFACES)
    table = hostile_report.markdown(report)
    for surface in SURFACES:
        s = report["summary"][surface]
        assert f"| {surface} | {s['tried']} | {s['crashes']} | {s['over_1s']} | {s['lost']} |" in table
    items = {i for c in cases for i in c["item"].split(",") if i}
    assert {"1", "3", "4", "5", "6", "7", "11", "13", "14", "18", "19"} <= items  # the inputs, replayed
