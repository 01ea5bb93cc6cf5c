"""Fixtures shared by the test modules: two tiny benchmark datasets in the shared folder layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def _write_datasets(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 90
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    y = ((x1 + (colour == "red") + 0.3 * rng.normal(size=n)) > 0.5).astype(np.int64)
    x2[rng.random(n) < 0.15] = np.nan
    colour = pd.Series(colour, dtype="object")
    colour[rng.random(n) < 0.1] = None
    pd.DataFrame({"x1": x1, "x2": x2, "colour": colour.astype("category"), "target": y}).to_parquet(
        folder / "tiny_binary.parquet"
    )
    m = 70
    a, b = rng.normal(size=m), rng.uniform(size=m)
    pd.DataFrame({"a": a, "b": b, "target": 2 * a - b + 0.1 * rng.normal(size=m)}).to_parquet(
        folder / "tiny_regression.parquet"
    )
    pd.DataFrame(
        {"name": ["tiny_binary", "tiny_regression"], "task": ["binary", "regression"]}
    ).to_csv(folder / "catalogue.csv", index=False)
    return folder


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return _write_datasets(folder)
