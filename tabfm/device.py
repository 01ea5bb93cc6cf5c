"""Device choice shared by every estimator and by pretraining."""

from __future__ import annotations

import torch

from tabfm.errors import TabFMValidationError


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
