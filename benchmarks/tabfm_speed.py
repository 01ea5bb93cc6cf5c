"""Fit + predict time of TabFM against LightGBM, side by side in one run.

    python -m benchmarks.tabfm_speed [--train 1000] [--test 1000] [--features 20] [--repeats 3]
        [--n-estimators 1,2,8] [--contexts global,mixed,local] [--anchor-rows 4,16]
        [--linear-features none] [--cell-grids exact,64] [--architectures '{"attention": {"kind": "inducing"}, "n_estimators": 2}']
        [--members-in-turn]

Both run on the same synthetic table with 2 threads; the table prints the median wall time of
``repeats`` rounds (each round times every candidate once, so that a drift of the shared machine
falls on all of them alike) and the ratio to LightGBM's. TabFM runs with each ensemble size of
``--n-estimators`` and with its default ensemble, using the shipped checkpoint (what the sizes
cost in accuracy: ``benchmarks/results/tabfm_ensemble_size.md``), then the default ensemble with
each other ``context`` of ``--contexts`` (local members run one table per test row), and, for
``"local"`` and ``"mixed"``, with each ``local_anchor_rows`` of ``--anchor-rows`` (one table per
anchor in use), with each other ``linear_feature`` of ``--linear-features`` (what the ridge
columns cost), and with each other ``cell_grid`` of ``--cell-grids`` (``exact``: every cell
embedded one by one, as before the tabulated column embedding). ``--members-in-turn`` adds the default ensemble (and each architecture) with its
members run one after another on all threads, beside the estimator's own schedule (members side
by side, one thread each: :func:`tabfm.device.map_on_threads`).

Each TabFM row also gives the network's work, counted in one extra untimed run
(:class:`benchmarks.flop_count.FlopCount`: matrix products and attention), and the rate it ran at;
the footer says how much work fits in the time of the speed target (3x LightGBM) at the default
ensemble's rate, and how long that work would take at the rate of a large matrix product on the
same threads: the most that faster kernels alone could buy.

Run it on a quiet machine without ``OMP_WAIT_POLICY=PASSIVE``: LightGBM's OpenMP threads then spin
between its many short parallel regions, and its 2-thread fit of 1,000 rows took 0.09 s, against
0.57 s with PASSIVE (which the benchmark runner sets because it shares the cores). The policy in
force is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import fields
from pathlib import Path


def _time(candidates: dict, X_train, y_train, X_test, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """(fit s, predict s) of each candidate in every round, timed in interleaved rounds (every
    candidate once per round), so that drifts of the shared machine fall on all of them alike."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, make in candidates.items():
            model = make()
            t0 = time.perf_counter()
            model.fit(X_train, y_train)
            t1 = time.perf_counter()
            model.predict_proba(X_test)
            t2 = time.perf_counter()
            times[name].append((t1 - t0, t2 - t1))
    return times


