"""The synthetic prior: determinism, batch layout, class and target guarantees, rates, recipes, CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from priors import (
    BatchStream,
    PriorBatch,
    load_batch,
    load_recipe,
    make_batch,
    sample_dataset,
    write_shards,
)
from priors.observed_target import ObservedTargetConfig, observed_target
from priors.shards import step_seed

SMOKE = load_recipe("smoke")


def _assert_same(a: PriorBatch, b: PriorBatch) -> None:
    for name in ("x", "y", "feature_mask", "categorical", "n_classes"):
        assert torch.equal(getattr(a, name).nan_to_num(-7.0) if name == "x" else getattr(a, name),
                           getattr(b, name).nan_to_num(-7.0) if name == "x" else getattr(b, name)), name
    assert (a.split, a.task) == (b.split, b.task)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__make_batch__same_seed__identical_tensors(task):
    kw = dict(batch_size=4, n_rows=48, max_features=6)
    a = make_batch(SMOKE, task, seed=3, **kw)
    b = make_batch(SMOKE, task, seed=3, **kw)
    c = make_batch(SMOKE, task, seed=4, **kw)
    _assert_same(a, b)
    assert not torch.equal(a.y, c.y)


@pytest.mark.slow  # starts two spawned worker processes (a few seconds on a busy machine)
def test__batch_stream__workers_0_and_2__identical_batches():
    schedule = lambda step: (32 + 16 * (step % 2), 5)  # noqa: E731 - a lambda: need not pickle
    with BatchStream(SMOKE, "classification", batch_size=3, seed=11, start_step=5,
                     num_workers=0, shape_schedule=schedule) as s0:
        ref = [next(s0) for _ in range(5)]
    with BatchStream(SMOKE, "classification", batch_size=3, seed=11, start_step=5,
                     num_workers=2, shape_schedule=schedule) as s2:
        got = [next(s2) for _ in range(5)]
        assert len(s2._workers) == 2
    assert s2._workers == []  # closed
    assert [s for s, _ in got] == [5, 6, 7, 8, 9]
    for (sa, a), (sb, b) in zip(ref, got, strict=True):
        assert sa == sb
        _assert_same(a, b)
    assert ref[0][1].x.shape[1] == 48 and ref[1][1].x.shape[1] == 32
    # Step s of the stream is make_batch with the step's seed.
    _assert_same(ref[2][1], make_batch(SMOKE, "classification", batch_size=3, n_rows=48,
                                       max_features=5, seed=step_seed(11, 7)))


def test__batch_stream__default_schedule__shapes_from_recipe():
    stream = BatchStream(SMOKE, "regression", batch_size=2, seed=0, num_workers=0)
    for _, batch in (next(stream) for _ in range(4)):
        assert batch.x.shape[1] in (32, 64)
        assert 2 <= batch.x.shape[2] <= 6


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__make_batch__shapes_and_masks__padding_zero_and_masked(task):
    batch = make_batch(SMOKE, task, batch_size=8, n_rows=40, max_features=7, seed=1)
    B, R, F = 8, 40, 7
    assert batch.x.shape == (B, R, F) and batch.x.dtype == torch.float32
    assert batch.y.shape == (B, R) and batch.y.dtype == torch.float32
    assert batch.feature_mask.shape == (B, F) and batch.feature_mask.dtype == torch.bool
    assert batch.categorical.shape == (B, F) and batch.n_classes.dtype == torch.int64
    assert 0 < batch.split < R and batch.task == task
    n_feat = batch.feature_mask.sum(1)
    assert (n_feat >= 1).all()
    for b in range(B):
        f = int(n_feat[b])
        assert batch.feature_mask[b, :f].all() and not batch.feature_mask[b, f:].any()
        assert (batch.x[b, :, f:] == 0).all()  # padding is 0, never NaN
        assert not batch.categorical[b, f:].any()
    assert len(set(n_feat.tolist())) > 1  # each dataset draws its own feature count


def test__make_batch__classification__classes_in_range_and_all_in_train():
    seen = set()
    for seed in range(12):
        batch = make_batch(SMOKE, "classification", batch_size=8, n_rows=32, max_features=4, seed=seed)
        for b in range(8):
            c = int(batch.n_classes[b])
            y = batch.y[b]
            assert 2 <= c <= SMOKE.classification.max_classes
            assert torch.equal(y, y.round()) and y.min() >= 0 and y.max() <= c - 1
            assert set(y[: batch.split].long().tolist()) == set(range(c))
            seen.add(c)
    assert seen == {2, 3, 4}


def test__make_batch__targets__no_nan_and_regression_not_constant():
    for task in ("classification", "regression"):
        for seed in range(6):
            batch = make_batch(SMOKE, task, batch_size=8, n_rows=32, max_features=5, seed=seed)
            assert torch.isfinite(batch.y).all()
            if task == "regression":
                assert (batch.y.std(dim=1) > 0).all()
                assert (batch.n_classes == 0).all()


def test__sample_dataset__requested_rates__missing_and_categorical_fractions_match():
    recipe = load_recipe("smoke", overrides={"postprocess": {
        "missing_prob": 1.0, "missing_rate": 0.1, "categorical_prob": 1.0,
        "categorical_fraction": 0.3, "categorical_levels": {"dist": "int_uniform", "low": 2, "high": 5},
    }, "observed_target": {"all_categorical_prob": 0.0}})  # all-categorical tables would raise the rate
    missing, categorical = [], []
    for seed in range(120):
        x, _, cat, _ = sample_dataset(recipe, "classification", n_rows=64, n_features=10, seed=seed)
        missing.append(np.isnan(x).mean())
        categorical.append(cat.mean())
        codes = x[:, cat]
        codes = codes[~np.isnan(codes)]
        assert np.array_equal(codes, codes.round()) and codes.min() >= 0 and codes.max() <= 4
    assert abs(np.mean(missing) - 0.1) < 0.015
    assert abs(np.mean(categorical) - 0.3) < 0.04
    none = load_recipe("smoke", overrides={"postprocess": {"missing_prob": 0.0, "categorical_prob": 0.0}})
    x, _, cat, _ = sample_dataset(none, "regression", n_rows=64, n_features=10, seed=0)
    assert not np.isnan(x).any() and not cat.any()


def test__make_batch__high_missing_rate_tiny_tables__every_column_keeps_a_value():
    recipe = load_recipe("smoke", overrides={"postprocess": {"missing_prob": 1.0, "missing_rate": 0.9}})
    for seed in range(10):
        batch = make_batch(recipe, "regression", batch_size=4, n_rows=5, max_features=5, seed=seed)
        observed = (~torch.isnan(batch.x)).any(dim=1)  # (B, F)
        assert observed[batch.feature_mask].all()


@pytest.mark.parametrize("family", ["mlp_scm", "tree_scm", "smooth"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test__sample_dataset__each_family__finite_and_deterministic(family, task):
    kw = dict(n_rows=100, n_features=12, seed=5, family=family)
    x, y, cat, meta = sample_dataset(SMOKE, task, **kw)
    x2, y2, _, _ = sample_dataset(SMOKE, task, **kw)
    assert meta["family"] == family
    assert x.shape == (100, 12) and x.dtype == np.float32 and cat.shape == (12,)
    assert np.array_equal(np.nan_to_num(x, nan=-1), np.nan_to_num(x2, nan=-1))
    assert np.array_equal(y, y2)
    assert not np.isinf(x).any() and np.isfinite(y).all()
    if task == "classification":
        assert y.dtype == np.int64 and np.bincount(y).min() >= SMOKE.classification.min_class_count


def test__sample_dataset__default_recipe__features_carry_signal():
    """Most default-prior datasets are learnable: some feature is related to the target."""
    recipe = load_recipe("default")
    related = 0
    for seed in range(20):
        x, y, _, _ = sample_dataset(recipe, "regression", n_rows=200, n_features=8, seed=seed)
        xs = np.nan_to_num(x)
        corr = [abs(np.corrcoef(np.argsort(np.argsort(xs[:, j])), np.argsort(np.argsort(y)))[0, 1])
                for j in range(8) if xs[:, j].std() > 0]
        related += max(corr) > 0.2
    assert related >= 14


def _digest(recipe) -> str:
    h = hashlib.sha256()
    for task in ("classification", "regression"):
        for seed in range(8):
            x, y, cat, _ = sample_dataset(recipe, task, n_rows=64, n_features=7, seed=seed,
                                          n_train=40 if task == "classification" else None)
            for a in (np.nan_to_num(x, nan=-7.0), y, cat):
                h.update(a.tobytes())
    return h.hexdigest()


def test__sample_dataset__observed_target_prob_0__same_datasets_as_before_observed_targets():
    """At probability 0 the sampler draws no extra random number: these digests were taken from
    the sampler before observed targets existed (numpy 2 on x86-64)."""
    off = {"postprocess": {"observed_target_prob": 0.0}}
    assert _digest(load_recipe("smoke", overrides=off)) == (
        "5bf8020edb12f48fb00e77763bb7e20145f7c31691ebbe4bbcae5c54b4e3437e")
    assert _digest(load_recipe("default", overrides=off)) == (
        "f411d67efbda36f8f6f09ead09e7cc49206735c31f89b717fc1316210b675433")


def _observed_cfg(family: str, **kw) -> ObservedTargetConfig:
    base = dict(family=family, n_trees=4, depth=4, n_layers=2, width=8, activation="tanh",
                embedding_dim=3, column_fraction=1.0)
    return ObservedTargetConfig(**{**base, **kw})


def _observed_table(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Columns: two categorical (3 and 4 levels), one numeric with few values, one noise column."""
    rng = np.random.default_rng(seed)
    n = 300
    x = np.column_stack([rng.integers(0, 3, n), rng.integers(0, 4, n), rng.integers(0, 3, n) * 0.7,
                         rng.standard_normal(n)]).astype(float)
    return x, np.array([True, True, False, False])


