"""The run folder: every file a run writes, named once here and reached through `RunFolder`.

    output_dir/
      run_config.json          every argument of the run (written before training starts)
      copy_history.jsonl       one record per copy test (CopyEvalCallback)
      induction_history.jsonl  one record per induction analysis (InductionHeadCallback)
      ablation_history.jsonl   one record per head ablation during training (HeadAblationCallback)
      trainer_state.json       the Trainer's state; its log_history holds the logged training losses
      summary.json             the run in numbers (written once, when training ends)
      copy_curve.png, induction_history.png, induction_formation.png
      hub_pushes.json          which checkpoints reached the Hub (HubCheckpointCallback)
      grokcopy.lock            the process writing the run, while it runs (grokcopy.training.run_lock)
      checkpoint-N/            Trainer checkpoints, each with copy_eval.json, induction.json, induction.png

`RunFolder(output_dir)` owns every path of a run and its reads and writes (`run.copy_history`,
`run.read_copy_history()`, `run.write_summary(...)`, `run.checkpoint(step)`, ...): no other module
joins a file name of the run to a folder. A sweep folder holds sweep.json and one run folder per
member. Whole files are replaced only once complete and histories are appended a line at a time
(grokcopy.safe_io: a torn last line is skipped when read). Checkpoints are trusted only when whole:
the Trainer writes `checkpoint-N/` file by file (`trainer_state.json` last), so a run killed while
saving leaves a folder that looks like a checkpoint but cannot be resumed from; `checkpoint_problem`
says what is wrong with one (cheaply: it reads safetensors headers, not tensors), and a broken one is
renamed `incomplete-checkpoint-N`. A folder holds one run: a fresh run refuses a folder whose
`run.contents()` is not empty unless it resumes, or moves the old run aside whole (`run.set_aside()`,
to OUTPUT_DIR.previous-N) when asked to overwrite.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from pathlib import Path

from grokcopy.safe_io import (  # noqa: F401 (re-exported: the safe reads and writes of a run's files)
    WEIGHT_FILES,
    append_jsonl,
    atomic_write,
    model_folder_problem,
    read_json,
    read_jsonl,
    read_jsonl_checked,
    safetensors_problem,
    weights_problem,
    writable_problem,
    write_json_atomic,
    write_jsonl,
    write_text_atomic,
)

logger = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"
COPY_HISTORY = "copy_history.jsonl"
INDUCTION_HISTORY = "induction_history.jsonl"
ABLATION_HISTORY = "ablation_history.jsonl"
TRAINER_STATE = "trainer_state.json"
SUMMARY = "summary.json"
COPY_CURVE = "copy_curve.png"
INDUCTION_HISTORY_PLOT = "induction_history.png"
FORMATION_PLOT = "induction_formation.png"
PUSH_RECORD = "hub_pushes.json"
SWEEP_RECORD = "sweep.json"
EXPERIMENT = "experiment.json"  # beside archived members: the sweep file and its fixed report settings
RUN_LOCK = "grokcopy.lock"  # held by the process writing the run (grokcopy.training.run_lock)
ABLATION = "ablation_final.json"  # the final model's head ablation: grokcopy ablate RUN --json RUN/ablation_final.json
CHECKPOINT_COPY_EVAL = "copy_eval.json"  # inside checkpoint-N/
CHECKPOINT_INDUCTION = "induction.json"
CHECKPOINT_INDUCTION_PLOT = "induction.png"
# What goes to the Hub's main branch beside the newest checkpoint: the run's histories and figures.
RUN_FILES = (COPY_HISTORY, INDUCTION_HISTORY, ABLATION_HISTORY, COPY_CURVE, INDUCTION_HISTORY_PLOT, FORMATION_PLOT, SUMMARY)
FIGURES = (COPY_CURVE, INDUCTION_HISTORY_PLOT, FORMATION_PLOT)
HISTORY_FILES = (RUN_CONFIG, COPY_HISTORY, INDUCTION_HISTORY, ABLATION_HISTORY, SUMMARY, ABLATION)  # what an archive keeps (and the log)
RUN_MARKERS = (RUN_CONFIG, COPY_HISTORY, INDUCTION_HISTORY, ABLATION_HISTORY, TRAINER_STATE, SUMMARY, PUSH_RECORD)
TORCH_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class RunFolder:
    """A run's output folder: each file's path, and the run's reads and writes.

        run = RunFolder(training_args.output_dir)
        history = run.read_copy_history()       # [] before the first copy test
        run.write_summary(summary)               # atomically

    Reads of a missing or unreadable file give [] (histories), None (JSON files) or {} (the Hub record)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def file(self, name: str) -> Path:
        """A file of the run by name (a callback's own `history_name`)."""
        return self.root / name

    # ---- the files
    run_config = property(lambda self: self.root / RUN_CONFIG)
    copy_history = property(lambda self: self.root / COPY_HISTORY)
    induction_history = property(lambda self: self.root / INDUCTION_HISTORY)
    ablation_history = property(lambda self: self.root / ABLATION_HISTORY)
    trainer_state = property(lambda self: trainer_state_file(self.root))
    summary = property(lambda self: self.root / SUMMARY)
    copy_curve = property(lambda self: self.root / COPY_CURVE)
    induction_history_plot = property(lambda self: self.root / INDUCTION_HISTORY_PLOT)
    formation_plot = property(lambda self: self.root / FORMATION_PLOT)
    hub_pushes = property(lambda self: self.root / PUSH_RECORD)
    lock = property(lambda self: self.root / RUN_LOCK)
    ablation = property(lambda self: self.root / ABLATION)

    def figures(self) -> list[Path]:
        """The run's figures that exist (copy curve, induction history, formation)."""
        return [self.root / name for name in FIGURES if (self.root / name).is_file()]

    def published_files(self) -> list[Path]:
        """The run-level files that exist of those the Hub's main branch gets (histories, figures, summary)."""
        return [self.root / name for name in RUN_FILES if (self.root / name).is_file()]

    # ---- checkpoints
    def checkpoint(self, step: int) -> Path:
        return checkpoint_dir(self.root, step)

    def checkpoint_copy_eval(self, step: int) -> Path:
        return self.checkpoint(step) / CHECKPOINT_COPY_EVAL

    def checkpoint_induction(self, step: int) -> Path:
        return self.checkpoint(step) / CHECKPOINT_INDUCTION

    def checkpoint_induction_plot(self, step: int) -> Path:
        return self.checkpoint(step) / CHECKPOINT_INDUCTION_PLOT

    def checkpoints(self) -> list[Path]:
        """`checkpoint-N` folders of the run, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if p.is_dir() and checkpoint_step(p) is not None),
                      key=checkpoint_step)

    def last_complete_checkpoint(self, set_aside_broken: bool = False) -> Path | None:
        """The newest complete checkpoint; newer broken ones are logged (and renamed when asked)."""
        for folder in reversed(self.checkpoints()):
            problem = checkpoint_problem(folder)
            if problem is None:
                return folder
            if set_aside_broken:
                moved = set_aside(folder)
                logger.warning("%s is incomplete: %s; moved to %s", folder.name, problem, moved.name)
            else:
                logger.warning("%s is incomplete: %s; skipped", folder.name, problem)
        return None

    # ---- reads
    def read_copy_history(self) -> list[dict]:
        return read_jsonl(self.copy_history)

    def read_induction_history(self) -> list[dict]:
        return read_jsonl(self.induction_history)

    def read_ablation_history(self) -> list[dict]:
        return read_jsonl(self.ablation_history)

    def read_run_config(self):
        return read_json(self.run_config)

    def read_summary(self):
        return read_json(self.summary)

    def read_trainer_state(self):
        return read_json(self.trainer_state)

    def read_ablation(self) -> dict | None:
        """The final model's head ablation (`grokcopy ablate RUN --json RUN/ablation_final.json`), if made."""
        record = read_json(self.ablation)
        return record if isinstance(record, dict) else None

    def read_hub_pushes(self) -> dict:
        """hub_pushes.json: `repo_id` and the `pushed` steps; {} when missing or unreadable."""
        record = read_json(self.hub_pushes)
        return record if isinstance(record, dict) else {}

    def log_history(self) -> list[dict]:
        """The Trainer's log of the run: the first with training losses of trainer_state.json and the
        checkpoints' (newest first: a run still training or killed), else the first log at all; [] without one."""
        logs = []
        for folder in [self.root] + list(reversed(self.checkpoints())):
            state = read_json(trainer_state_file(folder))
            if isinstance(state, dict) and state.get("log_history"):
                if losses_from_log(state["log_history"]):
                    return state["log_history"]
                logs.append(state["log_history"])  # a log without losses: only if no file has one
        return logs[0] if logs else []

    def logged_losses(self, log: list[dict] | None = None,
                      copy_history: list[dict] | None = None) -> list[tuple[int, float]]:
        """The run's logged training losses (from its `log_history`), else the losses the copy history
        recorded; `log` / `copy_history`: what the caller has already read."""
        losses = losses_from_log(self.log_history() if log is None else log)
        if losses:
            return losses
        history = self.read_copy_history() if copy_history is None else copy_history
        return [(r["step"], r["loss"]) for r in history if r.get("loss") is not None]

    def histories(self) -> dict:
        """Everything a report needs of the run: `losses`, `log_history`, `copy_history`, `induction_history`,
        `run_config`, `tokens_per_step` (run_config.json's, else the copy history's), `ablation` (None
        when the final model was not ablated) and `ablation_history` ([] when none ran during training)."""
        copy = self.read_copy_history()
        run_config = self.read_run_config() or {}
        log = self.log_history()
        return {"losses": self.logged_losses(log, copy), "log_history": log, "copy_history": copy,
                "induction_history": self.read_induction_history(), "run_config": run_config,
                "tokens_per_step": run_config.get("tokens_per_step") or history_tokens_per_step(copy),
                "ablation": self.read_ablation(), "ablation_history": self.read_ablation_history()}

    def contents(self) -> list[str]:
        """What in the folder belongs to a run (its files, its checkpoint folders); [] when none does.

        A fresh run into such a folder would mix two runs: `--resume_from_checkpoint last` or
        `grokcopy push` would later pick up the other run's checkpoints."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.name in RUN_MARKERS or checkpoint_step(p) is not None
                      or p.name.startswith("incomplete-checkpoint-"))

    # ---- writes
    def write_run_config(self, record: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_config, record)

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.summary, summary)

    def write_hub_pushes(self, repo_id: str, pushed) -> None:
        """The one record of what reached the Hub: the repo and every pushed step."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.hub_pushes, {"repo_id": repo_id, "pushed": sorted(pushed)})

    def set_aside(self) -> Path:
        """Move the whole run out of the way, to the sibling OUTPUT_DIR.previous-N (nothing is deleted)."""
        n = 1
        while (target := self.root.with_name(f"{self.root.name}.previous-{n}")).exists():
            n += 1
        os.replace(self.root, target)
        return target

    def archive(self, dest: str | Path) -> Path:
        """Copy what `grokcopy report` reads of the run (its histories, run_config.json, summary.json and the
        Trainer's log_history; never weights) to `dest`, e.g. docs/reproduction/<experiment>/<run>."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for name in HISTORY_FILES:
            if (self.root / name).is_file():
                write_text_atomic(dest / name, (self.root / name).read_text())
        state = self.read_trainer_state()
        if isinstance(state, dict):  # the logged losses, without the per-step state of the callbacks
            write_json_atomic(trainer_state_file(dest),
                              {k: state.get(k) for k in ("global_step", "max_steps", "log_history")})
        return dest


def trainer_state_file(folder: str | Path) -> Path:
    """trainer_state.json of a run or of one checkpoint folder (local, or a downloaded Hub revision)."""
    return Path(folder) / TRAINER_STATE


def sweep_record(folder: str | Path) -> Path:
    """sweep.json of a sweep folder: every member, its status and folder."""
    return Path(folder) / SWEEP_RECORD


# ----------------------------------------------------------------------------- a run's histories


def losses_from_log(log_history: list[dict]) -> list[tuple[int, float]]:
    """(step, training loss) of every logged step of a Trainer log_history."""
    return [(r["step"], r["loss"]) for r in log_history if "loss" in r]


def history_tokens_per_step(records: list[dict]) -> float | None:
    """Tokens per optimizer step from a history's latest record with both counts (None without one)."""
    known = [r for r in records if r.get("tokens") and r.get("step")]
    return known[-1]["tokens"] / known[-1]["step"] if known else None


