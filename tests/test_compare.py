"""benchmarks.compare: paired per-dataset differences from runner CSVs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmarks import compare


def _rows(model: str, scores: dict[str, float]) -> list[dict]:
    return [
        {"dataset": d, "task": "binary" if d.startswith("c") else "regression", "model": model, "seed": s,
         "roc_auc": v if d.startswith("c") else None, "r2": None if d.startswith("c") else v, "error": None}
        for d, v in scores.items() for s in (0, 1)
    ]


def test__compare__counts_ties_best_of_and_before(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    now = tmp_path / "now.csv"
    before = tmp_path / "before.csv"
    pd.DataFrame(_rows("base", {"c1": 0.80, "c2": 0.90, "r1": 0.50}) + _rows("new", {"c1": 0.85, "c2": 0.8999, "r1": 0.40})).to_csv(now, index=False)
    pd.DataFrame(_rows("base", {"c1": 0.70, "c2": 0.95, "r1": 0.50})).to_csv(before, index=False)

    table = compare.paired(compare._scores(now, ["base", "new"])[["base", "new"]], "base", tolerance=0.001)
    assert table.loc["new", ["better", "worse"]].tolist() == [1, 1]  # c2's -0.0001 is a tie
    assert table.loc["new", "largest_gains"] == "c1 +0.0500" and table.loc["new", "largest_losses"] == "r1 -0.1000"

    compare.main([str(now), "--base", "base", "--models", "new", "--task", "classification"])
    out = capsys.readouterr().out
    assert out.startswith("2 datasets") and "mean 0.8750" in out  # best of base and new on c1, c2

    compare.main([str(now), "--base", "base", "--before", str(before)])
    out = capsys.readouterr().out
    assert "base (before)" in out and "3 datasets" in out


def test__compare__before_with_more_seeds__pairs_the_common_splits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    now = tmp_path / "now.csv"
    before = tmp_path / "before.csv"
    pd.DataFrame(_rows("base", {"c1": 0.80})).to_csv(now, index=False)  # seeds 0, 1
    extra = [{**row, "seed": 2, "roc_auc": 0.10} for row in _rows("base", {"c1": 0.0})[:1]]  # a third seed, far off
    pd.DataFrame(_rows("base", {"c1": 0.70}) + extra).to_csv(before, index=False)
    compare.main([str(now), "--base", "base", "--before", str(before)])
    out = capsys.readouterr().out
    assert "c1 +0.1000" in out  # 0.80 against 0.70: seed 2 of the earlier file (0.10) is left out
