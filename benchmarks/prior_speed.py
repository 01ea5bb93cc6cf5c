"""Prior generation speed on ONE core (one process, one thread): datasets/s and cells/s.

Per family (one dataset at a time, exactly ``rows x features``) and for the mixture through
``make_batch`` (each dataset draws its own feature count <= ``features``, as in pretraining; cells
count only real features). The last lines compare the mixture with what pretraining consumes.

    nice -n 10 python -m benchmarks.prior_speed [--seconds 3] [--recipe default]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: one core means one BLAS thread too

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from priors import load_recipe, make_batch, sample_dataset  # noqa: E402

SHAPES = [(512, 20), (2048, 50)]


def _rate(fn, seconds: float) -> tuple[float, float]:
    """Run ``fn() -> (datasets, cells)`` until ``seconds`` pass; return datasets/s and cells/s."""
    fn()  # warm-up
    n_sets = n_cells = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        d, c = fn()
        n_sets += d
        n_cells += c
    dt = time.perf_counter() - t0
    return n_sets / dt, n_cells / dt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--task", choices=["classification", "regression"], default="classification")
    parser.add_argument("--consume-datasets", type=int, default=16,
                        help="datasets per pretraining step (default 16)")
    parser.add_argument("--consume-shape", default="512x10", help="rows x features per dataset")
    parser.add_argument("--step-seconds", type=float, default=2.0, help="seconds per training step")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    recipe = load_recipe(args.recipe)
    print(f"recipe {recipe.name!r}, task {args.task}, one core (torch threads "
          f"{torch.get_num_threads()}, OMP/BLAS threads 1), {args.seconds:.0f} s per row")
    print(f"{'shape':>10} {'family':>9} {'datasets/s':>11} {'Mcells/s':>9}")
    counter = [0]

    def one(family: str, rows: int, feats: int):
        def fn():
            counter[0] += 1
            x, *_ = sample_dataset(recipe, args.task, n_rows=rows, n_features=feats,
                                   seed=counter[0], family=family)
            return 1, x.size
        return fn

    def mixture(rows: int, feats: int, batch: int = 16):
        def fn():
            counter[0] += 1
            b = make_batch(recipe, args.task, batch_size=batch, n_rows=rows, max_features=feats,
                           seed=counter[0])
            return batch, int(b.feature_mask.sum()) * rows
        return fn

    results = {}
    for rows, feats in SHAPES:
        for family in ("mlp_scm", "tree_scm", "smooth", "mixture"):
            fn = mixture(rows, feats) if family == "mixture" else one(family, rows, feats)
            ds, cells = _rate(fn, args.seconds)
            results[(rows, feats, family)] = ds
            print(f"{rows:>5}x{feats:<4} {family:>9} {ds:>11.1f} {cells / 1e6:>9.2f}")
    rows, feats = (int(v) for v in args.consume_shape.split("x"))
    ds, _ = _rate(mixture(rows, feats, args.consume_datasets), args.seconds)
    need = args.consume_datasets / args.step_seconds
    print(f"pretraining consumes {args.consume_datasets} datasets of {rows}x{feats} every "
          f"{args.step_seconds:g} s = {need:.1f} datasets/s; the mixture makes {ds:.1f} datasets/s "
          f"at that shape on one core: ratio {ds / need:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
