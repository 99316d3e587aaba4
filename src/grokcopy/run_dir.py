"""Checkpoints that can be trusted after a crash.

The Trainer writes `checkpoint-N/` file by file (weights, optimizer, RNG, `trainer_state.json`
last), so a run killed or out of disk while saving leaves a folder that looks like a checkpoint
but cannot be resumed from. `checkpoint_problem` says what is wrong with one (cheaply: it reads
safetensors headers, not tensors); resume and Hub pushes use only complete checkpoints, and a
broken one is renamed `incomplete-checkpoint-N` (kept for inspection, never picked up again).
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from pathlib import Path

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                "pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is unreadable (truncated, bad header), or None when it is whole."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > size - 8:
                return f"{path.name} is truncated ({size} bytes)"
            header = json.loads(fh.read(header_len))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as err:
        return f"{path.name} is unreadable ({type(err).__name__})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size != 8 + header_len + end:
        return f"{path.name} is truncated ({size} of {8 + header_len + end} bytes)"
    return None


def checkpoint_problem(folder: str | Path) -> str | None:
    """What makes `folder` unusable as a checkpoint, or None when it is complete."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "trainer_state.json is missing (the run stopped while saving?)"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return "trainer_state.json is truncated or unreadable"
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    weights += sorted(folder.glob("model-*-of-*.safetensors"))
    sharded = [d for d in folder.glob("pytorch_model_fsdp_*") if d.is_dir()]  # FSDP SHARDED_STATE_DICT
    if any(not (d / ".metadata").is_file() for d in sharded):
        return "an FSDP sharded state dict without its .metadata (the run stopped while saving?)"
    if not weights and not sharded:
        return "no model weights in it"
    for path in weights:
        problem = safetensors_problem(path) if path.suffix == ".safetensors" else None
        if problem:
            return problem
    return None


def checkpoint_step(folder: Path) -> int | None:
    """N of a `checkpoint-N` folder, None for any other name."""
    match = _CHECKPOINT.match(Path(folder).name)
    return int(match.group(1)) if match else None


def checkpoints(output_dir: str | Path) -> list[Path]:
    """`checkpoint-N` folders of a run, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None), key=checkpoint_step)


def set_aside(folder: Path) -> Path:
    """Rename a broken checkpoint so that neither Trainer nor grokcopy picks it up again."""
    target = folder.with_name(f"incomplete-{folder.name}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"incomplete-{folder.name}.{n}")
    os.replace(folder, target)
    return target


def last_complete_checkpoint(output_dir: str | Path, set_aside_broken: bool = False) -> Path | None:
    """The newest complete checkpoint; newer broken ones are logged (and renamed when asked)."""
    for folder in reversed(checkpoints(output_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        if set_aside_broken:
            moved = set_aside(folder)
            logger.warning("%s is incomplete: %s; moved to %s", folder.name, problem, moved.name)
        else:
            logger.warning("%s is incomplete: %s; skipped", folder.name, problem)
    return None
