"""What the analysis callbacks share: their schedule, their history file, and where each input comes from.

The callbacks run in any `transformers.Trainer`. Everything they need comes from the Trainer's
events: the model (`model`), the tokenizer (`processing_class`), the step and tokens (`state`,
`args`), the training rows (`train_dataloader`). A trainer reference is optional: `CopyTrainer`
passes itself (its per-step loss and held-out batch are then used), and so does
`grokcopy.attach_analyses(trainer)`, which lets the metrics go through `trainer.log()` to every
report_to integration. Without one, the metrics are added to `state.log_history` at their own step
and to the Trainer's next log entry (so only the callbacks listed after this one see them there).
"""

from __future__ import annotations

import logging
import math
import torch
from transformers import TrainerCallback

from grokcopy.devices import gather_across_processes
from grokcopy.run_dir import RunFolder, append_jsonl, read_jsonl_checked, write_jsonl

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


def image_loggers(trainer) -> list:
    """The `report_to` integrations of `trainer` that take images: TensorBoard's writer (others get scalars)."""
    callbacks = getattr(getattr(trainer, "callback_handler", None), "callbacks", None) or []
    return [c.tb_writer for c in callbacks if type(c).__name__ == "TensorBoardCallback"
            and getattr(c, "tb_writer", None) is not None]


def log_images(trainer, state, make_figures: dict) -> None:
    """Draw each figure (name -> a function returning a matplotlib figure) and add it to every image-taking
    integration at this step; nothing is drawn when none is there (drawing costs ~0.1 s a figure)."""
    writers = image_loggers(trainer) if state.is_world_process_zero else []
    if not writers:
        return
    from grokcopy.analysis.plots import figure_image

    for name, make in make_figures.items():
        image = figure_image(make())
        for writer in writers:
            writer.add_image(name, image, global_step=state.global_step, dataformats="HWC")
            writer.flush()


def tokens_per_step(args, block_size: int | None) -> int | None:
    """Tokens of one optimizer step: per-device batch x accumulation x processes x block size."""
    if block_size is None:
        return None
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size * block_size


def tokens_seen(state, args, block_size: int | None) -> int | None:
    """The Trainer's own count when it keeps one (`include_num_input_tokens_seen`), else steps x tokens per step."""
    if state.num_input_tokens_seen:
        return int(state.num_input_tokens_seen)
    per_step = tokens_per_step(args, block_size)
    return None if per_step is None else state.global_step * per_step


def row_length(dataset) -> int | None:
    """Tokens in the first row of an indexable dataset (packed blocks all have it); None when unknown."""
    try:
        return len(dataset[0]["input_ids"])
    except (TypeError, KeyError, IndexError, NotImplementedError):
        return None


def held_out_blocks(dataset, n: int) -> torch.Tensor | None:
    """The first `n` rows of an eval set of equal-length blocks as a LongTensor (None when it cannot be)."""
    if dataset is None or n <= 0:
        return None
    try:
        rows = dataset.select(range(min(n, len(dataset))))["input_ids"]
        return torch.tensor(rows, dtype=torch.long) if rows else None
    except (AttributeError, TypeError, KeyError, ValueError):
        return None  # not a datasets.Dataset, or rows of different lengths (unpacked data)


def latest_logged_loss(state) -> float | None:
    """The Trainer's latest logged training loss (the mean over its logging window), or None."""
    for entry in reversed(state.log_history):
        if "loss" in entry:
            return entry["loss"]
    return None


def weights_finite(model) -> bool:
    """Whether every weight is finite, on every process (one sync; a collective under torch.distributed).

    A diverged model is never analysed: its numbers mean nothing, and NaN attention breaks the EP
    eigenvalues. CopyTrainer's DivergenceGuard stops at the step; elsewhere the guard only sees it
    at the next logging step, and analyses scheduled in between find out here."""
    flags = [torch.isfinite(getattr(p, "to_local", p.detach)()).all() for p in model.parameters()]
    ok = bool(torch.stack([f.cpu() for f in flags]).all()) if flags else True
    return all(gather_across_processes([ok]))


class History:
    """A run's JSONL history that follows the Trainer's step through resumes."""

    def __init__(self, output_dir: str, name: str):
        self.path = RunFolder(output_dir).file(name)

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


class AnalysisCallback(TrainerCallback):
    """The inputs of an analysis callback, with or without a trainer reference.

    Subclasses are dataclasses with the fields `trainer` (optional) and `block_size` (optional: the
    tokens per training row, for the token count; inferred from the training set's first row)."""

    trainer = None
    block_size: int | None = None

    def begin(self, args, state, **kwargs) -> None:
        """Resolve what the run provides, once, at on_train_begin."""
        self.pending_logs: dict = {}
        self.resolved_block_size = (self.block_size or getattr(self.trainer, "block_size", None)
                                    or row_length(getattr(kwargs.get("train_dataloader"), "dataset", None)))

    def model_of(self, kwargs):
        return kwargs.get("model") if kwargs.get("model") is not None else self.trainer.model

    @staticmethod
    def tokenizer_of(kwargs):
        """The Trainer's tokenizer (`processing_class`; a processor wraps its tokenizer), or None."""
        tokenizer = kwargs.get("processing_class")
        return getattr(tokenizer, "tokenizer", tokenizer)

    def draw_copy_task(self, kwargs, config):
        """A copy test drawn from the Trainer's tokenizer with `config` (a CopyTaskConfig), fitted to the model's
        context; a Trainer without a tokenizer is refused in one line naming this callback."""
        from grokcopy.analysis.architectures import model_context_length
        from grokcopy.copytest.task import CopyTaskError, build_copy_task

        name = type(self).__name__
        tokenizer = self.tokenizer_of(kwargs)
        if tokenizer is None:
            raise CopyTaskError(f"{name}: the Trainer has no tokenizer to draw the copy test with: pass "
                                "processing_class=tokenizer to the Trainer, or copy_task= to the callback")
        return build_copy_task(tokenizer, config, max_length=model_context_length(self.model_of(kwargs)),
                               prefix=f"{name} ")

    def stopped(self, model, state) -> bool:
        """The trainer's DivergenceGuard saw a non-finite loss, or the weights are not finite: nothing is measured."""
        if getattr(self.trainer, "diverged_at", None) is not None:
            return True
        if weights_finite(model):
            return False
        logger.error("%s: the weights are not finite at step %d (training diverged): not analysed",
                     type(self).__name__, state.global_step)
        return True

    def tokens(self, args, state) -> int | None:
        return tokens_seen(state, args, self.resolved_block_size)

    def step_loss(self, state) -> float | None:
        """CopyTrainer's loss of this very step; with another Trainer its latest logged loss."""
        if hasattr(self.trainer, "last_step_loss"):
            return self.trainer.last_step_loss
        loss = latest_logged_loss(state)
        return None if loss is None or not math.isfinite(loss) else loss

    def log(self, state, metrics: dict) -> None:
        """Through `trainer.log()` with a trainer; else into log_history at this step and the next log entry."""
        if self.trainer is not None:
            log_metrics(self.trainer, metrics)
            return
        entry = dict(metrics)
        if state.epoch is not None:
            entry["epoch"] = state.epoch
        state.log_history.append({**entry, "step": state.global_step})  # as Trainer.log() writes it
        self.pending_logs.update(metrics)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if getattr(self, "pending_logs", None) and logs is not None:
            logs.update(self.pending_logs)
            self.pending_logs = {}
