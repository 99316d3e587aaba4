"""The copy test while the model trains, in any Trainer.

`CopyEvalCallback` runs the paper's copy test on its own schedule (Pythia-style log spacing by
default, so the early steps where things change fastest are sampled densely), logs it and appends
it to `copy_history.jsonl` in `output_dir`. On resume, records after the checkpoint's step are
dropped and rerun, so the history has no gap and no duplicate step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from grokcopy.copytest.task import COPY_BATCH_SIZE, CopyTask, CopyTaskConfig, with_settings
from grokcopy.run_dir import COPY_HISTORY, RunFolder, write_json_atomic
from grokcopy.training.callback_support import (
    AnalysisCallback,
    History,
    eval_steps_schedule,
    held_out_blocks,
    log_images,
)

logger = logging.getLogger(__name__)
SEPARATOR_CHECK_ROWS = 2000


def separator_in_training_data(dataset, separator: list[int], rows: int = SEPARATOR_CHECK_ROWS) -> bool | None:
    """Whether the copy test's separator occurs in the first `rows` training rows' `input_ids` (None: cannot
    tell, e.g. a streamed dataset). Why: a model that never saw the separator meets its untrained embedding in
    every test context, and its score then depends on that random vector (seed by seed), not on copying."""
    if dataset is None or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        return None
    try:
        count = min(rows, len(dataset))
        if hasattr(dataset, "column_names"):  # a datasets.Dataset: one slice, not `count` lookups
            ids = dataset[:count]["input_ids"]
        else:
            ids = [dataset[i]["input_ids"] for i in range(count)]
    except (KeyError, TypeError, IndexError):
        return None
    return any(separator[0] in list(row) for row in ids)


@dataclass(eq=False)
@with_settings(CopyTaskConfig, after="stop_at")
class CopyEvalCallback(AnalysisCallback):
    """Copy test every `every` steps (plus log-spaced early steps), into the log and a JSONL history.

        Trainer(model, args, train_dataset=blocks, processing_class=tokenizer, callbacks=[CopyEvalCallback()])

    Every argument has a default. The test is drawn at on_train_begin from the Trainer's tokenizer
    (`processing_class`) and fitted to the model's context, with the paper's shape: `num_samples`
    samples of `num_sequences` random sequences, `prefix_length` + `suffix_length` symbols each,
    queries every `query_stride` sequences; or pass a built `copy_task`. These fields are
    `CopyTaskConfig`'s (grokcopy.copytest.task), with its defaults and help.
    Each record has the step, tokens seen (`block_size` x steps x batch, or the Trainer's own count),
    the training loss (CopyTrainer: that step's; another Trainer: its latest logged loss), exact match,
    token accuracy per query position and, with an eval set, the held-out loss split into copyable
    tokens and the rest (`copyable_loss_blocks` blocks; CopyTrainer's eval_dataset, else the eval
    dataloader's once the Trainer has evaluated). `trainer` is optional (see callback_support).
    """

    trainer: Any = field(default=None, repr=False)
    schedule: str = "log"
    every: int = 500
    history_name: str = COPY_HISTORY
    stop_at: float | None = None  # stop training once exact match reaches this (a sweep's stop rule)
    # here: CopyTaskConfig's fields (num_samples, num_sequences, ..., seed), its defaults (with_settings)
    batch_size: int = COPY_BATCH_SIZE
    copy_task: CopyTask | None = field(default=None, repr=False)
    copyable_loss_blocks: int = 64
    block_size: int | None = None
    last_step: int | None = field(default=None, init=False)
    latest: dict | None = field(default=None, init=False)

    def task_config(self) -> CopyTaskConfig:
        return CopyTaskConfig.from_settings(self)

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin(args, state, **kwargs)
        if self.copy_task is None:
            self.copy_task = self.build_task(kwargs)
        self.warn_if_separator_unseen(state, kwargs)
        self.history = History(args.output_dir, self.history_name)
        steps = self.history.resume_at(state.global_step, state.is_world_process_zero)
        self.last_step = max(steps) if steps else None
        if state.global_step == 0 and 0 not in steps and eval_steps_schedule(0, self.schedule, self.every):
            self._evaluate(args, state, kwargs)
        elif state.global_step > 0 and state.global_step not in steps:
            # Resumed from a checkpoint whose save was cut short before its copy test: measure it now,
            # or the history keeps a permanent gap at the step every later record builds on.
            self.on_save(args, state, control, **kwargs)

    def build_task(self, kwargs) -> CopyTask:
        return self.draw_copy_task(kwargs, self.task_config())

    def warn_if_separator_unseen(self, state, kwargs) -> None:
        from grokcopy.copytest.task import separator_ids

        tokenizer = self.tokenizer_of(kwargs)
        dataset = getattr(kwargs.get("train_dataloader"), "dataset", None)
        if tokenizer is None or not state.is_world_process_zero or state.global_step > 0:
            return
        text = self.copy_task.config.separator  # built (or given) just before, in on_train_begin
        separator = separator_ids(tokenizer, text)
        if separator_in_training_data(dataset, separator) is False:
            logger.warning("copy test: its separator (%r, token %d) does not occur in the first %d training rows; the "
                           "model never learns its embedding, and the test then measures how it reacts to an unseen "
                           "token rather than whether it copies (measured: docs/reproduction/demo-seeds/PROTOCOL.md). "
                           "Train on text that holds it, or set copy_separator to a token the model trains on.",
                           text, separator[0], SEPARATOR_CHECK_ROWS)

    def on_step_end(self, args, state, control, **kwargs):
        if eval_steps_schedule(state.global_step, self.schedule, self.every):
            record = self._evaluate(args, state, kwargs)
            if self.stop_at is not None and record is not None and record["exact_match"] >= self.stop_at:
                logger.info("copy exact match %.3f >= %.3f at step %d: stopping (copy_stop_exact_match)",
                            record["exact_match"], self.stop_at, state.global_step)
                control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.last_step != state.global_step:
            self._evaluate(args, state, kwargs)  # the final model is always measured

    def on_save(self, args, state, control, **kwargs):
        """The checkpoint carries the copy result of its own step (measured now if not yet)."""
        fresh = self.latest is not None and self.last_step == state.global_step
        record = self.latest if fresh else self._evaluate(args, state, kwargs)
        run, step = RunFolder(args.output_dir), state.global_step
        if state.is_world_process_zero and run.checkpoint(step).is_dir() and record is not None:
            write_json_atomic(run.checkpoint_copy_eval(step), record)

    def copyable_loss(self, args, model, kwargs) -> dict | None:
        """CopyTrainer's own split; else the split on the first eval blocks, once an eval set is known."""
        if hasattr(self.trainer, "copyable_loss"):
            return self.trainer.copyable_loss()
        if getattr(self, "held_out", None) is None:
            dataset = getattr(self.trainer, "eval_dataset", None)
            if dataset is None:
                dataset = getattr(kwargs.get("eval_dataloader"), "dataset", None)
            self.held_out = held_out_blocks(dataset, self.copyable_loss_blocks)
        if self.held_out is None:
            return None
        from grokcopy.analysis.copyable_loss import copyable_loss_split

        return copyable_loss_split(model, self.held_out, batch_size=args.per_device_eval_batch_size)

    def _evaluate(self, args, state, kwargs) -> dict | None:
        model = self.model_of(kwargs)
        if self.stopped(model, state):
            return None
        from grokcopy.copytest.scoring import score_copy_task

        start = time.perf_counter()
        result = score_copy_task(model, self.copy_task, batch_size=self.batch_size)
        record = {
            "step": state.global_step,
            "tokens": self.tokens(args, state),
            "loss": self.step_loss(state),
            "exact_match": result["exact_match"],
            "token_accuracy": result["token_accuracy"],
            "per_position": result["per_position"],
            "num_samples": result["num_samples"],
            "num_sequences": result["num_sequences"],
            "copy_shape": self.copy_task.shape,
            "epoch": state.epoch,
        }
        split = self.copyable_loss(args, model, kwargs)
        record.update(split or {})
        record["seconds"] = round(time.perf_counter() - start, 4)
        self.last_step, self.latest = state.global_step, record
        if state.is_world_process_zero:
            self.history.append(record)
        # eval_: held-out measurements, in the namespace evaluate() uses (TensorBoard/W&B: eval/copy_exact_match)
        logged = {"eval_copy_exact_match": record["exact_match"], "eval_copy_token_accuracy": record["token_accuracy"]}
        logged.update({f"eval_{k}": v for k, v in (split or {}).items() if k != "copyable_share" and v is not None})
        self.log(state, logged)
        log_images(self.trainer, state, {"copy/curve": lambda: self._curve(state)})
        return record

    def _curve(self, state):
        from grokcopy.analysis.plots import copy_curve_figure
        from grokcopy.run_dir import losses_from_log, read_jsonl

        return copy_curve_figure(read_jsonl(self.history.path), losses_from_log(state.log_history))
