"""Trainer callbacks that measure the model while it trains.

`CopyEvalCallback` runs the copy test on its own schedule (Pythia-style log spacing by default,
so the early steps where things change fastest are sampled densely); `InductionHeadCallback`
analyses induction heads at every checkpoint (and optionally on its own schedule). Both log
through the Trainer's log (TensorBoard, W&B, ... see it) and append to a JSONL history in
`output_dir`. On resume, records after the checkpoint's step are dropped and rerun, so a history
has no gap and no duplicate step. The callbacks read the model through the trainer that owns
them; the analyses themselves never import the trainer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from grokcopy.run_dir import (
    CHECKPOINT_COPY_EVAL,
    CHECKPOINT_INDUCTION,
    CHECKPOINT_INDUCTION_PLOT,
    COPY_HISTORY,
    INDUCTION_HISTORY,
    append_jsonl,
    checkpoint_dir,
    read_jsonl_checked,
    write_json_atomic,
    write_jsonl,
)

logger = logging.getLogger(__name__)

def eval_steps_schedule(step: int, schedule: str, every: int) -> bool:
    """Whether `step` is scheduled: log = 0, 1, 2, 4, ... below `every`, then multiples of `every`."""
    if schedule == "none":
        return False
    if step % every == 0:
        return True
    return schedule == "log" and step < every and (step & (step - 1)) == 0


def log_metrics(trainer, metrics: dict) -> None:
    """`trainer.log(metrics)` that leaves the Trainer's own logging as scheduled.

    Trainer.log() goes through CallbackHandler.on_log, which clears `control.should_log`; called from
    on_step_end it would cancel the Trainer's loss log of that very step (no `loss` in log_history,
    holes in TensorBoard/W&B exactly where the analyses measure). The flag is put back as it was.
    """
    control = trainer.control
    should_log = control.should_log
    trainer.log(metrics)
    control.should_log = trainer.control.should_log = should_log


class History:
    """A run's JSONL history that follows the Trainer's step through resumes."""

    def __init__(self, output_dir: str, name: str):
        self.path = Path(output_dir) / name

    def resume_at(self, step: int, is_main: bool) -> set[int]:
        """Drop records after `step` (they belong to a lost future); return the steps kept.

        A run starting at step 0 is a new run: an old history in its output_dir is replaced. A file
        left torn by a crash (a partial last line) is rewritten too, or the next append would be
        glued onto the fragment and lost.
        """
        records, whole = read_jsonl_checked(self.path)
        kept = [r for r in records if r.get("step", -1) <= step] if step > 0 else []
        if is_main and (kept != records or not whole):
            logger.info("%s: keeping %d of %d records (resumed at step %d)%s", self.path.name, len(kept),
                        len(records), step, "" if whole else "; a torn line dropped")
            write_jsonl(kept, self.path)
        return {r["step"] for r in kept}

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, record)


class DivergenceGuard(TrainerCallback):
    """Stops training at the first NaN/inf loss, before anything of it is saved or evaluated.

    Losses stay on the device and are checked only where the Trainer is about to log, evaluate,
    save or stop (one sync then, none per step); a diverged step turns those off, so the last
    checkpoint on disk is a good one. CopyTrainer.train() then raises TrainingDivergedError.
    """

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_log or control.should_evaluate or control.should_save or control.should_training_stop:
            self._check(control)

    def on_train_end(self, args, state, control, **kwargs):
        self._check(control)

    def _check(self, control):
        if self.trainer.diverged_at is None:
            step = self.trainer.first_nonfinite_step()
            if step is not None:
                logger.error("training loss is not finite at step %d: stopping, nothing saved from here on", step)
                self.trainer.diverged_at = step
        if self.trainer.diverged_at is not None:
            control.should_save = control.should_evaluate = False
            control.should_training_stop = True


class LogSpacedSaves(TrainerCallback):
    """`save_schedule log`: checkpoints at steps 0, 1, 2, 4, ... below `save_steps` as well (Pythia's
    grid), so a pushed series holds the untrained model and the early dynamics.

    Step 0 is saved before the first update, in the checkpoint layout the Trainer uses, and announced
    with the Trainer's own `on_save` event, so the other callbacks add their analyses and the Hub push."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        folder = checkpoint_dir(args.output_dir, 0)
        if state.global_step != 0 or folder.exists():
            return
        self.trainer.save_model(str(folder))
        if args.should_save:
            state.save_to_json(str(folder / "trainer_state.json"))
        self.trainer.callback_handler.on_save(args, state, control)

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if args.save_strategy == "steps" and step < args.save_steps and eval_steps_schedule(step, "log", args.save_steps):
            control.should_save = True


