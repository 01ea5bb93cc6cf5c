"""The validation datasets follow the rule written in tabfm/validation.py, not a hand-picked list."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tabfm.validation import MAX_TRAIN_ROWS, VALIDATION_DATASETS

CATALOGUE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "catalogue.csv"
V1 = {
    "classification": ["credit_g", "tic_tac_toe", "ionosphere", "breast_w", "hmda", "ecoli", "yeast", "chile_vote"],
    "regression": ["207_autoPrice", "560_bodyfat", "hitters_salary", "547_no2", "windsor_houses", "1029_LEV",
                   "computer_prices", "slid_wages"],
}


@pytest.mark.skipif(not CATALOGUE.is_file(), reason="needs ../shared/datasets beside the repository")
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_validation_datasets__v1_plus_every_other_large_table_by_size(task: str) -> None:
    catalogue = pd.read_csv(CATALOGUE)
    of_task = catalogue[(catalogue["task"] == "regression") == (task == "regression")]
    large = of_task[of_task["n_rows"] >= 8000].sort_values("n_rows", kind="stable")["name"].tolist()
    assert VALIDATION_DATASETS[task] == V1[task] + large[::2]
    assert MAX_TRAIN_ROWS == 3000  # the benchmark's cap