@pytest.mark.parametrize("family", ["trees", "mlp"])
def test__observed_target__identical_informative_values__identical_targets(family):
    x, cat = _observed_table()
    t, info = observed_target(np.random.default_rng(1), x, cat, np.array([0, 1, 2]), 3,
                              _observed_cfg(family))
    assert t.shape == (300, 3) and np.isfinite(t).all() and info["columns"] == [0, 1, 2]
    _, group = np.unique(x[:, :3], axis=0, return_inverse=True)
    assert group.max() > 5  # repeated combinations, differing in the noise column
    for g in range(group.max() + 1):
        rows = t[group.ravel() == g]
        assert np.array_equal(rows, np.broadcast_to(rows[0], rows.shape))
    assert np.unique(t[:, 0]).size > 2  # and the target is not constant


@pytest.mark.parametrize("family", ["trees", "mlp"])
def test__observed_target__irrelevant_column_changed__same_targets(family):
    x, cat = _observed_table()
    changed = x.copy()
    changed[:, 3] = np.random.default_rng(9).integers(0, 7, 300)  # new values and a new level count
    cfg = _observed_cfg(family)
    t, _ = observed_target(np.random.default_rng(2), x, cat, np.array([0, 1, 2]), 1, cfg)
    cat_changed = cat.copy()
    cat_changed[3] = True
    u, _ = observed_target(np.random.default_rng(2), changed, cat_changed, np.array([0, 1, 2]), 1, cfg)
    assert np.array_equal(t, u)


