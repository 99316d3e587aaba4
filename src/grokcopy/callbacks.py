"""Trainer callbacks that measure the model while it trains.

`CopyEvalCallback` runs the copy test on its own schedule (Pythia-style log spacing by default,
so the early steps where things change fastest are sampled densely), logs it through the
Trainer's log (TensorBoard, W&B, ... see it) and appends it to `OUTPUT_DIR/copy_history.jsonl`.
On resume, lines after the checkpoint's step are dropped and rerun, so the history has no gap
and no duplicate step.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

COPY_HISTORY = "copy_history.jsonl"


def eval_steps_schedule(step: int, schedule: str, every: int) -> bool:
    """Whether `step` is scheduled: log = 0, 1, 2, 4, ... below `every`, then multiples of `every`."""
    if schedule == "none":
        return False
    if step % every == 0:
        return True
    return schedule == "log" and step < every and (step & (step - 1)) == 0


def read_jsonl(path: Path) -> list[dict]:
    """Records of a history file; a torn last line (killed mid-write) is ignored."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: skipping an unreadable line", path)
    return records


def rewrite_jsonl(path: Path, records: list[dict]) -> None:
    """Replace a history atomically (temporary file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(tmp, path)


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class CopyEvalCallback(TrainerCallback):
    """Copy test every `every` steps (plus log-spaced early steps), into the log and a JSONL history.

    `trainer` is the CopyTrainer that owns the model and the copy task (the callback only reads
    from it: `copy_evaluate()`, `tokens_seen()`, `last_step_loss`, `log()`).
    """

    def __init__(self, trainer, schedule: str = "log", every: int = 500, history_name: str = COPY_HISTORY):
        self.trainer = trainer
        self.schedule = schedule
        self.every = every
        self.history_name = history_name
        self.last_step = None

    def history_path(self, args) -> Path:
        return Path(args.output_dir) / self.history_name

    def on_train_begin(self, args, state, control, **kwargs):
        path = self.history_path(args)
        if state.is_world_process_zero:
            records = read_jsonl(path)
            kept = [r for r in records if r.get("step", -1) <= state.global_step]
            if len(kept) != len(records) or (path.is_file() and kept != records):
                logger.info("copy history: dropping %d records after step %d (resumed run)",
                            len(records) - len(kept), state.global_step)
            if records:
                rewrite_jsonl(path, kept)
        steps = {r["step"] for r in read_jsonl(path)}
        self.last_step = max(steps) if steps else None
        if state.global_step == 0 and 0 not in steps and eval_steps_schedule(0, self.schedule, self.every):
            self._evaluate(args, state)

    def on_step_end(self, args, state, control, **kwargs):
        if eval_steps_schedule(state.global_step, self.schedule, self.every):
            self._evaluate(args, state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.last_step != state.global_step:
            self._evaluate(args, state)  # the final model is always measured

    def _evaluate(self, args, state):
        start = time.perf_counter()
        result = self.trainer.copy_evaluate()
        record = {
            "step": state.global_step,
            "tokens": self.trainer.tokens_seen(),
            "loss": self.trainer.last_step_loss,
            "exact_match": result["exact_match"],
            "token_accuracy": result["token_accuracy"],
            "per_position": result["per_position"],
            "num_samples": result["num_samples"],
            "num_sequences": result["num_sequences"],
            "epoch": state.epoch,
            "seconds": round(time.perf_counter() - start, 4),
        }
        self.last_step = state.global_step
        if state.is_world_process_zero:
            path = self.history_path(args)
            path.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(path, record)
        self.trainer.log({"copy_exact_match": record["exact_match"],
                          "copy_token_accuracy": record["token_accuracy"]})
