"""Files that a crash never tears: whole files replaced only once complete, histories appended a line at a
time (a torn last line is skipped when read), and checks that weights on disk are whole. It knows no file
name of a run: grokcopy.run_dir names those.

`atomic_write` writes a temporary beside the file (per process and thread), fsyncs it and renames it
over the file, so a reader never sees half a file and two writers never share a temporary; an OSError
of a write names the file it was for (a full disk says only "No space left on device").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import tempfile
import threading
from pathlib import Path

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_write(path: str | Path, binary: bool = False):
    """A file handle whose content replaces `path` only once complete (temporary + fsync + rename):
    a reader never sees half a file, and two writers never share a temporary."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # per process and thread
    try:
        with _naming(path), open(tmp, "wb" if binary else "w") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _naming(path: Path):
    """An OSError of a write (a full disk says only "No space left on device") names the file it was for."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def write_json_atomic(path: str | Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def write_jsonl(rows, path: str | Path) -> None:
    """A whole history, atomically."""
    with atomic_write(path) as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def append_jsonl(path: str | Path, record: dict) -> None:
    """One record more, on disk before this returns (a crash loses at most the line being written)."""
    with _naming(Path(path)), open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a history file; a torn last line (killed mid-write) is skipped."""
    return read_jsonl_checked(path)[0]


def read_jsonl_checked(path: str | Path) -> tuple[list[dict], bool]:
    """(records, whole): `whole` is False when a line is unreadable or the file does not end in a
    newline, i.e. a writer was killed mid-line; the next append would be glued onto that fragment."""
    path = Path(path)
    if not path.is_file():
        return [], True
    text = path.read_text()
    records, whole = [], not text or text.endswith("\n")
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: skipping an unreadable line", path)
            whole = False
    return records, whole


def read_json(path: str | Path):
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- whole weights

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


def model_folder_problem(folder: str | Path) -> str | None:
    """What keeps a local folder from loading as a model (no config, no or truncated weights), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return "not a folder"
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        return "not a model folder (no config.json)"
    return weights_problem(folder)


def weights_problem(folder: Path) -> str | None:
    """Whether a folder's weights are there and whole (safetensors headers are read, not tensors)."""
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


def writable_problem(folder: str | Path) -> str | None:
    """Why `folder` (or, when it does not exist yet, the folder it would be created in) cannot be
    written to, or None. Tried for real (a temporary file), since permissions do not show a
    read-only file system or a full disk."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".grokcopy-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"{existing} is not writable ({err.strerror or type(err).__name__})"
    return None
