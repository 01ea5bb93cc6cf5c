"""The background training worker: one thread draining a bounded queue of TabM/TabR jobs.

One job at a time keeps training from starving predictions of the CPU; a full queue is refused at
once (429) rather than letting jobs pile up in memory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The training queue is full; the client should retry later (429)."""


@dataclass
class TrainingJob:
    """A model to train: ``run()`` fits and writes it; ``fail(reason)`` records a failure."""

    model_id: str
    run: Callable[[], None]
    fail: Callable[[BaseException], None]


class TrainingWorker:
    """Runs :class:`TrainingJob` s one after another in a daemon thread.

    Parameters
    ----------
    maxsize : int
        Jobs that may wait; :meth:`submit` raises :class:`QueueFull` beyond.
    """

    def __init__(self, maxsize: int = 8) -> None:
        self._queue: queue.Queue[TrainingJob | None] = queue.Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.running: str | None = None
        self.completed = 0
        self.failed = 0
        self.seconds = 0.0

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="tabfm-training", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop after its current job (queued jobs are dropped)."""
        if self._thread is None:
            return
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None

    def submit(self, job: TrainingJob) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} training jobs are already waiting; retry later") from None

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job is queued or running (for tests and shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.02)
        return False

    def stats(self) -> dict[str, int]:
        return {
            "queued": self._queue.qsize(),
            "running": int(self.running is not None),
            "completed": self.completed,
            "failed": self.failed,
        }

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                self._queue.task_done()
                return
            self.running = job.model_id
            start = time.perf_counter()
            try:
                job.run()
                self.completed += 1
                logger.info("model %s trained in %.1f s", job.model_id, time.perf_counter() - start)
            except BaseException as error:
                self.failed += 1
                logger.warning("model %s failed to train: %s", job.model_id, error, exc_info=True)
                try:
                    job.fail(error)
                except Exception:
                    logger.exception("could not record the failure of model %s", job.model_id)
            finally:
                self.seconds += time.perf_counter() - start
                self.running = None
                self._queue.task_done()