def test__observed_target__trees_on_one_categorical__level_groups_ignore_code_order():
    """Nominal levels: trees that split an embedding put levels far apart in code order into one
    leaf; splits on the codes themselves would only ever group runs of adjacent codes."""
    x = np.repeat(np.arange(8.0), 10)[:, None]  # (80, 1): 8 levels, 10 rows each
    scattered = 0
    for seed in range(30):
        t, _ = observed_target(np.random.default_rng(seed), x, np.array([True]), np.array([0]), 1,
                               _observed_cfg("trees", n_trees=1, depth=2))
        per_level = t[::10, 0]  # (8,) one target per level, in code order
        for value in np.unique(per_level):
            codes = np.flatnonzero(per_level == value)
            scattered += bool(codes.max() - codes.min() + 1 > codes.size)
    assert scattered >= 10


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__sample_dataset__observed_target_prob_1__valid_datasets(task):
    recipe = load_recipe("smoke", overrides={"postprocess": {"observed_target_prob": 1.0}})
    families, all_categorical = set(), 0
    for seed in range(16):
        n_train = 40 if task == "classification" else None
        x, y, cat, meta = sample_dataset(recipe, task, n_rows=64, n_features=6, seed=seed,
                                         n_train=n_train)
        assert meta["target_from"] == "observed"
        families.add(meta["observed_target"]["family"])
        assert x.shape == (64, 6) and x.dtype == np.float32 and cat.shape == (6,)
        assert not np.isinf(x).any() and np.isfinite(y).all() and y.shape == (64,)
        codes = x[:, cat][~np.isnan(x[:, cat])]
        assert np.array_equal(codes, codes.round()) and (codes >= 0).all()
        all_categorical += bool(cat.all())
        if task == "classification":
            assert y.dtype == np.int64
            assert np.array_equal(np.unique(y), np.arange(meta["n_classes"]))
            assert set(y[:n_train]) == set(range(meta["n_classes"]))
        else:
            assert y.dtype == np.float32 and y.std() > 0
    assert families == {"trees", "mlp"} and all_categorical >= 2


