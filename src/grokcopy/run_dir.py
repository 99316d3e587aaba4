"""The run folder: every file a run writes, named once, written so that a crash never tears one.

    output_dir/
      run_config.json          every argument of the run (written before training starts)
      copy_history.jsonl       one record per copy test (CopyEvalCallback)
      induction_history.jsonl  one record per induction analysis (InductionHeadCallback)
      trainer_state.json       the Trainer's state; its log_history holds the logged training losses
      summary.json             the run in numbers (written once, when training ends)
      copy_curve.png, induction_history.png, induction_formation.png
      hub_pushes.json          which checkpoints reached the Hub (HubCheckpointCallback)
      grokcopy.lock            the process writing the run, while it runs (grokcopy.training.run_lock)
      checkpoint-N/            Trainer checkpoints, each with copy_eval.json, induction.json, induction.png

A sweep folder holds sweep.json and one run folder per member. Whole files are replaced only once
complete (`atomic_write`); histories are appended a line at a time and a torn last line is skipped
when read. Checkpoints are trusted only when whole: the Trainer writes `checkpoint-N/` file by file
(`trainer_state.json` last), so a run killed while saving leaves a folder that looks like a
checkpoint but cannot be resumed from; `checkpoint_problem` says what is wrong with one (cheaply:
it reads safetensors headers, not tensors), and a broken one is renamed `incomplete-checkpoint-N`.
A folder holds one run: a fresh run refuses a folder with `run_contents` unless it resumes, or moves
the old run aside whole (`set_aside_run`, to OUTPUT_DIR.previous-N) when asked to overwrite.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
import tempfile
import threading
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"
COPY_HISTORY = "copy_history.jsonl"
INDUCTION_HISTORY = "induction_history.jsonl"
TRAINER_STATE = "trainer_state.json"
SUMMARY = "summary.json"
COPY_CURVE = "copy_curve.png"
INDUCTION_HISTORY_PLOT = "induction_history.png"
FORMATION_PLOT = "induction_formation.png"
PUSH_RECORD = "hub_pushes.json"
SWEEP_RECORD = "sweep.json"
EXPERIMENT = "experiment.json"  # beside archived members: the sweep file and its fixed report settings
RUN_LOCK = "grokcopy.lock"  # held by the process writing the run (grokcopy.training.run_lock)
CHECKPOINT_COPY_EVAL = "copy_eval.json"  # inside checkpoint-N/
CHECKPOINT_INDUCTION = "induction.json"
CHECKPOINT_INDUCTION_PLOT = "induction.png"
# What goes to the Hub's main branch beside the newest checkpoint: the run's histories and figures.
RUN_FILES = (COPY_HISTORY, INDUCTION_HISTORY, COPY_CURVE, INDUCTION_HISTORY_PLOT, FORMATION_PLOT, SUMMARY)
FIGURES = (COPY_CURVE, INDUCTION_HISTORY_PLOT, FORMATION_PLOT)


# ----------------------------------------------------------------------------- safe reads and writes


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


# ----------------------------------------------------------------------------- a run's histories


def losses_from_log(log_history: list[dict]) -> list[tuple[int, float]]:
    """(step, training loss) of every logged step of a Trainer log_history."""
    return [(r["step"], r["loss"]) for r in log_history if "loss" in r]


def log_history(run_dir: str | Path) -> list[dict]:
    """The Trainer's log of the run: the first with training losses of trainer_state.json and the checkpoints'
    (newest first: a run still training or killed), else the first log at all; [] without one."""
    run_dir = Path(run_dir)
    logs = []
    for state_file in [run_dir / TRAINER_STATE] + [c / TRAINER_STATE for c in reversed(checkpoints(run_dir))]:
        state = read_json(state_file)
        if isinstance(state, dict) and state.get("log_history"):
            if losses_from_log(state["log_history"]):
                return state["log_history"]
            logs.append(state["log_history"])  # a log without losses: only if no file has one
    return logs[0] if logs else []


def logged_losses(run_dir: str | Path, log: list[dict] | None = None) -> list[tuple[int, float]]:
    """The run's logged training losses (from its `log_history`), else the losses the copy history recorded."""
    losses = losses_from_log(log_history(run_dir) if log is None else log)
    return losses or [(r["step"], r["loss"]) for r in read_jsonl(Path(run_dir) / COPY_HISTORY) if r.get("loss") is not None]


def history_tokens_per_step(records: list[dict]) -> float | None:
    """Tokens per optimizer step from a history's latest record with both counts (None without one)."""
    known = [r for r in records if r.get("tokens") and r.get("step")]
    return known[-1]["tokens"] / known[-1]["step"] if known else None


def load_histories(run_dir: str | Path) -> dict:
    """Everything a report needs of a run folder: `losses`, `log_history`, `copy_history`, `induction_history`,
    `run_config` and `tokens_per_step` (run_config.json's, else the copy history's)."""
    run_dir = Path(run_dir)
    copy = read_jsonl(run_dir / COPY_HISTORY)
    run_config = read_json(run_dir / RUN_CONFIG) or {}
    log = log_history(run_dir)
    return {"losses": logged_losses(run_dir, log), "log_history": log, "copy_history": copy,
            "induction_history": read_jsonl(run_dir / INDUCTION_HISTORY), "run_config": run_config,
            "tokens_per_step": run_config.get("tokens_per_step") or history_tokens_per_step(copy)}


