"""The speed benchmark's table: one row per model, ratios to LightGBM, the default ensemble named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import tabfm_speed


@pytest.mark.slow
def test_tabfm_speed__tiny_table__rows_for_each_size_and_the_default(tmp_path):
    out = tmp_path / "speed.md"
    argv = ["--train", "40", "--test", "10", "--features", "4", "--repeats", "1", "--n-estimators", "1,2", "--contexts", "global,mixed",
            "--anchor-rows", "8", "--linear-features", "none", "--cell-grids", "exact",
            "--architectures", '{"attention": {"kind": "inducing"}, "n_estimators": 1}', "--members-in-turn", "--out", str(out)]
    assert tabfm_speed.main(argv) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| lightgbm", "| tabfm", "| untrained"))]
    names = [row.split("|")[1].strip() for row in rows]
    assert names == ["lightgbm", "tabfm (n_estimators=1)", "tabfm (n_estimators=2)", "tabfm (default, n_estimators=4)",
                     "tabfm (context=global)", "tabfm (context=mixed)", "tabfm (context=mixed, local_anchor_rows=8)",
                     "tabfm (linear_feature=none)", "tabfm (cell_grid=None)", 'untrained {"attention": {"kind": "inducing"}} (n_estimators=1)',
                     "tabfm (default, n_estimators=4), members in turn",
                     'untrained {"attention": {"kind": "inducing"}} (n_estimators=1), members in turn']
    header = [c.strip() for c in text.split("| model |")[1].splitlines()[0].split("|")]
    cells = {name: dict(zip(header, (c.strip() for c in row.split("|")[2:]), strict=True)) for name, row in zip(names, rows, strict=True)}
    assert cells["lightgbm"]["x lightgbm"] == "1.00" and cells["lightgbm"]["GFLOP"] == ""  # LightGBM is the unit
    assert cells["lightgbm"]["x lightgbm per round (quartiles)"] == "1.00-1.00"
    low, high = map(float, cells["tabfm (n_estimators=1)"]["x lightgbm per round (quartiles)"].split("-"))
    assert 0 < low <= high  # one round here: both quartiles are its ratio
    one, two = float(cells["tabfm (n_estimators=1)"]["GFLOP"]), float(cells["tabfm (n_estimators=2)"]["GFLOP"])
    assert one > 0 and two == pytest.approx(2 * one, rel=0.1)  # members do the same work
    inducing = float(cells['untrained {"attention": {"kind": "inducing"}} (n_estimators=1)']["GFLOP"])
    assert inducing > 0  # untrained networks are counted like the shipped one
    # Members in turn do the default ensemble's work, in their own time.
    assert cells["tabfm (default, n_estimators=4), members in turn"]["GFLOP"] == cells["tabfm (default, n_estimators=4)"]["GFLOP"]
    assert "3x LightGBM's time" in text
    assert "--n-estimators 1,2" in text


@pytest.mark.parametrize("argv", [["--n-estimators", "0"], ["--contexts", "nearest"], ["--linear-features", "yes"],
                                  ["--cell-grids", "1"], ["--cell-grids", "fine"],
                                  ["--architectures", '{"n_blocks": 2}'], ["--architectures", "[1, 2]"], ["--architectures", "{"]])
def test_tabfm_speed__bad_option__usage_error(argv):
    with pytest.raises(SystemExit):
        tabfm_speed.main(argv)