# Kept as functions where many modules call them; each is the RunFolder method of the same job.
def load_histories(run_dir: str | Path) -> dict:
    return RunFolder(run_dir).histories()


def archive_histories(run_dir: str | Path, dest: str | Path) -> Path:
    return RunFolder(run_dir).archive(dest)


def run_analysis_settings(folder: str | Path) -> dict:
    """The copy-test and induction settings a run used (its run_config.json, in this folder or the run
    folder above a checkpoint), so that analysing a run's model measures what the run measured. {} for
    a folder that is no grokcopy run; ValueError, naming the file, for settings no run could have had."""
    folder = Path(folder)
    for candidate in (folder, folder.parent):
        path = RunFolder(candidate).run_config
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


def checkpoint_problem(folder: str | Path) -> str | None:
    """What makes `folder` unusable as a checkpoint, or None when it is complete."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    state = trainer_state_file(folder)
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


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    """output_dir/checkpoint-N, as the Trainer names it."""
    return Path(output_dir) / f"checkpoint-{step}"


def checkpoint_step(folder: Path) -> int | None:
    """N of a `checkpoint-N` folder, None for any other name."""
    match = _CHECKPOINT.match(Path(folder).name)
    return int(match.group(1)) if match else None


def checkpoints(output_dir: str | Path) -> list[Path]:
    """`checkpoint-N` folders of a run, oldest first."""
    return RunFolder(output_dir).checkpoints()


def last_complete_checkpoint(output_dir: str | Path, set_aside_broken: bool = False) -> Path | None:
    return RunFolder(output_dir).last_complete_checkpoint(set_aside_broken)


def set_aside(folder: Path) -> Path:
    """Rename a broken checkpoint so that neither Trainer nor grokcopy picks it up again."""
    target = folder.with_name(f"incomplete-{folder.name}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"incomplete-{folder.name}.{n}")
    os.replace(folder, target)
    return target
