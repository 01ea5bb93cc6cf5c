"""ICL model checkpoints: one safetensors file (weights + config) and a JSON model card beside it.

The safetensors header holds only the format and the architecture, never run-specific numbers, so
that the same weights always give the same bytes (git then stores a shipped checkpoint and an
identical resume state once). Weights are stored in float16 by default: half the bytes in the
repository, and the network runs in float32 after loading. No pickle is involved anywhere.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models.icl import ICLConfig, ICLTransformer
from tabfm.errors import TabFMValidationError

FORMAT = "tabfm-icl"
FORMAT_VERSION = "1"
CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"


# Other shipped networks, chosen with ``checkpoint=NAME``: the name's file when the package has one,
# else the default when that already is such a network (e.g. the regression default is exact).
SHIPPED_VARIANTS = ("exact",)


def shipped_checkpoint(task: str, variant: str | None = None) -> Path:
    """Path of the default checkpoint for ``task``: the one shipped in the package.

    The environment variable ``TABFM_CHECKPOINT_DIR`` points the default elsewhere (a folder
    holding ``tabfm-<task>.safetensors``), for example a frozen copy that a benchmark keeps using
    while a pretraining run replaces the shipped files. ``variant="exact"``: the network whose
    in-context blocks all attend exactly (every context row is a key), ``tabfm-<task>-exact``.
    """
    folder = os.environ.get("TABFM_CHECKPOINT_DIR")
    default = (Path(folder) if folder else CHECKPOINT_DIR) / f"tabfm-{task}.safetensors"
    if variant is None:
        return default
    if variant not in SHIPPED_VARIANTS:
        raise TabFMValidationError(f"checkpoint={variant!r} is not a shipped network; choose from {SHIPPED_VARIANTS}")
    path = default.with_name(f"tabfm-{task}-{variant}.safetensors")
    if path.is_file() or not default.is_file():
        return path
    architecture = read_card(default).get("architecture", {})
    if architecture.get("attention", {}).get("kind") == "full" and not architecture.get("n_exact_blocks"):
        return default  # the default network already attends exactly everywhere
    return path


def resolve_checkpoint(task: str, source: str | Path | None) -> Path:
    """The file a ``checkpoint=`` value names: ``None`` the package's default for ``task``, a name
    of :data:`SHIPPED_VARIANTS` that shipped network, anything else a path."""
    if source is None or source in SHIPPED_VARIANTS:
        return shipped_checkpoint(task, source)
    return Path(source)


def card_path(path: str | Path) -> Path:
    """The model card (JSON) that sits beside a checkpoint file."""
    return Path(path).with_suffix(".json")


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's file is private (0600); a checkpoint is for every reader
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path,
    model: ICLTransformer,
    *,
    card: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write ``model`` to ``path`` (safetensors) and ``card`` to the JSON beside it, atomically."""
    path = Path(path)
    tensors = {
        name: (t.detach().to("cpu", dtype) if t.is_floating_point() else t.detach().cpu()).contiguous().clone()
        for name, t in model.state_dict().items()
    }
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(model.config.to_dict(), sort_keys=True)}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    if card is not None:
        _atomic_write(card_path(path), lambda tmp: Path(tmp).write_text(json.dumps(card, indent=1, sort_keys=True) + "\n"))
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card of a checkpoint, or an empty dict when it has none."""
    card = card_path(path)
    return json.loads(card.read_text()) if card.is_file() else {}


def shipped_architecture(task: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shipped ``task`` network's configuration (its card's ``architecture``) with
    ``overrides``; those under ``"attention"`` merge into its attention settings."""
    architecture = dict(read_card(shipped_checkpoint(task)).get("architecture", {"task": task}))
    for key, value in (overrides or {}).items():
        architecture[key] = {**architecture.get("attention", {}), **value} if key == "attention" else value
    return architecture


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> ICLTransformer:
    """Rebuild the network stored at ``path`` in float32 on ``device`` (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no tabfm checkpoint at {path}; pass checkpoint=PATH to a file written by 'tabfm pretrain'"
        )
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise TabFMValidationError(f"{path} is not a tabfm ICL checkpoint (format={metadata.get('format')!r})")
        if int(metadata.get("format_version", "0")) > int(FORMAT_VERSION):
            raise TabFMValidationError(f"{path} was written by a newer tabfm (format version {metadata['format_version']})")
        state = {name: handle.get_tensor(name) for name in handle.keys()}
    return network_from_state(ICLConfig(**json.loads(metadata["config"])), state).to(device).eval()


# Networks loaded by estimators, per file version and device: every ``fit`` needs its network, and
# rebuilding one took ~60 ms, a sixth of a 1,000-row fit. Shared read-only (no gradients).
_SHARED: OrderedDict[tuple[str, int, int, str], ICLTransformer] = OrderedDict()
_SHARED_MAX = 4
_SHARED_LOCK = threading.Lock()


def shared_network(path: str | Path, device: str | torch.device = "cpu") -> ICLTransformer:
    """The network stored at ``path`` on ``device``, loaded once per version of the file and kept for
    later calls (the last few files). Callers share it: they must not train or modify it."""
    path = Path(path)
    if not path.is_file():
        return load_checkpoint(path, device)  # raises the clear error
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(torch.device(device)))
    with _SHARED_LOCK:
        network = _SHARED.get(key)
        if network is not None:
            _SHARED.move_to_end(key)
            return network
    network = load_checkpoint(path, device).requires_grad_(False)
    with _SHARED_LOCK:
        _SHARED[key] = network
        while len(_SHARED) > _SHARED_MAX:
            _SHARED.popitem(last=False)
    return network


def network_from_state(config: ICLConfig, state: dict[str, torch.Tensor]) -> ICLTransformer:
    """The network of ``config`` holding ``state`` (strictly: every parameter and buffer), in float32.

    Built on the meta device and given the loaded tensors, so that no time goes into initialising
    parameters that the checkpoint then overwrites (every ``fit`` loads the network).
    """
    with torch.device("meta"):
        model = ICLTransformer(config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    return model
