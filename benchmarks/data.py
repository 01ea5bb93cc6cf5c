"""Benchmark datasets: local Parquet folders, OpenML suites, and the seeded train/test split.

A local folder holds ``*.parquet`` files (feature columns plus a column ``target``) and a
``catalogue.csv`` with at least the columns ``name`` and ``task`` (binary, multiclass or regression).
An OpenML suite (``openml:ID``) is read through the ``openml`` package into a cache directory.
Datasets are loaded lazily, one at a time, so that a run over a large suite stays small in memory.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

logger = logging.getLogger(__name__)

TASKS = ("binary", "multiclass", "regression")
TARGET = "target"


@dataclass(frozen=True)
class Dataset:
    """One loaded table: features ``X`` (non-numeric columns as pandas ``category``) and target ``y``."""

    name: str
    task: str
    X: pd.DataFrame
    y: np.ndarray


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset known by name and task, loaded on demand by ``load()``."""

    name: str
    task: str
    load: Callable[[], Dataset] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Split:
    """The rows every model sees for one dataset and seed; ``note`` explains any deviation."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: np.ndarray
    y_test: np.ndarray
    note: str = ""


def normalise_features(X: pd.DataFrame) -> pd.DataFrame:
    """Turn every non-numeric column (string, object, bool, category) into pandas ``category``.

    GBDTs read categories natively from this dtype; the linear baseline one-hot encodes them.
    """
    X = X.copy()
    for col in X.columns:
        s = X[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            continue
        if pd.api.types.is_bool_dtype(s.dtype) or not pd.api.types.is_numeric_dtype(s.dtype):
            X[col] = s.astype("string").astype("category")
    return X


def _check_task(task: str, where: str) -> str:
    task = str(task).strip().lower()
    if task not in TASKS:
        raise ValueError(f"{where}: task must be one of {TASKS}, got {task!r}")
    return task


def _load_parquet(path: Path, name: str, task: str) -> Dataset:
    df = pd.read_parquet(path)
    if TARGET not in df.columns:
        raise ValueError(f"{path}: no column {TARGET!r} (columns: {list(df.columns)[:10]}...)")
    y = df.pop(TARGET).to_numpy()
    if task == "regression":
        y = y.astype(np.float64)
    return Dataset(name=name, task=task, X=normalise_features(df), y=y)


def local_datasets(data_dir: str | Path, names: list[str] | None = None) -> list[DatasetEntry]:
    """List the datasets of a local folder from its ``catalogue.csv``.

    Parameters
    ----------
    data_dir : str or Path
        Folder holding ``catalogue.csv`` and ``<name>.parquet`` files.
    names : list of str, optional
        Keep only these datasets (in catalogue order); an unknown name raises ``ValueError``.
    """
    data_dir = Path(data_dir)
    catalogue_path = data_dir / "catalogue.csv"
    if not catalogue_path.is_file():
        raise FileNotFoundError(
            f"--data-dir {data_dir}: no catalogue.csv (needs columns name, task)"
        )
    catalogue = pd.read_csv(catalogue_path)
    missing = {"name", "task"} - set(catalogue.columns)
    if missing:
        raise ValueError(f"{catalogue_path}: missing columns {sorted(missing)}")
    entries = []
    for name, task in zip(catalogue["name"].astype(str), catalogue["task"], strict=True):
        task = _check_task(task, f"{catalogue_path}, dataset {name!r}")
        path = data_dir / f"{name}.parquet"
        entries.append(
            DatasetEntry(name, task, lambda p=path, n=name, t=task: _load_parquet(p, n, t))
        )
    return _select(entries, names, str(catalogue_path))


def _select(entries: list[DatasetEntry], names: list[str] | None, where: str) -> list[DatasetEntry]:
    if not names:
        return entries
    known = {e.name for e in entries}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--datasets: {unknown} not in {where} (known: {sorted(known)[:20]}...)")
    wanted = set(names)
    return [e for e in entries if e.name in wanted]


def check_online(url: str, timeout_s: float = 3.0) -> None:
    """Raise ``ConnectionError`` at once if the server of ``url`` cannot be reached.

    A socket connect with a short timeout, so that an offline machine fails in seconds rather than
    waiting on the HTTP client's retries.
    """
    parsed = urlparse(url)
    host = parsed.hostname or url
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    # Name resolution ignores socket timeouts, so it runs in a thread that is abandoned if slow.
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        addresses = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = addresses.result(timeout=timeout_s)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout_s)
            sock.connect(address)
    except (OSError, FutureTimeout) as exc:
        raise ConnectionError(
            f"cannot reach the OpenML server {host}:{port} within {timeout_s:g} s ({exc}); "
            "--suite openml:ID needs network access. Offline, use --data-dir with local Parquet files."
        ) from exc
    finally:
        pool.shutdown(wait=False)


def openml_datasets(
    suite: str, cache_dir: str | Path | None, names: list[str] | None = None, timeout_s: float = 3.0
) -> list[DatasetEntry]:
    """List the tasks of an OpenML study or suite (``openml:ID``) as lazily loaded datasets.

    Fails within ``timeout_s`` seconds with ``ConnectionError`` when the server is unreachable.
    """
    prefix, _, ident = suite.partition(":")
    if prefix != "openml" or not ident:
        raise ValueError(f"--suite must look like openml:ID (e.g. openml:99), got {suite!r}")
    try:
        import openml
    except ImportError as exc:
        raise ImportError(
            "--suite openml:ID needs the openml package: pip install 'tabfm[benchmark]'"
        ) from exc
    check_online(openml.config.server, timeout_s)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        openml.config.set_root_cache_directory(str(cache_dir))
    study = openml.study.get_suite(int(ident) if ident.isdigit() else ident)
    entries = []
    for task_id in study.tasks:
        task = openml.tasks.get_task(task_id, download_data=False)
        is_regression = task.task_type_id == openml.tasks.TaskType.SUPERVISED_REGRESSION
        dataset = openml.datasets.get_dataset(task.dataset_id, download_data=False)
        if is_regression:
            kind = "regression"
        else:
            n_classes = len(getattr(task, "class_labels", None) or []) or 2
            kind = "binary" if n_classes == 2 else "multiclass"
        entries.append(
            DatasetEntry(dataset.name, kind, lambda t=task, k=kind: _load_openml_task(t, k))
        )
    return _select(entries, names, suite)


def _load_openml_task(task, kind: str) -> Dataset:
    dataset = task.get_dataset()
    X, y, _, _ = dataset.get_data(target=task.target_name, dataset_format="dataframe")
    if kind == "regression":
        y = np.asarray(y, dtype=np.float64)
    else:
        y = pd.Series(y).astype("category").cat.codes.to_numpy(dtype=np.int64)
    return Dataset(name=dataset.name, task=kind, X=normalise_features(X), y=y)


def seeded_subset(
    idx: np.ndarray, size: int, y: np.ndarray | None, seed: int
) -> tuple[np.ndarray, str]:
    """Keep ``size`` of ``idx``, stratified by ``y`` when given and possible."""
    if size >= len(idx):
        return idx, ""
    if y is not None:
        try:
            kept, _ = train_test_split(idx, train_size=size, stratify=y[idx], random_state=seed)
            return np.sort(kept), ""
        except ValueError as exc:
            note = f"unstratified subsample ({exc})"
    else:
        note = ""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(idx, size=size, replace=False)), note


def make_split(
    dataset: Dataset,
    seed: int,
    *,
    test_size: float = 0.3,
    max_train_rows: int | None = None,
    max_test_rows: int | None = None,
) -> Split:
    """Split 70/30 (stratified for classification), then cap the train and test rows.

    Stratification falls back to a plain shuffled split, with a ``note``, when a class is too small.
    """
    n = len(dataset.y)
    idx = np.arange(n)
    classify = dataset.task != "regression"
    notes = []
    try:
        train_idx, test_idx = train_test_split(
            idx, test_size=test_size, random_state=seed, stratify=dataset.y if classify else None
        )
    except ValueError as exc:
        notes.append(f"unstratified split ({exc})")
        train_idx, test_idx = train_test_split(idx, test_size=test_size, random_state=seed)
    strat = dataset.y if classify else None
    if max_train_rows is not None:
        train_idx, note = seeded_subset(train_idx, max_train_rows, strat, seed)
        notes.append(note)
    if max_test_rows is not None:
        test_idx, note = seeded_subset(test_idx, max_test_rows, strat, seed + 1)
        notes.append(note)
    X, y = dataset.X, dataset.y
    return Split(
        X_train=X.iloc[train_idx].reset_index(drop=True),
        X_test=X.iloc[test_idx].reset_index(drop=True),
        y_train=y[train_idx],
        y_test=y[test_idx],
        note="; ".join(n for n in notes if n),
    )
