"""``tabfm demo`` runs offline, in process, and prints a score table per bundled dataset."""

from __future__ import annotations

import re

import pytest

from tabfm.cli import main


@pytest.mark.slow
def test_demo__default__prints_lightgbm_scores_for_both_tasks(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("LightGBM")]
    assert len(lines) == 2, out
    auc = float(lines[0].split()[1])
    r2 = float(lines[1].split()[1])
    assert 0.9 < auc <= 1.0  # breast cancer is easy
    assert 0.0 < r2 < 1.0
    assert "XGBoost" in out and "linear (logistic)" in out and "linear (ridge)" in out
    # TabFM either has a row or a one-line note saying why not.
    assert (
        re.search(r"^TabFM\s", out, re.M)
        or "TabFMClassifier is not available" in out
        or "TabFM skipped" in out
    )


def test_demo__one_dataset__only_that_table(capsys):
    assert main(["demo", "--dataset", "diabetes", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "diabetes (regression" in out and "breast_cancer" not in out
    assert "seed 1" in out
