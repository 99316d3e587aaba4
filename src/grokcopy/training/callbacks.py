"""Trainer callbacks that measure the model while it trains, and the one-line way to add them.

`CopyEvalCallback` (training/copy_callback.py) runs the copy test on its own schedule;
`InductionHeadCallback` (training/induction_callback.py) analyses induction heads at every
checkpoint (and optionally on its own schedule). Both run in any `transformers.Trainer` (TRL's
SFTTrainer included) with no required argument, and append to a JSONL history in `output_dir`;
`attach_analyses(trainer)` adds them with the trainer, so their metrics reach every report_to
integration through `trainer.log()`. `DivergenceGuard` and `LogSpacedSaves` are CopyTrainer's.
The analyses themselves never import the trainer.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

from grokcopy.run_dir import checkpoint_dir
from grokcopy.training.callback_support import (  # noqa: F401 (re-exported)
    AnalysisCallback,
    History,
    eval_steps_schedule,
    log_metrics,
)
from grokcopy.training.copy_callback import CopyEvalCallback
from grokcopy.training.induction_callback import InductionHeadCallback

logger = logging.getLogger(__name__)


def attach_analyses(trainer, copy: bool | dict = True, induction: bool | dict = True) -> list[TrainerCallback]:
    """Add the copy test and the induction analysis to any Trainer, in one line:

        attach_analyses(trainer, copy={"every": 100}, induction={"every": 100})

    `copy` / `induction`: False to leave one out, True for its defaults, or a dict of its arguments
    (CopyEvalCallback / InductionHeadCallback). The callbacks get the trainer (as TRL's callbacks
    do), so their metrics go through `trainer.log()` to log_history and every report_to integration
    at their own step, and the copy test's held-out loss split reads `trainer.eval_dataset`.
    Returns the callbacks added."""
    added = []
    for wanted, kind in ((copy, CopyEvalCallback), (induction, InductionHeadCallback)):
        if wanted is False or wanted is None:
            continue
        callback = kind(trainer, **(wanted if isinstance(wanted, dict) else {}))
        trainer.add_callback(callback)
        added.append(callback)
    return added


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
