"""Column quantiles: ``tabfm.preprocessing.column_quantiles`` against ``np.nanquantile``, side by side.

The quantile maps of an estimator's fit (the members' and the ridge columns') and the ridge
columns of every synthetic table in pretraining need the quantiles of each column. numpy sorts
and interpolates column by column; ``column_quantiles`` sorts the whole table once. Both give the
same bits, which this script checks before it times them (median of ``--repeats``).

    python -m benchmarks.quantile_speed [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from tabfm.preprocessing import column_quantiles

# (rows, columns, missing share): the speed benchmark's table, and a large prior table with gaps.
TABLES = [(1000, 20, 0.0), (2246, 46, 0.1)]
LEVELS = {"1,000 quantile levels": np.linspace(0.0, 1.0, 1000), "clip bounds (0.5%, 99.5%)": np.array([0.005, 0.995])}


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| table | levels | np.nanquantile ms | column_quantiles ms | ratio |")
    print("|---|---|---|---|---|")
    for rows, cols, missing in TABLES:
        X = rng.normal(size=(rows, cols))
        X[rng.random(X.shape) < missing] = np.nan
        for name, q in LEVELS.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                numpy_ms = _median_ms(lambda: np.nanquantile(X, q, axis=0), args.repeats)  # noqa: B023
                expected = np.nanquantile(X, q, axis=0)
            if not np.array_equal(column_quantiles(X, q), expected, equal_nan=True):
                raise SystemExit(f"column_quantiles differs from np.nanquantile on {rows} x {cols}")
            ours_ms = _median_ms(lambda: column_quantiles(X, q), args.repeats)  # noqa: B023
            print(f"| {rows:,} x {cols}, {missing:.0%} missing | {name} | {numpy_ms:.2f} | {ours_ms:.2f} | {numpy_ms / ours_ms:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
