"""The paired A/B comparison of two pretraining runs reads their logs and pairs equal steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.pretrain_ab import main, paired_losses, summarise


def _run(path: Path, steps: np.ndarray, losses: np.ndarray, val: list[tuple[int, float]]) -> Path:
    path.mkdir()
    pd.DataFrame({"step": steps, "loss": losses}).to_csv(path / "loss_log.csv", index=False)
    pd.DataFrame(val, columns=["step", "mean"]).to_csv(path / "val_log.csv", index=False)
    return path


def test__paired_losses__difference_at_common_steps_after_the_branch(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    batch_noise = rng.normal(0, 0.3, 100)  # the same batches: large noise shared by both runs
    steps = np.arange(0, 1000, 10)
    a = _run(tmp_path / "a", steps, 1.0 + batch_noise, [(0, 0.8), (500, 0.81)])
    b_steps = steps[steps >= 300]
    b = _run(tmp_path / "b", b_steps, 0.9 + batch_noise[steps >= 300] + rng.normal(0, 0.01, len(b_steps)), [(500, 0.83)])
    both = paired_losses(a, b, from_step=300)
    assert both["step"].min() == 310 and len(both) == 69
    table = summarise(both, window=200)
    overall = table[table["steps"] == "all"].iloc[0]
    assert overall["diff"] == pytest.approx(-0.1, abs=0.01) and overall["se"] < 0.005
    assert main([str(a), str(b), "--from-step", "300", "--plot", str(tmp_path / "ab.png")]) == 0
    out = capsys.readouterr().out
    assert "A 0.8100 at step 500, B 0.8300 at step 500" in out and (tmp_path / "ab.png").is_file()
    with pytest.raises(SystemExit, match="nothing to compare"):
        main([str(a), str(b), "--from-step", "5000"])
