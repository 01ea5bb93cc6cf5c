"""The pretraining step benchmark on tiny prior batches: one row per micro-batch size, same gradients."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import pretrain_step_speed


def test_pretrain_step_speed__tiny_batch__a_row_per_size_and_the_whole_batch_gradient(tmp_path: Path) -> None:
    out = tmp_path / "steps.md"
    argv = ["--task", "classification", "--shapes", "4x40x6", "--micro-batch-sizes", "4,2,1", "--steps", "1",
            "--attention-kinds", "full,inducing", "--out", str(out)]
    assert pretrain_step_speed.main(argv) == 0
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| 4 × 40 × 6")]
    assert [(r[2], r[3]) for r in rows] == [(k, m) for k in ("full", "inducing") for m in ("whole batch", "2", "1")]
    assert float(rows[0][5]) == 1.0 and float(rows[3][5]) == 1.0  # each kind against its own whole batch
    assert all(float(r[6]) > 0.1 for r in rows)  # peak memory in GB
    assert all(float(r[7].rstrip(" |")) < 1e-4 for r in rows)


def test_pretrain_step_speed__unknown_attention_kind__usage_error() -> None:
    with pytest.raises(SystemExit):
        pretrain_step_speed.main(["--attention-kinds", "linear"])


@pytest.mark.parametrize("shapes", ["4x40", "4x0x6", "axbxc"])
def test_pretrain_step_speed__bad_shapes__exit_with_a_message(shapes: str) -> None:
    with pytest.raises(SystemExit, match="--shapes"):
        pretrain_step_speed.main(["--shapes", shapes])
