"""Trainer callbacks that measure the model while it trains, and the one-line way to add them.

`CopyEvalCallback` (training/copy_callback.py) runs the copy test on its own schedule;
`InductionHeadCallback` (training/induction_callback.py) analyses induction heads at every
checkpoint (and optionally on its own schedule). Both run in any `transformers.Trainer` (TRL's
SFTTrainer included) with no required argument, and append to a JSONL history in `output_dir`;
`attach_analyses(trainer)` adds them with the trainer, so their metrics reach every report_to
integration through `trainer.log()`. `DivergenceGuard` works in any Trainer (per step in CopyTrainer, at logging steps elsewhere);
`LogSpacedSaves` is CopyTrainer's.
The analyses themselves never import the trainer.
"""

from __future__ import annotations

import contextlib

import logging
import math

from transformers import TrainerCallback

from grokcopy.run_dir import RunFolder, trainer_state_file
from grokcopy.training.callback_support import (  # noqa: F401 (re-exported)
    AnalysisCallback,
    History,
    eval_steps_schedule,
    log_metrics,
)
from grokcopy.training.ablation_callback import HeadAblationCallback
from grokcopy.training.copy_callback import CopyEvalCallback
from grokcopy.training.induction_callback import InductionHeadCallback

logger = logging.getLogger(__name__)


def attach_analyses(trainer, copy: bool | dict = True, induction: bool | dict = True,
                    ablation: bool | dict = False) -> list[TrainerCallback]:
    """Add the copy test and the induction analysis to any Trainer, in one line:

        attach_analyses(trainer, copy={"every": 100}, induction={"every": 100})

    `copy` / `induction` / `ablation`: False to leave one out, True for its defaults, or a dict of its arguments
    (CopyEvalCallback / InductionHeadCallback / HeadAblationCallback; the ablation is off unless asked: it
    costs about 1 + heads + layers copy tests on its samples). The callbacks get the trainer (as TRL's callbacks
    do), so their metrics go through `trainer.log()` to log_history and every report_to integration
    at their own step, and the copy test's held-out loss split reads `trainer.eval_dataset`.
    Returns the callbacks added."""
    added = []
    for wanted, kind in ((copy, CopyEvalCallback), (induction, InductionHeadCallback), (ablation, HeadAblationCallback)):
        if wanted is False or wanted is None:
            continue
        if any(isinstance(cb, kind) for cb in trainer.callback_handler.callbacks):
            raise ValueError(f"attach_analyses: the trainer already has a {kind.__name__} (two would write one history "
                             "twice; CopyTrainer adds its own from its arguments)")
        callback = kind(trainer, **(wanted if isinstance(wanted, dict) else {}))
        trainer.add_callback(callback)
        added.append(callback)
    return added


class DivergenceGuard(TrainerCallback):
    """Stops training at the first NaN/inf loss, before anything of it is saved or evaluated.

    In CopyTrainer, losses stay on the device and are checked only where the Trainer is about to
    log, evaluate, save or stop (one sync then, none per step); a diverged step turns those off, so
    the last checkpoint on disk is a good one, and CopyTrainer.train() then raises
    TrainingDivergedError. In any other Trainer (`DivergenceGuard()`), it reads what the Trainer logs
    at each logging step, `loss` and `grad_norm` (`logging_nan_inf_filter` hides a NaN loss, not the
    gradient norm): it stops there, before that step's evaluation and save, and `diverged_at` says
    where; train() returns normally, and analyses scheduled between the divergence and that log ran.
    """

    def __init__(self, trainer=None):
        self.trainer = trainer
        self.diverged_at: int | None = None

    @property
    def checks_each_step(self) -> bool:
        return hasattr(self.trainer, "first_nonfinite_step")  # CopyTrainer keeps every step's loss

    def on_step_end(self, args, state, control, **kwargs):
        if not self.checks_each_step:
            return
        if control.should_log or control.should_evaluate or control.should_save or control.should_training_stop:
            self._check(control)

    def on_train_end(self, args, state, control, **kwargs):
        if self.checks_each_step:
            self._check(control)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.checks_each_step or self.diverged_at is not None:
            return
        bad = [key for key in ("loss", "grad_norm") if key in (logs or {}) and not math.isfinite(float(logs[key]))]
        if bad:
            logger.error("training %s is not finite at step %d: stopping, nothing saved from here on",
                         " and ".join(bad), state.global_step)
            self.diverged_at = state.global_step
            self._stop(control)

    def _check(self, control):
        if self.trainer.diverged_at is None:
            step = self.trainer.first_nonfinite_step()
            if step is not None:
                logger.error("training loss is not finite at step %d: stopping, nothing saved from here on", step)
                self.trainer.diverged_at = step
        self.diverged_at = self.trainer.diverged_at
        if self.diverged_at is not None:
            self._stop(control)

    @staticmethod
    def _stop(control):
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
        folder = RunFolder(args.output_dir).checkpoint(0)
        if state.global_step != 0 or folder.exists():
            return
        self.trainer.save_model(str(folder))
        if args.should_save:
            state.save_to_json(str(trainer_state_file(folder)))
        self.trainer.callback_handler.on_save(args, state, control)

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if args.save_strategy == "steps" and step < args.save_steps and eval_steps_schedule(step, "log", args.save_steps):
            control.should_save = True


PREEMPTION_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")  # Ctrl-C; SLURM / Kubernetes; SLURM's --signal


@contextlib.contextmanager
def preemption_handlers(handler):
    """`handler` for Ctrl-C, SIGTERM and SIGUSR1 inside the block, the previous handlers after it (signal
    handlers can only be set from the main thread: elsewhere this does nothing)."""
    import signal
    import threading

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in PREEMPTION_SIGNALS:
            if hasattr(signal, name):
                previous[name] = signal.signal(getattr(signal, name), handler)
    try:
        yield
    finally:
        for name, old in previous.items():
            signal.signal(getattr(signal, name), old)


class HandlesPreemption:
    """`with obj:` routes Ctrl-C, SIGTERM and SIGUSR1 to `obj._handle(signum, frame)` for the block."""

    def __enter__(self):
        self._handlers = preemption_handlers(self._handle)
        self._handlers.__enter__()
        return self

    def __exit__(self, *exc):
        self._handlers.__exit__(*exc)
        return False


class StopOnInterrupt(HandlesPreemption, TrainerCallback):
    """Ctrl-C, SIGTERM or SIGUSR1: finish the optimizer step under way, save a checkpoint there, stop.

    SIGTERM is what SLURM and Kubernetes send before they kill a job (SLURM's `--signal` often SIGUSR1
    first): the steps since the last save would be lost, so the stop writes a checkpoint at the step
    boundary, with its analyses, whatever the save schedule. A second signal stops at once.
    Why not let KeyboardInterrupt fly: Python raises it wherever the main thread happens to be, and when
    that is a finalizer (`__del__`, a weakref callback) the exception is printed and swallowed, and
    training goes on as if nothing happened. A handler that only sets a flag cannot be lost; the step
    boundary is also a clean place to stop (no half-written history). Use it as a context manager
    around `trainer.train()` in the main thread; `requested` names the signal that stopped training.
    """

    def __init__(self):
        self.requested: str | None = None

    def _handle(self, signum, frame):
        import signal

        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        logger.warning("%s: saving a checkpoint after this optimizer step, then stopping (again to stop at once)",
                       self.requested)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_training_stop = True
            control.should_save = True
