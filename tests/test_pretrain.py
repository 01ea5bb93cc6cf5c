"""Pretraining: the loss goes down, and a run resumes where it stopped, from either state."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from priors import make_batch
from tabfm.checkpoint import load_checkpoint, save_checkpoint
from tabfm.pretrain import (
    MUON_EXCLUDED,
    PretrainConfig,
    Pretrainer,
    accumulate_gradients,
    add_ridge_columns,
    batch_loss,
    batch_losses,
    curriculum,
    learning_rate,
    make_optimizers,
)
from tabfm.ridge_feature import table_ridge_columns

TINY_MODEL = {
    "d_model": 16, "d_cell": 8, "d_cell_ffn": 16, "n_cell_heads": 2, "n_col_inducing": 4, "n_row_blocks": 1,
    "n_cls": 2, "n_icl_blocks": 1, "d_ffn": 32, "n_thinking_rows": 1, "attention": {"n_heads": 2, "n_inducing": 4},
}


def _config(task: str = "classification", **overrides: object) -> PretrainConfig:
    base = dict(
        task=task, recipe="smoke", batch_size=4, warmup_steps=2, rows_start=(32, 48), rows_end=(32, 64),
        features_start=(2, 4), features_end=(2, 6), num_workers=0, log_every=1, model=TINY_MODEL,
    )
    return PretrainConfig(**{**base, **overrides})


def test__learning_rate__warmup_cosine_and_rewarmup() -> None:
    c = PretrainConfig(lr=1e-3, warmup_steps=10, total_steps=10_000, min_lr_ratio=0.1, rewarmup_steps=5)
    assert learning_rate(c, 0) == pytest.approx(1e-4, rel=1e-3)
    assert learning_rate(c, 9) == pytest.approx(1e-3, rel=1e-3)
    assert learning_rate(c, 5_000) == pytest.approx(0.55e-3, rel=1e-3)  # half-way down the cosine
    assert learning_rate(c, 10_000) == pytest.approx(1e-4, rel=1e-6)
    assert learning_rate(c, 50, resumed_at=50) == pytest.approx(learning_rate(c, 50) / 5)


def test__learning_rate__cooldown__from_the_branch_rate_to_zero() -> None:
    c = PretrainConfig(lr=1e-3, warmup_steps=10, total_steps=10_000, cooldown_steps=100, cooldown_start=5_000)
    assert learning_rate(c, 4_999) == pytest.approx(learning_rate(replace(c, cooldown_steps=0), 4_999))
    assert learning_rate(c, 5_000) == pytest.approx(learning_rate(replace(c, cooldown_steps=0), 5_000))
    assert learning_rate(c, 5_025) == pytest.approx(learning_rate(c, 5_000) * 0.5)  # 1 - sqrt(1/4)
    assert learning_rate(c, 5_100) == 0.0


def test__learning_rate__cooldown_without_optimizer_moments__rewarms_to_the_decaying_rate() -> None:
    # A branch that changes the network (new parameters) starts without moments: its first steps
    # re-warm, then follow the branch's decay from the branch point's full rate, not 1/rewarmup of it.
    c = PretrainConfig(lr=1e-3, warmup_steps=10, total_steps=10_000, cooldown_steps=100, cooldown_start=5_000, rewarmup_steps=5)
    plain = replace(c, rewarmup_steps=1)
    assert learning_rate(c, 5_000, resumed_at=5_000) == pytest.approx(learning_rate(plain, 5_000) / 5)
    assert learning_rate(c, 5_025, resumed_at=5_000) == pytest.approx(learning_rate(plain, 5_000) * 0.5)
    # Resumed mid-branch: the re-warmup scales the rate of the step it reaches.
    assert learning_rate(c, 5_026, resumed_at=5_025) == pytest.approx(learning_rate(c, 5_026) * 2 / 5)


def test__curriculum__deterministic_and_growing() -> None:
    c = PretrainConfig(curriculum_steps=100)
    shape = curriculum(c)
    assert shape(5) == shape(5)
    early = [shape(s) for s in range(0, 20)]
    late = [shape(s) for s in range(200, 220)]
    assert all(c.rows_start[0] <= r <= c.rows_end[1] for r, _ in early + late)
    assert max(r for r, _ in early) <= c.rows_start[1] + 0.2 * (c.rows_end[1] - c.rows_start[1]) + 1
    assert sum(r for r, _ in late) > sum(r for r, _ in early)
    assert sum(f for _, f in late) > sum(f for _, f in early)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__batch_loss__finite_and_decreases_when_fitting_one_batch(task: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    trainer = Pretrainer(_config(task), out=tmp_path)
    batch = make_batch("smoke", task, batch_size=4, n_rows=48, max_features=4, seed=1)
    optimizer = torch.optim.Adam(trainer.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = batch_loss(trainer.model, batch, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.85 * losses[0]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__accumulate_gradients__micro_batches_by_width__the_batch_loss_and_gradients(task: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Pretrainer(_config(task), out=tmp_path).model
    batch = make_batch("smoke", task, batch_size=6, n_rows=40, max_features=6, seed=3)
    assert len(set(batch.feature_mask.sum(dim=1).tolist())) > 1  # widths differ, so parts get cut

    def gradients() -> torch.Tensor:
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    model.zero_grad()
    whole = batch_loss(model, batch, torch.device("cpu"))
    whole.backward()
    expected = gradients().clone()
    for size in (1, 4, 6):
        model.zero_grad()
        loss = accumulate_gradients(model, batch, torch.device("cpu"), size)
        assert loss == pytest.approx(whole.item(), rel=1e-5)
        torch.testing.assert_close(gradients(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__add_ridge_columns__after_each_tables_features__the_tables_cells_kept(task: str) -> None:
    batch = make_batch("smoke", task, batch_size=6, n_rows=40, max_features=5, seed=2)
    assert add_ridge_columns(batch, 0.0, np.random.default_rng(0)) is batch
    widened = add_ridge_columns(batch, 1.0, np.random.default_rng(0))
    widths = batch.feature_mask.sum(dim=1)
    for b in range(6):
        f = int(widths[b])
        k = int(batch.n_classes[b])
        t = 1 if task == "regression" or k == 2 else k
        assert int(widened.feature_mask[b].sum()) == f + t
        assert not widened.categorical[b, f:].any()
        torch.testing.assert_close(widened.x[b, :, :f], batch.x[b, :, :f], equal_nan=True)
        y = batch.y[b, : batch.split].numpy().astype(np.float64)
        targets = ((y - y.mean()) / y.std())[:, None] if task == "regression" else (y[:, None] == np.arange(k))[:, -t:]
        expected = table_ridge_columns(batch.x[b, :, :f].numpy(), batch.categorical[b, :f].numpy(), targets, batch.split)
        np.testing.assert_allclose(widened.x[b, :, f : f + t].numpy(), expected, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(batch_loss(_tiny_model(task), widened, torch.device("cpu")))
    some = add_ridge_columns(batch, 0.5, np.random.default_rng(1))
    assert 0 < int((some.feature_mask.sum(dim=1) > widths).sum()) < 6


def _tiny_model(task: str):
    from models.icl import ICLTransformer

    torch.manual_seed(0)
    return ICLTransformer(_config(task).model_config())


def test__pretrain_config__ridge_columns__a_probability() -> None:
    with pytest.raises(ValueError, match="ridge_columns"):
        PretrainConfig(ridge_columns=1.5)


def test__make_optimizers__muon__hidden_matrices_only_and_every_parameter_once() -> None:
    from models.icl import ICLTransformer

    model = ICLTransformer(_config().model_config())
    adamw, muon = make_optimizers(model, _config(optimizer="muon"))
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert not in_muon & in_adamw and in_muon | in_adamw == {id(p) for p in model.parameters()}
    modules = dict(model.named_modules())
    assert all(id(modules[name].weight) in in_adamw for name in MUON_EXCLUDED)
    assert id(modules["blocks.0.ffn.fc1"].weight) in in_muon
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    assert len(make_optimizers(model, _config())) == 1
    with pytest.raises(ValueError, match="'adamw' or 'muon'"):
        make_optimizers(model, _config(optimizer="sgd"))


def test__pretrainer__muon__trains_and_a_switch_of_optimizer_warms_up_again(tmp_path: Path) -> None:
    first = Pretrainer(_config(optimizer="muon"), tmp_path / "run")
    before = [p.detach().clone() for p in first.model.parameters()]
    first.train(max_steps=3, progress_bar=False)
    assert all(torch.isfinite(p).all() for p in first.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, first.model.parameters(), strict=True))
    same = Pretrainer(_config(optimizer="muon"), tmp_path / "run", resume=True)
    assert same.resumed_at is None  # Muon's and AdamW's moments restored
    assert same.optimizers[1].state_dict()["state"]
    switched = Pretrainer(_config(), tmp_path / "run", resume=True)
    assert switched.resumed_at == 3 and len(switched.optimizers) == 1


def test__pretrainer__resume__continues_step_and_keeps_logs(tmp_path: Path) -> None:
    state_dir = tmp_path / "committed"
    first = Pretrainer(_config(), tmp_path / "run", state_dir=state_dir)
    progress = first.train(max_steps=3, progress_bar=False)
    assert progress.step == 3 and progress.datasets_seen == 12
    assert (state_dir / "ema.safetensors").is_file() and (state_dir / "loss_curve.png").is_file()
    assert json.loads((state_dir / "progress.json").read_text())["step"] == 3

    # Rows logged after the last save (a run killed between saves) are dropped on resume.
    with (tmp_path / "run" / "loss_log.csv").open("a") as log:
        log.write("4,16,1.0,1.0,0,0,0,0,0,0,0,0,0\n")

    # Same machine: the full state (with optimizer) is picked up.
    again = Pretrainer(_config(), tmp_path / "run", resume=True, state_dir=state_dir)
    assert again.progress.step == 3 and again.resumed_at is None
    assert (tmp_path / "run" / "loss_log.csv").read_text().count("\n") == 1 + 3
    again.train(max_steps=2, progress_bar=False)
    assert again.progress.step == 5

    # Fresh machine: only the committed compact state exists; the EMA weights are restored.
    fresh = Pretrainer(_config(), tmp_path / "elsewhere", resume=True, state_dir=state_dir)
    assert fresh.progress.step == 5 and fresh.resumed_at == 5
    committed = load_checkpoint(state_dir / "ema.safetensors")
    for a, b in zip(committed.parameters(), fresh.ema.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    log_lines = (tmp_path / "elsewhere" / "loss_log.csv").read_text().strip().splitlines()
    assert len(log_lines) == 1 + 5  # header + one row per step, carried over


def test__pretrainer__resume_with_a_new_model_option__old_weights_kept_new_ones_fresh(tmp_path: Path) -> None:
    state_dir = tmp_path / "committed"
    Pretrainer(_config(), tmp_path / "run", state_dir=state_dir).train(max_steps=2, progress_bar=False)
    grown = _config(model={**TINY_MODEL, "column_labels": True})
    resumed = Pretrainer(grown, tmp_path / "grown", resume=True, state_dir=state_dir)
    assert resumed.progress.step == 2
    old = load_checkpoint(state_dir / "ema.safetensors").state_dict()
    new = resumed.ema.state_dict()
    assert set(new) - set(old) == {"column_label_embedding.weight"}
    for name, value in old.items():
        torch.testing.assert_close(new[name], value, msg=name)
    assert not new["column_label_embedding.weight"].any()
    resumed.train(max_steps=1, progress_bar=False)
    assert resumed.model.column_label_embedding.weight.any()  # it learns from there

    # The reverse is refused: a state with weights the network lacks.
    with pytest.raises(RuntimeError, match="column_label_embedding"):
        Pretrainer(_config(), tmp_path / "shrunk", resume=True, state_dir=state_dir)


def test__pretrainer__resume_inducing_state_with_exact_attention__projections_kept(tmp_path: Path) -> None:
    state_dir = tmp_path / "committed"
    Pretrainer(_config("regression"), tmp_path / "run", state_dir=state_dir).train(max_steps=2, progress_bar=False)
    exact = _config("regression", model={**TINY_MODEL, "attention": {"kind": "full", "n_heads": 2}})
    resumed = Pretrainer(exact, tmp_path / "exact", resume=True, state_dir=state_dir)
    old = load_checkpoint(state_dir / "ema.safetensors").state_dict()
    new = resumed.ema.state_dict()
    assert {k for k in old if k not in new} == {"blocks.0.attn.inducing"}
    assert set(new) <= set(old)
    for name, value in new.items():
        torch.testing.assert_close(value, old[name], msg=name)


def test__pretrainer__branch_with_fewer_row_blocks__keeps_the_last_block_and_rewarms(tmp_path: Path) -> None:
    two = {**TINY_MODEL, "n_row_blocks": 2}
    Pretrainer(_config(model=two), tmp_path / "run").train(max_steps=2, progress_bar=False)
    old = load_file(str(tmp_path / "run" / "state" / "ema.safetensors"))
    branch = Pretrainer(_config(), tmp_path / "run", resume=True)  # TINY_MODEL: one row block
    new = branch.ema.state_dict()
    assert len(old) - len(new) == sum(k.startswith("row_encoder.blocks.1.") for k in old)
    for name, value in new.items():
        source = name.replace("row_encoder.blocks.0.", "row_encoder.blocks.1.")
        torch.testing.assert_close(value, old[source], msg=name)
    assert branch.resumed_at == 2  # moved weights: the optimizer's moments are warmed up again
    branch.train(max_steps=3, progress_bar=False)


def test__pretrainer__branch_with_fewer_icl_blocks__drops_the_middle_ones_and_rewarms(tmp_path: Path) -> None:
    six = {**TINY_MODEL, "n_icl_blocks": 6}
    Pretrainer(_config(model=six), tmp_path / "run").train(max_steps=2, progress_bar=False)
    old = load_file(str(tmp_path / "run" / "state" / "ema.safetensors"))
    branch = Pretrainer(_config(model={**TINY_MODEL, "n_icl_blocks": 4}), tmp_path / "run", resume=True)
    new = branch.ema.state_dict()
    kept = {0: 0, 1: 1, 2: 4, 3: 5}  # new block -> the state's block: the middle two are dropped
    assert {k.split(".")[1] for k in new if k.startswith("blocks.")} == {"0", "1", "2", "3"}
    for name, value in new.items():
        source = name
        if name.startswith("blocks."):
            index, rest = name[len("blocks.") :].split(".", 1)
            source = f"blocks.{kept[int(index)]}.{rest}"
        torch.testing.assert_close(value, old[source], msg=name)
    assert branch.resumed_at == 2
    branch.train(max_steps=3, progress_bar=False)


def test__regression_loss__near_constant_training_target__bounded(tmp_path: Path) -> None:
    """A training target with almost no spread must not explode the loss (seen at 4e12)."""
    torch.manual_seed(0)
    trainer = Pretrainer(_config("regression"), out=tmp_path)
    batch = make_batch("smoke", "regression", batch_size=2, n_rows=32, max_features=3, seed=0)
    batch.y[:, : batch.split] = 1.0 + 1e-7 * torch.randn(2, batch.split)
    batch.y[:, batch.split :] = 50.0
    loss = batch_loss(trainer.model, batch, torch.device("cpu"))
    assert torch.isfinite(loss) and loss.item() < 1e3


def test__pretrainer__resume_state_of_an_older_validation_protocol__old_log_kept_best_score_restarts(tmp_path: Path) -> None:
    from tabfm.validation import PROTOCOL_VERSION

    state_dir = tmp_path / "committed"
    Pretrainer(_config(), tmp_path / "run", state_dir=state_dir).train(max_steps=2, progress_bar=False)
    # Make the committed state look written under protocol v1: no version recorded, a best score
    # and a v1 validation log with v1's columns.
    progress = json.loads((state_dir / "progress.json").read_text())
    progress.pop("val_protocol")
    progress.update(best_val=0.9, best_val_step=2)
    (state_dir / "progress.json").write_text(json.dumps(progress))
    v1_log = "step,datasets_seen,mean,credit_g\n0,0,0.5,0.5\n2,8,0.9,0.9\n"
    (state_dir / "val_log.csv").write_text(v1_log)

    fresh = Pretrainer(_config(), tmp_path / "elsewhere", resume=True, state_dir=state_dir)
    assert fresh.progress.val_protocol == PROTOCOL_VERSION
    assert fresh.progress.best_val is None and fresh.progress.best_val_step is None
    assert (tmp_path / "elsewhere" / "val_log_v1.csv").read_text() == v1_log
    assert not (tmp_path / "elsewhere" / "val_log.csv").exists()
    fresh.train(max_steps=1, progress_bar=False)
    assert (state_dir / "val_log_v1.csv").read_text() == v1_log  # committed beside the new log
    assert json.loads((state_dir / "progress.json").read_text())["val_protocol"] == PROTOCOL_VERSION

    # Resuming again under the same protocol changes nothing.
    again = Pretrainer(_config(), tmp_path / "elsewhere", resume=True, state_dir=state_dir)
    assert (tmp_path / "elsewhere" / "val_log_v1.csv").read_text() == v1_log
    assert again.progress.val_protocol == PROTOCOL_VERSION


def test__plot_pretraining__draws_the_current_and_earlier_protocols_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    from tabfm.plots import plot_pretraining

    saved: list[Figure] = []
    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), original(fig, *a, **k)))
    losses = [1.0 - 0.002 * i for i in range(300)]
    losses[5] = 4e12  # one early batch's blow-up must not flatten the curve
    rows = "".join(f"{i + 1},{4 * (i + 1)},{v},{v}\n" for i, v in enumerate(losses))
    (tmp_path / "loss_log.csv").write_text("step,datasets_seen,loss,loss_ema\n" + rows)
    (tmp_path / "val_log_v1.csv").write_text("step,datasets_seen,mean,a\n0,0,0.5,0.5\n2,8,0.6,0.6\n")
    (tmp_path / "val_log.csv").write_text("step,datasets_seen,mean,b\n2,8,0.55,0.55\n")
    out = plot_pretraining(tmp_path / "loss_log.csv", tmp_path / "val_log.csv", tmp_path / "curve.png", task="regression", protocol=2)
    assert out.is_file()
    legend = [text.get_text() for text in saved[0].axes[0].get_legend().get_texts()]
    assert legend[-2:] == ["validation, protocol v1", "validation, protocol v2 (mean R²)"]
    assert saved[0].axes[0].get_ylim()[1] < 2.0
    validation_lines = saved[0].axes[1].get_lines()
    assert [list(line.get_ydata()) for line in validation_lines] == [[0.5, 0.6], [0.55]]


def test__pretrainer__sigterm__stops_after_the_step_and_saves(tmp_path: Path) -> None:
    import os
    import signal
    import threading

    trainer = Pretrainer(_config(), tmp_path / "run", state_dir=tmp_path / "committed")
    timer = threading.Timer(3.0, os.kill, args=(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        progress = trainer.train(max_steps=10_000, progress_bar=False)
    finally:
        timer.cancel()
    assert 0 < progress.step < 10_000
    assert json.loads((tmp_path / "committed" / "progress.json").read_text())["step"] == progress.step


REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="needs ../shared/datasets beside the repository")
def test__validate__ships_only_weights_that_beat_the_shipped_ones_scored_now(tmp_path: Path) -> None:
    ship = tmp_path / "ship"
    trainer = Pretrainer(_config(), tmp_path / "run", ship_dir=ship, val_data_dir=REAL_DATA)
    first = trainer.validate()
    target = ship / "tabfm-classification.safetensors"
    assert target.is_file()
    shipped_before = target.read_bytes()

    # Same weights again: not better, so the shipped file stays as it is.
    assert trainer.validate() == pytest.approx(first)
    assert target.read_bytes() == shipped_before

    # A stale card claiming a better score than the weights earn does not block a better model:
    # the shipped weights are scored again with the current code.
    card = target.with_suffix(".json")
    data = json.loads(card.read_text())
    data["validation"]["mean"] = 0.99
    card.write_text(json.dumps(data))
    with torch.no_grad():
        for p in trainer.ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer.validate()
    rows = (tmp_path / "run" / "val_log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 1  # one score per step: each validation of the same step replaced the last
    newest = float(rows[-1].split(",")[2])
    assert (target.read_bytes() != shipped_before) == (newest > round(first, 5))



@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="needs ../shared/datasets beside the repository")
def test__validate__ship_always__ships_weights_that_do_not_beat_the_shipped_ones_with_the_state_dir(tmp_path: Path) -> None:
    ship = tmp_path / "ship"
    trainer = Pretrainer(_config(), tmp_path / "run", ship_dir=ship, ship_always=True, state_dir=tmp_path / "state",
                         val_data_dir=REAL_DATA)
    trainer.validate()
    target = ship / "tabfm-classification.safetensors"
    with torch.no_grad():
        for p in trainer.ema.parameters():
            p.zero_()  # a network that cannot beat the shipped one
    trainer.validate()
    torch.testing.assert_close(load_checkpoint(target).state_dict(), trainer.ema.state_dict())
    assert json.loads(target.with_suffix(".json").read_text())["state_dir"] == (tmp_path / "state").as_posix()


def test__cli_resume__model_option_adds_to_the_recorded_network_options(tmp_path: Path) -> None:
    from tabfm.cli import main

    tiny = {**TINY_MODEL, "attention": {"kind": "full", "n_heads": 2}}
    common = ["pretrain", "--task", "classification", "--recipe", "smoke", "--out", str(tmp_path / "run"),
              "--batch-size", "2", "--num-workers", "0", "--no-progress"]
    assert main([*common, "--max-steps", "1", "--model", json.dumps(tiny)]) == 0
    assert main([*common, "--max-steps", "2", "--resume", "--model", '{"column_labels": true}']) == 0
    recorded = json.loads((tmp_path / "run" / "state" / "config.json").read_text())["model"]
    assert recorded["attention"]["kind"] == "full" and recorded["column_labels"] is True
    assert recorded["d_model"] == TINY_MODEL["d_model"]


def test__cli_resume__curriculum_ends_and_ridge_columns_given_now_replace_the_recorded_ones(tmp_path: Path) -> None:
    from tabfm.cli import main

    common = ["pretrain", "--task", "regression", "--recipe", "smoke", "--out", str(tmp_path / "run"),
              "--batch-size", "2", "--num-workers", "0", "--no-progress", "--model", json.dumps(TINY_MODEL)]
    assert main([*common, "--max-steps", "1"]) == 0
    assert main([*common, "--max-steps", "2", "--resume", "--features-end", "4", "60", "--rows-end", "300", "2000",
                 "--ridge-columns", "1"]) == 0
    recorded = json.loads((tmp_path / "run" / "state" / "config.json").read_text())
    assert (recorded["features_end"], recorded["rows_end"], recorded["ridge_columns"]) == ([4, 60], [300, 2000], 1.0)
    assert recorded["features_start"] == list(PretrainConfig.features_start)
    assert json.loads((tmp_path / "run" / "state" / "progress.json").read_text())["step"] == 3  # 1 + 2 more


def test__cli_branch__cooldown_copy_stops_at_its_end_and_leaves_the_main_run(tmp_path: Path) -> None:
    from tabfm.cli import main

    common = ["pretrain", "--task", "classification", "--recipe", "smoke", "--batch-size", "2", "--num-workers", "0",
              "--no-progress", "--model", json.dumps(TINY_MODEL)]
    assert main([*common, "--out", str(tmp_path / "main"), "--max-steps", "2"]) == 0
    main_state = (tmp_path / "main" / "state" / "progress.json").read_text()
    branch = tmp_path / "branch"
    assert main([*common, "--out", str(branch), "--branch-from", str(tmp_path / "main"), "--cooldown-steps", "3"]) == 0
    config = json.loads((branch / "state" / "config.json").read_text())
    assert (config["cooldown_start"], config["cooldown_steps"]) == (2, 3)
    assert json.loads((branch / "state" / "progress.json").read_text())["step"] == 5  # stopped at the cooldown's end
    assert (branch / "loss_log.csv").read_text().startswith((tmp_path / "main" / "loss_log.csv").read_text())
    assert (tmp_path / "main" / "state" / "progress.json").read_text() == main_state
    with pytest.raises(SystemExit, match="no full state"):
        main([*common, "--out", str(tmp_path / "other"), "--branch-from", str(tmp_path / "missing"), "--cooldown-steps", "3"])


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="needs ../shared/datasets beside the repository")
def test__score_estimator__constant_predictions__chance_auc_and_zero_r2() -> None:
    from sklearn.dummy import DummyClassifier, DummyRegressor

    from tabfm.validation import VALIDATION_DATASETS, score_estimator

    auc = score_estimator(lambda: DummyClassifier(strategy="prior"), "classification", REAL_DATA)
    assert list(auc) == VALIDATION_DATASETS["classification"]
    assert all(v == pytest.approx(0.5) for v in auc.values())
    r2 = score_estimator(DummyRegressor, "regression", REAL_DATA)
    assert all(-0.2 < v <= 0.0 for v in r2.values())  # the training mean, scored on other rows


def test__pretrainer__full_state_onto_exact_last_block__drops_inducing_queries_and_rewarms(tmp_path: Path) -> None:
    # The full state holds optimizer moments for the inducing queries the exact block no longer has:
    # they cannot be loaded, so the optimizer warms up again instead.
    Pretrainer(_config(), tmp_path / "run").train(max_steps=2, progress_bar=False)
    branch = Pretrainer(_config(model={**TINY_MODEL, "n_exact_blocks": 1}), tmp_path / "run", resume=True)
    assert branch.model.blocks[0].attn.inducing is None
    assert branch.resumed_at == 2
    branch.train(max_steps=3, progress_bar=False)


# -- distillation ---------------------------------------------------------------------------------


def _teacher_file(task: str, tmp_path: Path, **model: object) -> Path:
    from models.icl import ICLTransformer

    torch.manual_seed(7)
    teacher = ICLTransformer(_config(task, model={**TINY_MODEL, **model}).model_config())
    return save_checkpoint(tmp_path / f"teacher-{task}.safetensors", teacher, dtype=torch.float32)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__batch_losses__a_teacher_equal_to_the_network__no_distillation_term(task: str) -> None:
    model = _tiny_model(task).eval()  # eval: no dropout, so both passes agree
    batch = make_batch("smoke", task, batch_size=4, n_rows=40, max_features=5, seed=4)
    twin = _tiny_model(task).eval().requires_grad_(False)
    objective, label = batch_losses(model, batch, torch.device("cpu"), twin, 0.3)
    assert label.item() == pytest.approx(batch_loss(model, batch, torch.device("cpu")).item(), rel=1e-6)
    assert objective.item() == pytest.approx(0.7 * label.item(), rel=1e-5)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__batch_losses__distillation_alone__pulls_the_network_to_the_teacher(task: str, tmp_path: Path) -> None:
    teacher = load_checkpoint(_teacher_file(task, tmp_path, n_icl_blocks=2))  # another architecture
    model = _tiny_model(task)
    batch = make_batch("smoke", task, batch_size=4, n_rows=48, max_features=4, seed=5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gaps = []
    for _ in range(30):
        objective, label = batch_losses(model, batch, torch.device("cpu"), teacher, 1.0)
        optimizer.zero_grad()
        objective.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        gaps.append(objective.item())
    assert torch.isfinite(label)
    assert min(gaps) >= -1e-6  # a KL divergence
    assert gaps[-1] < 0.5 * gaps[0]


def test__accumulate_gradients__with_a_teacher__the_objectives_gradients_and_the_labels_loss(tmp_path: Path) -> None:
    teacher = load_checkpoint(_teacher_file("classification", tmp_path))
    model = _tiny_model("classification")
    batch = make_batch("smoke", "classification", batch_size=6, n_rows=40, max_features=6, seed=3)
    model.zero_grad()
    objective, label = batch_losses(model, batch, torch.device("cpu"), teacher, 0.5)
    objective.backward()
    expected = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone()
    model.zero_grad()
    logged = accumulate_gradients(model, batch, torch.device("cpu"), 4, teacher=teacher, distill_weight=0.5)
    assert logged == pytest.approx(label.item(), rel=1e-5)
    got = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test__pretrainer__teacher_of_another_task__a_clear_error(tmp_path: Path) -> None:
    path = _teacher_file("regression", tmp_path)
    with pytest.raises(ValueError, match=r"teacher .* regression.*distillation needs the same outputs"):
        Pretrainer(_config("classification", teacher=str(path)), out=tmp_path / "run")
    with pytest.raises(ValueError, match="distill_weight"):
        _config(distill_weight=1.5)


def test__pretrainer__with_a_teacher__trains_and_records_the_teacher_for_resuming(tmp_path: Path) -> None:
    path = _teacher_file("classification", tmp_path)
    trainer = Pretrainer(_config(teacher=str(path), distill_weight=0.5), out=tmp_path / "run")
    progress = trainer.train(max_steps=3, progress_bar=False)
    assert progress.step == 3 and np.isfinite(progress.loss_ema)
    recorded = json.loads((tmp_path / "run" / "state" / "config.json").read_text())  # a resumed run keeps it
    assert recorded["teacher"] == str(path) and recorded["distill_weight"] == 0.5