HISTORY_FILES = (RUN_CONFIG, COPY_HISTORY, INDUCTION_HISTORY, SUMMARY)


def run_analysis_settings(folder: str | Path) -> dict:
    """The copy-test and induction settings a run used (its run_config.json, in this folder or the run
    folder above a checkpoint), so that analysing a run's model measures what the run measured. {} for
    a folder that is no grokcopy run; ValueError, naming the file, for settings no run could have had."""
    folder = Path(folder)
    for candidate in (folder, folder.parent):
        path = candidate / RUN_CONFIG
        config = read_json(path)
        if config is None:
            continue
        training = config.get("training") if isinstance(config, dict) else None
        if not isinstance(training, dict):
            raise ValueError(f"{path}: not a grokcopy run config (no 'training' settings)")
        settings = {k: v for k, v in training.items() if k.startswith(("copy_", "induction_")) and v is not None}
        for key, value in settings.items():
            if key.endswith(_COUNTS) and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{path}: {key} is {value!r}, not a positive integer")
        return settings
    return {}


_COUNTS = ("_num_samples", "_num_sequences", "_prefix_length", "_suffix_length", "_query_stride", "_seq_len",
           "_batch_size", "_eval_steps")


def archive_histories(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy what `grokcopy report` reads of a run (its histories, run_config.json, summary.json and the
    Trainer's log_history; never weights) to `dest`, e.g. docs/reproduction/<experiment>/<run>."""
    run_dir, dest = Path(run_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in HISTORY_FILES:
        if (run_dir / name).is_file():
            write_text_atomic(dest / name, (run_dir / name).read_text())
    state = read_json(run_dir / TRAINER_STATE)
    if isinstance(state, dict):  # the logged losses, without the per-step state of the callbacks
        write_json_atomic(dest / TRAINER_STATE, {k: state.get(k) for k in ("global_step", "max_steps", "log_history")})
    return dest


def write_experiment(archive: str | Path, sweep_path: str | Path, report: dict) -> Path:
    """`archive/experiment.json`: which sweep file the archived members come from and the report settings
    it fixes (e.g. `loss_target`), so that a report of these runs measures them the same way whatever other
    runs it holds."""
    path = Path(archive) / EXPERIMENT
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"sweep": str(sweep_path), "report": dict(report)})
    return path


def experiment_settings(run_path: str | Path) -> dict:
    """The report settings fixed by the experiment a run was archived in: the nearest `experiment.json`
    in its folder's parent or grandparent (an experiment may group its members in subfolders); {} when
    there is none."""
    for folder in list(Path(run_path).resolve().parents)[:2]:
        record = read_json(folder / EXPERIMENT)
        if isinstance(record, dict):
            report = record.get("report")
            return report if isinstance(report, dict) else {}
    return {}


# ----------------------------------------------------------------------------- checkpoints

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TORCH_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth")
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
    state = folder / TRAINER_STATE
    if not state.is_file():
        return "trainer_state.json is missing (the run stopped while saving?)"
    try:
        record = json.loads(state.read_text())
    except (OSError, ValueError):
        return "trainer_state.json is truncated or unreadable"
    if not isinstance(record, dict) or not isinstance(record.get("global_step"), int):
        return "trainer_state.json holds no Trainer state (no global_step)"
    for name in TORCH_FILES:  # torch.save writes a zip: a truncated one has no central directory
        path = folder / name
        if path.is_file() and not zipfile.is_zipfile(path):
            return f"{name} is truncated or unreadable"
    return weights_problem(folder)


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


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    """output_dir/checkpoint-N, as the Trainer names it."""
    return Path(output_dir) / f"checkpoint-{step}"


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


# ----------------------------------------------------------------------------- one run per folder

RUN_MARKERS = (RUN_CONFIG, COPY_HISTORY, INDUCTION_HISTORY, TRAINER_STATE, SUMMARY, PUSH_RECORD)


def run_contents(output_dir: str | Path) -> list[str]:
    """What in `output_dir` belongs to a run (its files, its checkpoint folders); [] when none does.

    A fresh run into such a folder would mix two runs: `--resume_from_checkpoint last` or
    `grokcopy push` would later pick up the other run's checkpoints."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name in RUN_MARKERS or checkpoint_step(p) is not None
                  or p.name.startswith("incomplete-checkpoint-"))


def set_aside_run(output_dir: str | Path) -> Path:
    """Move a whole old run out of the way, to the sibling OUTPUT_DIR.previous-N (nothing is deleted)."""
    root = Path(output_dir)
    n = 1
    while (target := root.with_name(f"{root.name}.previous-{n}")).exists():
        n += 1
    os.replace(root, target)
    return target


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