def _write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('extends = "smoke"\n[mlp_scm]\nn_layers = {dist = "uniform", low = 3}\n', "mlp_scm.n_layers"),
        ('extends = "smoke"\n[mlp_scm]\ndepthh = 3\n', "mlp_scm.depthh"),
        ('extends = "smoke"\n[postprocess]\nmissing_rate = {dist = "gamma", low = 0.1, high = 0.2}\n',
         "postprocess.missing_rate"),
        ('extends = "smoke"\n[classification]\nmax_classes = 12\n', "classification.max_classes"),
        ('extends = "smoke"\n[postprocess]\nmissing_prob = 1.5\n', "postprocess.missing_prob"),
        ('extends = "smoke"\n[mixture]\nforest = 1.0\n', "mixture.forest"),
        ('extends = "smoke"\n[tree_scm]\nroot = "cauchy"\n', "tree_scm.root"),
        ("[mixture]\nmlp_scm = 1.0\n", "[shape]"),
        ('extends = "smoke"\n[postprocess]\nobserved_target_prob = 1.5\n',
         "postprocess.observed_target_prob"),
        ('extends = "smoke"\n[postprocess]\nobserved_target_prob = -0.1\n',
         "postprocess.observed_target_prob"),
        ('extends = "smoke"\n[observed_target]\nfamily = "forest"\n', "observed_target.family"),
    ],
)
def test__load_recipe__bad_field__error_names_it(tmp_path, text, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_recipe(_write(tmp_path, text))


def test__load_recipe__shipped_names_and_missing_file():
    assert load_recipe("default").mixture == {"mlp_scm": 0.5, "tree_scm": 0.35, "smooth": 0.15}
    assert load_recipe("smoke").shape.min_features == 1
    with pytest.raises(ValueError, match="nope"):
        load_recipe("nope")


def test__shards__written_batches__read_back_by_stream(tmp_path):
    write_shards(tmp_path, SMOKE, "regression", n_batches=2, batch_size=3, n_rows=32,
                 max_features=4, seed=9)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["shards"] == ["shard_00000.safetensors", "shard_00001.safetensors"]
    gen = BatchStream(SMOKE, "regression", batch_size=3, seed=9, num_workers=0,
                      shape_schedule=lambda s: (32, 4))
    shards = BatchStream.from_shards(tmp_path, loop=False)
    got = list(shards)
    assert [s for s, _ in got] == [0, 1]
    for _, batch in got:
        _assert_same(batch, next(gen)[1])
    looped = BatchStream.from_shards(tmp_path, start_step=3)
    assert next(looped)[0] == 3
    _assert_same(load_batch(tmp_path / "shard_00001.safetensors"), got[1][1])


def test__cli_prior_sample__parquet__readable_like_real_datasets(tmp_path):
    from tabfm.cli import main

    out = tmp_path / "synth"
    assert main(["prior", "sample", "--recipe", "smoke", "--n", "4", "--out", str(out),
                 "--rows", "60", "--features", "5", "--seed", "2"]) == 0
    cat = pd.read_csv(out / "catalogue.csv")
    assert {"name", "task", "n_rows", "n_features", "n_classes", "n_categorical",
            "has_missing"} <= set(cat.columns)
    assert len(cat) == 4 and set(cat.task) <= {"binary", "multiclass"}
    for row in cat.itertuples():
        df = pd.read_parquet(out / f"{row.name}.parquet")
        assert df.shape == (60, row.n_features + 1) and df.columns[-1] == "target"
        assert list(df.columns[:-1]) == [f"f{j}" for j in range(row.n_features)]
        assert sum(isinstance(t, pd.CategoricalDtype) for t in df.dtypes) == row.n_categorical
        assert df["target"].nunique() == row.n_classes
        assert bool(df.drop(columns="target").isna().any().any()) == row.has_missing
    fixed = tmp_path / "fixed"
    assert main(["prior", "sample", "--recipe", "smoke", "--n", "3", "--out", str(fixed),
                 "--rows", "40", "--features", "6", "--fixed-features", "--task", "regression"]) == 0
    cat = pd.read_csv(fixed / "catalogue.csv")
    assert (cat.n_features == 6).all() and (cat.task == "regression").all()
    assert pd.read_parquet(fixed / f"{cat.name[0]}.parquet")["target"].dtype == np.float64


def test__cli_prior_sample__shards_and_bad_recipe(tmp_path):
    from tabfm.cli import main
    from tabfm.errors import TabFMValidationError

    assert main(["prior", "sample", "--recipe", "smoke", "--n", "5", "--out", str(tmp_path / "s"),
                 "--rows", "32", "--features", "4", "--format", "shards", "--batch-size", "4",
                 "--task", "regression"]) == 0
    batches = list(BatchStream.from_shards(tmp_path / "s", loop=False))
    assert len(batches) == 2 and batches[0][1].x.shape == (4, 32, 4)
    with pytest.raises(TabFMValidationError, match="--recipe"):
        main(["prior", "sample", "--recipe", str(tmp_path / "none.toml"), "--n", "1",
              "--out", str(tmp_path / "t")])


def test__cli_prior_show__writes_png(tmp_path):
    from tabfm.cli import main

    out = tmp_path / "grid.png"
    assert main(["prior", "show", "--recipe", "smoke", "--n", "2", "--rows", "40", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test__prior_batch__by_width__every_dataset_once_sorted_and_cut_to_its_widest():
    batch = make_batch("smoke", "regression", batch_size=7, n_rows=30, max_features=8, seed=5)
    widths = batch.feature_mask.sum(dim=1)
    parts = batch.by_width(3)
    assert [p.x.shape[0] for p in parts] == [3, 3, 1]
    seen = []
    for part in parts:
        part_widths = part.feature_mask.sum(dim=1)
        assert part.x.shape[2] == part.feature_mask.shape[1] == int(part_widths.max())
        assert part.split == batch.split and part.task == batch.task
        seen += part_widths.tolist()
    assert seen == sorted(widths.tolist())
    # The rows of each dataset are its rows in the batch, cut of padding only.
    for part in parts:
        for x, y in zip(part.x, part.y, strict=True):
            match = [i for i in range(7) if torch.equal(batch.y[i], y)]
            assert len(match) == 1
            i = match[0]
            torch.testing.assert_close(x, batch.x[i, :, : x.shape[1]], rtol=0, atol=0, equal_nan=True)
            assert not batch.feature_mask[i, x.shape[1]:].any()
    with pytest.raises(ValueError, match="micro-batch size"):
        batch.by_width(0)