@dataclass(eq=False)
class CopyEvalCallback(TrainerCallback):
    """Copy test every `every` steps (plus log-spaced early steps), into the log and a JSONL history.

    `trainer` is the CopyTrainer that owns the model and the copy task (the callback only reads
    from it: `copy_evaluate()`, `tokens_seen()`, `last_step_loss`, `log()`).
    """

    trainer: Any = field(repr=False)
    schedule: str = "log"
    every: int = 500
    history_name: str = COPY_HISTORY
    stop_at: float | None = None  # stop training once exact match reaches this (a sweep's stop rule)
    last_step: int | None = field(default=None, init=False)
    latest: dict | None = field(default=None, init=False)

    def on_train_begin(self, args, state, control, **kwargs):
        self.history = History(args.output_dir, self.history_name)
        steps = self.history.resume_at(state.global_step, state.is_world_process_zero)
        self.last_step = max(steps) if steps else None
        if state.global_step == 0 and 0 not in steps and eval_steps_schedule(0, self.schedule, self.every):
            self._evaluate(state)

    def on_step_end(self, args, state, control, **kwargs):
        if eval_steps_schedule(state.global_step, self.schedule, self.every):
            record = self._evaluate(state)
            if self.stop_at is not None and record is not None and record["exact_match"] >= self.stop_at:
                logger.info("copy exact match %.3f >= %.3f at step %d: stopping (copy_stop_exact_match)",
                            record["exact_match"], self.stop_at, state.global_step)
                control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.last_step != state.global_step:
            self._evaluate(state)  # the final model is always measured

    def on_save(self, args, state, control, **kwargs):
        """The checkpoint carries the copy result of its own step (measured now if not yet)."""
        fresh = self.latest is not None and self.last_step == state.global_step
        record = self.latest if fresh else self._evaluate(state)
        checkpoint = checkpoint_dir(args.output_dir, state.global_step)
        if state.is_world_process_zero and checkpoint.is_dir() and record is not None:
            write_json_atomic(checkpoint / CHECKPOINT_COPY_EVAL, record)

    def _evaluate(self, state) -> dict | None:
        if getattr(self.trainer, "diverged_at", None) is not None:
            return None
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
        }
        split = self.trainer.copyable_loss() if hasattr(self.trainer, "copyable_loss") else None
        record.update(split or {})
        record["seconds"] = round(time.perf_counter() - start, 4)
        self.last_step, self.latest = state.global_step, record
        if state.is_world_process_zero:
            self.history.append(record)
        logged = {"copy_exact_match": record["exact_match"], "copy_token_accuracy": record["token_accuracy"]}
        logged.update({k: v for k, v in (split or {}).items() if k != "copyable_share" and v is not None})
        log_metrics(self.trainer, logged)
        return record


@dataclass(eq=False)
class InductionHeadCallback(TrainerCallback):
    """Induction-head analysis at every checkpoint save, and every `every` steps when set.

    Each checkpoint folder gets `induction.json` and `induction.png` (I per layer x head), so a
    checkpoint carries its own analysis; `induction_history.jsonl` gets one record per analysed
    step; the Trainer's log gets the best head's I per layer (`induction_max_layer{L}`).
    An architecture the analysis does not know is reported once and skipped: training and the
    copy test go on.
    """

    trainer: Any = field(repr=False)
    every: int | None = None
    seq_len: int = 100
    batch_size: int = 8
    icl_input_ids: Any = field(default=None, repr=False)
    history_name: str = INDUCTION_HISTORY
    disabled: bool = field(default=False, init=False)
    _latest: tuple | None = field(default=None, init=False)  # (step, record) of the latest analysis, reused by a save

    def on_train_begin(self, args, state, control, **kwargs):
        self.history = History(args.output_dir, self.history_name)
        self.done = self.history.resume_at(state.global_step, state.is_world_process_zero)
        if self.every and state.global_step == 0 and 0 not in self.done:
            self._analyse(state)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and eval_steps_schedule(state.global_step, "log", self.every):
            self._analyse(state)

    def on_save(self, args, state, control, **kwargs):
        record = self._analyse(state)
        if record is None or not state.is_world_process_zero:
            return
        from grokcopy.analysis.plots import plot_induction_heatmap

        checkpoint = checkpoint_dir(args.output_dir, state.global_step)
        if checkpoint.is_dir():
            write_json_atomic(checkpoint / CHECKPOINT_INDUCTION, record)
            plot_induction_heatmap(record, checkpoint / CHECKPOINT_INDUCTION_PLOT)

    def _analyse(self, state) -> dict | None:
        if self.disabled or getattr(self.trainer, "diverged_at", None) is not None:
            return None
        if self._latest is not None and self._latest[0] == state.global_step:
            return self._latest[1]
        from grokcopy.analysis.induction import UnsupportedArchitectureError, analyze_induction

        start = time.perf_counter()
        try:
            scores = analyze_induction(self.trainer.model, seq_len=self.seq_len, batch_size=self.batch_size,
                                       icl_input_ids=self.icl_input_ids,
                                       vocab_size=getattr(self.trainer, "analysis_vocab_size", None))
        except UnsupportedArchitectureError as err:
            logger.warning("induction analysis off for this run: %s", err)
            self.disabled = True
            return None
        record = {"step": state.global_step, "tokens": self.trainer.tokens_seen(), **scores.to_dict(),
                  "seconds": round(time.perf_counter() - start, 4)}
        self._latest = (state.global_step, record)
        if state.is_world_process_zero and state.global_step not in self.done:
            self.history.append(record)
        self.done.add(state.global_step)
        log_metrics(self.trainer, {f"induction_max_layer{layer}": max(row)
                                   for layer, row in enumerate(record["induction"])})
        return record

