"""Weights and training checkpoints as safetensors + JSON (never pickle), written atomically.

A training checkpoint is a folder:
    model.safetensors      the model's state_dict
    optimizer.safetensors  AdamW state flattened as "state.<param_idx>.<name>" (exp_avg, exp_avg_sq, step)
    rng.safetensors        every RNG state per rank, "rank<r>.<name>" (see seeding.capture_rng_state)
    state.json             epoch, global step, schedule, early-stopping state, history, config
It is built in a temporary sibling folder and swapped in with os.replace, so a crash mid-write
leaves the previous checkpoint intact and no partial folder behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from recstack.errors import DataError

LAST, BEST = "last", "best"


# ---- atomic writes -------------------------------------------------------------------------------
@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a crashed run
    old = target.parent / f".{target.name}.old"
    if old.exists() and not target.exists():
        os.replace(old, target)  # a crash between the two renames below: the old copy is the good one
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_folder(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)  # rename(2) cannot replace a non-empty folder, so swap in two steps
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def write_json(path: str | Path, data: Any, sort_keys: bool = True) -> None:
    """JSON file written via temp file + os.replace (sort_keys=False where mapping order carries meaning)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=sort_keys))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise DataError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path}: not a readable safetensors file: {exc}") from exc


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write named tensors (not a module) to a safetensors file, atomically."""
    _save_tensors({k: v.contiguous() for k, v in tensors.items()}, Path(path))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Named tensors of a safetensors file; a missing or corrupt file is a DataError naming it."""
    return _load_tensors(Path(path))[0]


# ---- weights -------------------------------------------------------------------------------------
def save_weights(module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write `module.state_dict()` to a safetensors file; tied / shared tensors are cloned."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()
    tensors = {}
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu()
        ptr = tensor.untyped_storage().data_ptr()
        tensors[name] = tensor.clone() if ptr in seen else tensor.contiguous()
        seen.add(ptr)
    _save_tensors(tensors, path, metadata)


def read_weights(
    module: nn.Module, path: str | Path, strict: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a `save_weights` file, checked against `module` (not loaded into it); returns (tensors, metadata).

    Raises DataError naming the parameter when a name is missing/unexpected (strict) or a shape differs.
    """
    path = Path(path)
    tensors, metadata = _load_tensors(path)
    expected = module.state_dict()
    for name, tensor in tensors.items():
        if name not in expected:
            if strict:
                raise DataError(
                    f"{path}: parameter {name!r} is in the file but not in the model ({type(module).__name__})"
                )
        elif tuple(tensor.shape) != tuple(expected[name].shape):
            raise DataError(
                f"{path}: parameter {name!r} has shape {tuple(tensor.shape)} in the file "
                f"but {tuple(expected[name].shape)} in the model"
            )
    missing = [name for name in expected if name not in tensors]
    if missing and strict:
        raise DataError(
            f"{path}: parameter {missing[0]!r} of the model is missing from the file"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    return {k: v for k, v in tensors.items() if k in expected}, metadata


def load_weights(module: nn.Module, path: str | Path, strict: bool = True) -> dict[str, str]:
    """Load a `save_weights` file into `module` (errors as in `read_weights`); returns its metadata."""
    tensors, metadata = read_weights(module, path, strict)
    module.load_state_dict(tensors, strict=False)
    return metadata


# ---- optimizer -----------------------------------------------------------------------------------
def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW state flattened to "state.<param_idx>.<name>" tensors (python numbers become 0-d float64)."""
    out = {}
    for idx, entries in optimizer.state_dict()["state"].items():
        for name, value in entries.items():
            tensor = value.detach().cpu() if torch.is_tensor(value) else torch.tensor(value, dtype=torch.float64)
            out[f"state.{idx}.{name}"] = tensor.contiguous()
    return out


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_names: list[str], source: Path
) -> None:
    """Inverse of `optimizer_tensors`; errors name the parameter whose state does not fit."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, idx_text, name = key.split(".", 2)
        idx = int(idx_text)
        if idx >= len(params):
            raise DataError(f"{source}: optimizer state for parameter #{idx}, but the model has {len(params)}")
        if tensor.dim() > 0 and tuple(tensor.shape) != tuple(params[idx].shape):
            raise DataError(
                f"{source}: optimizer {name!r} for parameter {param_names[idx]!r} has shape "
                f"{tuple(tensor.shape)}, the parameter has {tuple(params[idx].shape)}"
            )
        state.setdefault(idx, {})[name] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


# ---- training checkpoints ------------------------------------------------------------------------
def write_checkpoint(
    folder: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    rng_by_rank: list[dict[str, torch.Tensor]],
) -> None:
    with atomic_dir(folder) as tmp:
        save_weights(model, tmp / "model.safetensors")
        _save_tensors(optimizer_tensors(optimizer), tmp / "optimizer.safetensors")
        rng = {f"rank{r}.{k}": v.contiguous() for r, states in enumerate(rng_by_rank) for k, v in states.items()}
        _save_tensors(rng, tmp / "rng.safetensors")
        write_json(tmp / "state.json", state)


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable checkpoint state: {exc}") from exc


def find_checkpoint(folder: str | Path) -> Path | None:
    """`folder` if it holds a complete checkpoint (or the copy kept during a swap), else None."""
    folder = Path(folder)
    for candidate in (folder, folder.parent / f".{folder.name}.old"):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def read_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str], rank: int = 0
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Load weights and optimizer state in place; returns (state.json, this rank's RNG state or None)."""
    state = read_json(folder / "state.json")
    load_weights(model, folder / "model.safetensors")
    tensors, _ = _load_tensors(folder / "optimizer.safetensors")
    load_optimizer_tensors(optimizer, tensors, param_names, folder / "optimizer.safetensors")
    rng_all, _ = _load_tensors(folder / "rng.safetensors")
    prefix = f"rank{rank}."
    rng = {k[len(prefix) :]: v for k, v in rng_all.items() if k.startswith(prefix)}
    return state, (rng or None)


def write_best(folder: str | Path, model: nn.Module, info: dict[str, Any]) -> None:
    with atomic_dir(folder) as tmp:
        save_weights(model, tmp / "model.safetensors")
        write_json(tmp / "state.json", info)