def _round_ratios(times: dict[str, list[tuple[float, float]]], name: str) -> str:
    """Quartiles of ``name``'s fit + predict time over LightGBM's in the same round: how much of the
    spread of the ratio is the machine's and not the models'."""
    ratios = [sum(t) / sum(base) for t, base in zip(times[name], times["lightgbm"], strict=True)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return f"{q1:.2f}-{q3:.2f}"


IN_TURN = ", members in turn"  # suffix of the candidates timed with their members in turn


class _MembersInTurn:
    """An estimator whose ensemble members run one after another, each on all threads (instead of
    side by side on one thread each: :func:`tabfm.device.map_on_threads`)."""

    def __init__(self, model) -> None:
        self.model = model

    @staticmethod
    def _in_turn():
        from unittest import mock

        from tabfm.device import map_in_turn

        return mock.patch("tabfm.icl.map_on_threads", lambda fn, n, device: map_in_turn(fn, n))

    def fit(self, X, y):
        with self._in_turn():
            self.model.fit(X, y)
        return self

    def predict_proba(self, X):
        with self._in_turn():
            return self.model.predict_proba(X)


def _gflop(make, X_train, y_train, X_test) -> tuple[float, float]:
    """GFLOP of one fit + predict, and the share of it spent in attention. The members run in turn
    here: the counter sees the ops of its own thread only."""
    from benchmarks.flop_count import FlopCount

    with FlopCount() as count:
        _MembersInTurn(make()).fit(X_train, y_train).predict_proba(X_test)
    return count.total / 1e9, count.attention / max(count.total, 1)


def _gemm_rate(repeats: int = 5) -> float:
    """GFLOP/s of a large float32 matrix product on the current threads: what dense kernels reach here."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best / 1e9


def _sizes(text: str) -> set[int]:
    try:
        sizes = {int(n) for n in text.split(",") if n.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {text!r}")
    return sizes


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(
            f"{what} must be among {', '.join(allowed)}, however: {', '.join(bad)}"
        )
    return names


def _contexts(text: str) -> list[str]:
    from tabfm.icl import CONTEXTS

    return _names(text, CONTEXTS, "contexts")


def _linear_features(text: str) -> list[str]:
    from tabfm.icl import LINEAR_FEATURES

    return _names(text, LINEAR_FEATURES, "linear features")


def _cell_grids(text: str) -> list[int | None]:
    grids: list[int | None] = []
    for token in (t.strip() for t in text.split(",") if t.strip()):
        if token == "exact":
            grids.append(None)
        elif token.isdigit() and int(token) >= 2:
            grids.append(int(token))
        else:
            raise argparse.ArgumentTypeError(f"cell grids must be 'exact' or integers >= 2, however: {token!r}")
    return grids


def _architectures(text: str) -> list[dict]:
    """Semicolon-separated JSON objects of network overrides (see the module docstring)."""
    from models.icl import ICLConfig

    known = {f.name for f in fields(ICLConfig)} | {"n_estimators"}
    specs = []
    for chunk in (c.strip() for c in text.split(";")):
        if not chunk:
            continue
        try:
            spec = json.loads(chunk)
        except json.JSONDecodeError as error:
            raise argparse.ArgumentTypeError(f"not a JSON object: {chunk!r} ({error.msg})") from None
        if not isinstance(spec, dict):
            raise argparse.ArgumentTypeError(f"expected a JSON object, got {chunk!r}")
        unknown = sorted(set(spec) - known)
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown network options {', '.join(unknown)} in {chunk!r}")
        specs.append(spec)
    return specs


def _untrained_network(spec: dict):
    """A freshly initialised network: the shipped classification configuration with ``spec``'s
    overrides (``n_estimators`` is the estimator's and is left out)."""
    from models.icl import ICLConfig, ICLTransformer
    from tabfm.checkpoint import shipped_architecture

    overrides = {k: v for k, v in spec.items() if k != "n_estimators"}
    return ICLTransformer(ICLConfig(**shipped_architecture("classification", overrides))).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--n-estimators",
        type=_sizes,
        default="1,2,8",
        help="comma-separated ensemble sizes besides the default",
    )
    parser.add_argument(
        "--contexts",
        type=_contexts,
        default="",
        help="comma-separated contexts besides the default: global, focused, mixed, local",
    )
    parser.add_argument(
        "--anchor-rows",
        type=_sizes,
        default="",
        help="comma-separated local_anchor_rows to time each context with",
    )
    parser.add_argument(
        "--linear-features",
        type=_linear_features,
        default="",
        help="comma-separated linear_feature values besides the default: all, mixed, none",
    )
    parser.add_argument(
        "--cell-grids",
        type=_cell_grids,
        default="",
        help="comma-separated cell_grid values besides the default: integers >= 2, or exact",
    )
    parser.add_argument(
        "--architectures",
        type=_architectures,
        default="",
        help="semicolon-separated JSON overrides of the shipped network, timed untrained "
        '(e.g. \'{"attention": {"kind": "inducing"}, "n_estimators": 2}\')',
    )
    parser.add_argument(
        "--members-in-turn",
        action="store_true",
        help="also time the default ensemble (and each architecture) with its members run one "
        "after another on all threads, instead of side by side on one thread each",
    )
    parser.add_argument("--out", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args(argv)

    import pandas as pd
    import torch
    from lightgbm import LGBMClassifier
    from sklearn.datasets import make_classification

    from tabfm import TabFMClassifier

    torch.set_num_threads(args.threads)
    informative = min(10, args.features)
    X, y = make_classification(
        n_samples=args.train + args.test,
        n_features=args.features,
        n_informative=informative,
        n_redundant=min(2, args.features - informative),
        random_state=0,
    )
    X_train, X_test, y_train = X[: args.train], X[args.train :], y[: args.train]
    default = TabFMClassifier().n_estimators
    sizes = sorted(args.n_estimators | {default})
    candidates = {"lightgbm": lambda: LGBMClassifier(n_jobs=args.threads, verbose=-1)}
    for n in sizes:
        name = f"tabfm (default, n_estimators={n})" if n == default else f"tabfm (n_estimators={n})"
        candidates[name] = lambda n=n: TabFMClassifier(n_estimators=n, device="cpu")
    for context in args.contexts:
        if context == TabFMClassifier().context:
            continue  # the default ensemble's rows already time it
        candidates[f"tabfm (context={context})"] = lambda c=context: TabFMClassifier(
            context=c, device="cpu"
        )
        for rows in sorted(args.anchor_rows) if context in ("local", "mixed") else []:
            candidates[f"tabfm (context={context}, local_anchor_rows={rows})"] = (
                lambda c=context, r=rows: TabFMClassifier(
                    context=c, local_anchor_rows=r, device="cpu"
                )
            )
    for linear in args.linear_features:
        if linear == TabFMClassifier().linear_feature:
            continue
        candidates[f"tabfm (linear_feature={linear})"] = lambda v=linear: TabFMClassifier(
            linear_feature=v, device="cpu"
        )
    for grid in args.cell_grids:
        if grid == TabFMClassifier().cell_grid:
            continue
        candidates[f"tabfm (cell_grid={grid})"] = lambda g=grid: TabFMClassifier(cell_grid=g, device="cpu")
    for spec in args.architectures:
        network = _untrained_network(spec)
        n = spec.get("n_estimators", default)
        label = json.dumps({k: v for k, v in spec.items() if k != "n_estimators"}, separators=(", ", ": "))
        candidates[f"untrained {label} (n_estimators={n})"] = lambda net=network, n=n: TabFMClassifier(
            n_estimators=n, checkpoint=net, device="cpu"
        )
    if args.members_in_turn:
        for name in [n for n in candidates if n.startswith(("tabfm (default", "untrained"))]:
            candidates[name + IN_TURN] = lambda make=candidates[name]: _MembersInTurn(make())
    _time(candidates, X_train[:50], y_train[:50], X_test[:50], 1)  # warm-up
    times = _time(candidates, X_train, y_train, X_test, args.repeats)
    rows = {
        name: (statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs))
        for name, runs in times.items()
    }
    work = {
        name: _gflop(make, X_train, y_train, X_test)
        for name, make in candidates.items()
        if name != "lightgbm" and not name.endswith(IN_TURN)
    }
    for name in rows:  # the same work as the side-by-side run
        if name.endswith(IN_TURN):
            work[name] = work[name.removesuffix(IN_TURN)]
    base = sum(rows["lightgbm"])
    nan = (float("nan"), float("nan"))
    table = pd.DataFrame(
        [
            (
                fit_s,
                predict_s,
                fit_s + predict_s,
                (fit_s + predict_s) / base,
                _round_ratios(times, name),
                gflop,
                gflop / (fit_s + predict_s),
                share,
            )
            for name, (fit_s, predict_s) in rows.items()
            for gflop, share in [work.get(name, nan)]
        ],
        index=pd.Index(list(rows), name="model"),
        columns=[
            "fit s",
            "predict s",
            "total s",
            "x lightgbm",
            "x lightgbm per round (quartiles)",
            "GFLOP",
            "GFLOP/s",
            "attention share",
        ],
    )
    default_row = table.loc[f"tabfm (default, n_estimators={default})"]
    rate, peak = default_row["GFLOP/s"], _gemm_rate()
    footer = (
        f"At the default ensemble's rate ({rate:.0f} GFLOP/s), 3x LightGBM's time ({3 * base:.3f} s) "
        f"leaves {3 * base * rate:.1f} GFLOP; the default ensemble does {default_row['GFLOP']:.1f}, "
        f"{default_row['attention share']:.0%} of it in attention. Even at the rate of a 2048 x 2048 "
        f"float32 matrix product here ({peak:.0f} GFLOP/s), that work would take "
        f"{default_row['GFLOP'] / peak:.3f} s, {default_row['GFLOP'] / peak / base:.1f}x LightGBM."
    )
    load = os.getloadavg()
    header = (
        f"fit + predict, {args.train} train x {args.test} test x {args.features} features, "
        f"{args.threads} threads, median of {args.repeats} (cpu: {os.cpu_count()} cores, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average {load[0]:.1f} at the end)"
    )
    formats = {"x lightgbm": ".2f", "GFLOP": ".1f", "GFLOP/s": ".1f", "attention share": ".2f"}
    print(header)
    print(table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print(footer)
    if args.out is not None:
        from benchmarks.report import command_line, markdown_table

        args.out.write_text(
            f"# TabFM against LightGBM: fit + predict time\n\nCommand: `{command_line('benchmarks.tabfm_speed', argv)}`"
            f"\n\n{header}.\n\n{markdown_table(table, formats)}\n\n{footer}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
