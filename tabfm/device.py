"""Device choice shared by every estimator and by pretraining, and how work is spread over CPU threads."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import torch

from tabfm.errors import TabFMValidationError

T = TypeVar("T")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``device``.

    ``"auto"`` (or ``None``) picks CUDA when a GPU is visible, else the CPU. Anything else is passed
    to ``torch.device``; asking for CUDA without a GPU is an error rather than a silent fallback.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise TabFMValidationError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', however: device={device!r}"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise TabFMValidationError(
            f"device={device!r} was asked for but no CUDA GPU is visible; use device='auto' or 'cpu'"
        )
    return resolved


def map_on_threads(fn: Callable[[int], T], n: int, device: torch.device) -> list[T]:
    """``[fn(0), ..., fn(n - 1)]``, the calls spread over the CPU threads when that is faster.

    Ensemble members are many small, independent networks: on the CPU each op is short, so two
    threads inside one op gain little, while two members at once, one thread each, keep both cores
    busy (1,000 x 1,000 rows x 20 features, 4 members on 2 cores: ``benchmarks/results/
    tabfm_speed_threads.md``). So when torch has at least 2 but no more threads than there are
    calls, each runs on a thread of its own with one intra-op thread, and the count is restored
    afterwards. Otherwise (one thread, more threads than calls, or a GPU) the calls run in turn.
    The count is process-wide: meanwhile, other torch work in the process runs on one thread, and
    a concurrent call sees 1 and runs its members in turn, each on one thread as here (so with the
    same numbers). Every call runs in inference mode: it is thread-local, so the workers set it
    themselves.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or n < 2 or not 2 <= threads <= n:
        return map_in_turn(fn, n)
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(partial(_call_inference_mode, fn), range(n)))
    finally:
        torch.set_num_threads(threads)


def map_in_turn(fn: Callable[[int], T], n: int) -> list[T]:
    """``[fn(0), ..., fn(n - 1)]`` one after another on the calling thread, in inference mode."""
    return [_call_inference_mode(fn, i) for i in range(n)]


def _call_inference_mode(fn: Callable[[int], T], i: int) -> T:
    with torch.inference_mode():
        return fn(i)
