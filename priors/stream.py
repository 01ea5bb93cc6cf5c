"""An endless, reproducible stream of prior batches for pretraining.

The batch at step ``s`` is ``make_batch(..., seed=step_seed(seed, s))`` with the shape
``shape_schedule(s)``, so the stream is the same whatever the number of worker processes: workers
only compute batches ahead of time (overlapping generation with the training step), and the main
process hands them out in step order.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from priors.batch import PriorBatch, check_shape, make_batch_arrays
from priors.common import derive_seed
from priors.recipe import Recipe, load_recipe
from priors.shards import load_batch, read_index, step_seed

logger = logging.getLogger(__name__)

ShapeSchedule = Callable[[int], tuple[int, int]]
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _worker_main(recipe: Recipe, task: str, batch_size: int, tasks: Any, results: Any) -> None:
    # Leave unsent results behind at shutdown instead of blocking the exit on a full pipe.
    results.cancel_join_thread()
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(1)
    while True:
        item = tasks.get()
        if item is None:
            return
        step, seed, n_rows, max_features = item
        try:
            arrays = make_batch_arrays(recipe, task, batch_size=batch_size, n_rows=n_rows,
                                       max_features=max_features, seed=seed)
            results.put((step, arrays, None))
        except Exception:  # sent to the main process, which raises it
            results.put((step, None, traceback.format_exc()))


class BatchStream:
    """Iterator of ``(step, PriorBatch)`` for ``step = start_step, start_step + 1, ...``.

    Parameters
    ----------
    recipe : Recipe or str
        The prior, or a path / shipped name for :func:`priors.load_recipe`.
    task : {"classification", "regression"}
    batch_size : int
        Datasets per batch.
    seed : int
        Seed of the whole stream; the batch of step ``s`` is ``make_batch(...,
        seed=step_seed(seed, s))``.
    start_step : int, default 0
        First step (resume a pretraining run where it stopped).
    num_workers : int, default 1
        0 or 1 generate in this process; more start that many worker processes that prefetch
        batches while the caller trains. The output does not depend on this number.
    shape_schedule : callable, optional
        ``shape_schedule(step) -> (n_rows, max_features)``. It runs in this process (it need not
        be picklable). Default: both drawn from the recipe's ``shape`` section, seeded by the step.
    prefetch : int, default 2
        Batches computed ahead per worker.
    mp_context : str, default "spawn"
        Start method of the workers ("spawn" is safe after torch has started threads).

    Examples
    --------
    >>> with BatchStream("smoke", "classification", batch_size=2, seed=0) as stream:
    ...     step, batch = next(stream)
    >>> step, batch.x.shape[0]
    (0, 2)
    """

    def __init__(
        self, recipe: Recipe | str, task: str, *, batch_size: int, seed: int, start_step: int = 0,
        num_workers: int = 1, shape_schedule: ShapeSchedule | None = None, prefetch: int = 2,
        mp_context: str = "spawn",
    ) -> None:
        self.recipe = load_recipe(recipe)
        self.task = task
        self.batch_size = batch_size
        self.seed = int(seed)
        self.step = int(start_step)
        self.num_workers = int(num_workers)
        self.shape_schedule = shape_schedule or self.recipe_shape
        self.prefetch = max(1, int(prefetch))
        self._shards: list[Path] | None = None
        self._loop = True
        self._workers: list[Any] = []
        self._pending: dict[int, Any] = {}
        self._submitted = self.step
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        n_rows, max_features = self.shape_schedule(self.step)
        check_shape(n_rows, max_features, batch_size, self.recipe, task)
        if self.num_workers > 1:
            self._start_workers(mp_context)

    # --- shapes and seeds -----------------------------------------------------------------

    def recipe_shape(self, step: int) -> tuple[int, int]:
        """The default schedule: ``(n_rows, max_features)`` drawn from the recipe for ``step``."""
        rng = np.random.default_rng(derive_seed(self.seed, 3, step))
        shape = self.recipe.shape
        return int(shape.n_rows.sample(rng)), int(shape.max_features.sample(rng))

    def batch_seed(self, step: int) -> int:
        """The ``seed`` passed to ``make_batch`` for ``step``."""
        return step_seed(self.seed, step)

    # --- shards ---------------------------------------------------------------------------

    @classmethod
    def from_shards(cls, directory: str | Path, *, start_step: int = 0, loop: bool = True) -> BatchStream:
        """A stream reading the batches written by ``tabfm prior sample --format shards``.

        Step ``s`` yields shard ``s`` (``s mod n_shards`` when ``loop``; otherwise the stream ends
        after the last shard).
        """
        index = read_index(directory)
        self = cls.__new__(cls)
        self.recipe = None
        self.task = index["task"]
        self.batch_size = index["batch_size"]
        self.seed = index["seed"]
        self.step = int(start_step)
        self.num_workers = 0
        self._shards = [Path(directory) / name for name in index["shards"]]
        if not self._shards:
            raise ValueError(f"shard directory {str(directory)!r} lists no shards")
        self._loop = loop
        self._workers = []
        self._pending = {}
        self._submitted = self.step
        self.shape_schedule = lambda step: (index["n_rows"], index["max_features"])
        return self

    # --- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[int, PriorBatch]]:
        return self

    def __next__(self) -> tuple[int, PriorBatch]:
        step = self.step
        if self._shards is not None:
            if not self._loop and step >= len(self._shards):
                raise StopIteration
            batch = load_batch(self._shards[step % len(self._shards)])
        elif self._workers:
            batch = PriorBatch.from_numpy(self._collect(step))
        else:
            n_rows, max_features = self.shape_schedule(step)
            batch = PriorBatch.from_numpy(make_batch_arrays(
                self.recipe, self.task, batch_size=self.batch_size, n_rows=n_rows,
                max_features=max_features, seed=self.batch_seed(step)))
        self.step = step + 1
        return step, batch

    # --- workers --------------------------------------------------------------------------

    def _start_workers(self, method: str) -> None:
        ctx = mp.get_context(method)
        self._tasks = ctx.Queue()
        self._results = ctx.Queue()
        saved = {k: os.environ.get(k) for k in _THREAD_ENV}
        os.environ.update({k: "1" for k in _THREAD_ENV})  # one thread per worker
        try:
            for _ in range(self.num_workers):
                p = ctx.Process(target=_worker_main, daemon=True, args=(
                    self.recipe, self.task, self.batch_size, self._tasks, self._results))
                p.start()
                self._workers.append(p)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _submit(self) -> None:
        while self._submitted < self.step + self.num_workers * self.prefetch:
            s = self._submitted
            n_rows, max_features = self.shape_schedule(s)
            check_shape(n_rows, max_features, self.batch_size, self.recipe, self.task)
            self._tasks.put((s, self.batch_seed(s), n_rows, max_features))
            self._submitted += 1

    def _collect(self, step: int) -> dict[str, Any]:
        self._submit()
        while step not in self._pending:
            try:
                s, arrays, error = self._results.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in self._workers if not p.is_alive()]
                if dead:
                    self.close()
                    raise RuntimeError(f"a prior worker process died (exit codes {dead})") from None
                continue
            if error is not None:
                self.close()
                raise RuntimeError(f"prior worker failed at step {s}:\n{error}")
            self._pending[s] = arrays
        return self._pending.pop(step)

    def close(self) -> None:
        """Stop the worker processes (safe to call twice)."""
        workers, self._workers = self._workers, []
        if not workers:
            return
        for _ in workers:
            self._tasks.put(None)
        for p in workers:
            p.join(timeout=5.0)
            if p.is_alive():
                logger.warning("prior worker %s did not stop in 5 s; terminating it", p.pid)
                p.terminate()
                p.join(timeout=5.0)
        for q in (self._tasks, self._results):
            q.cancel_join_thread()
            q.close()
        self._pending.clear()

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
