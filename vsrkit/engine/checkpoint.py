"""Training checkpoints: layout, atomic writes, discovery, pruning and RNG states.

A checkpoint is a folder ``<output_dir>/checkpoints/step-<NNNNNNNN>/``:

- ``meta.json``: step, data position, world size, the run's config (written last);
- ``model.safetensors``: ``method.state_dict()`` (what trains, clean keys);
- ``ema.safetensors``: the EMA shadow, when EMA is on;
- ``training_state.pt``: optimizer and lr-scheduler states by group name;
- ``rng/rank-<NNNNN>.pt``: python, numpy, torch CPU and CUDA RNG states of each process;
- ``deepspeed/``: DeepSpeed's own optimizer shards, under DeepSpeed only.

It is written into ``.tmp-step-<N>`` and renamed when every file is there, so a folder named
``step-*`` is always complete. Which checkpoint is newest is read from ``meta.json``, never from
folder names.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META = "meta.json"
CHECKPOINTS = "checkpoints"


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINTS


def read_meta(directory: str | os.PathLike) -> dict | None:
    """The ``meta.json`` of a checkpoint folder, or None if it is not a complete checkpoint."""
    path = Path(directory) / META
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or "step" not in meta:
        return None
    return meta


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output_dir`` as ``(step, folder)``, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.name.startswith(".") or not child.is_dir():
            continue  # temporary folders of an interrupted save
        meta = read_meta(child)
        if meta is not None:
            found.append((int(meta["step"]), child))
    return sorted(found, key=lambda item: item[0])


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def temp_dir_for(output_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_root(output_dir) / f".tmp-step-{step:08d}"


def final_dir_for(output_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_root(output_dir) / f"step-{step:08d}"


def commit(temp: Path, final: Path, meta: dict) -> None:
    """Write ``meta.json`` into ``temp`` and move it to ``final`` (main process only)."""
    meta = {"format": FORMAT_VERSION, **meta}
    with open(temp / META, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():  # a checkpoint of the same step from an earlier, interrupted attempt
        shutil.rmtree(final)
    os.replace(temp, final)


def prune(output_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints and stale temp folders; returns the deleted."""
    deleted = []
    found = list_checkpoints(output_dir)
    for _, path in found[:-keep_last] if keep_last > 0 else found:
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path)
    root = checkpoint_root(output_dir)
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".tmp-"):
                shutil.rmtree(child, ignore_errors=True)
    return deleted


# --- RNG states ---------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch CPU and CUDA RNG states (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)
        else:
            logger.warning("Checkpoint has CUDA RNG states for %d devices, this process sees %d: CUDA RNG "
                           "not restored.", len(saved), torch.cuda.device_count())


def rng_path(directory: Path, rank: int) -> Path:
    return directory / "rng" / f"rank-{rank:05d}.pt"


def save_rng(directory: Path, rank: int) -> None:
    path = rng_path(directory, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(capture_rng_state(), path)


def load_rng(directory: Path, rank: int) -> bool:
    """Restore this rank's RNG state; False if the checkpoint has none for this rank."""
    path = rng_path(directory, rank)
    if not path.exists():
        return False
    restore_rng_state(torch.load(path, map_location="cpu", weights_only=True))
    return True


# --- tensors ------------------------------------------------------------------------------


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Save a flat ``{name: tensor}`` as safetensors (copies to CPU; shared storage is fine)."""
    from safetensors.torch import save_file

    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"state_dict values must be tensors; {bad[:3]} are not.")
    save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")
