"""CopyTrainer: `transformers.Trainer` that also measures the paper's context-copying accuracy.

Everything the Trainer does stays as it is (loop, logging to `report_to`, checkpoints, resume,
`push_to_hub`, distributed launch). On top: `evaluate()` adds `eval_copy_exact_match` and
`eval_copy_token_accuracy`, and a `CopyEvalCallback` runs the copy test on its own schedule,
independent of `eval_strategy`, writing `copy_history.jsonl`.
"""

from __future__ import annotations

import logging
import shutil

import torch
from transformers import Trainer

from grokcopy.analysis.architectures import model_context_length
from grokcopy.analysis.copyable_loss import copyable_loss_split
from grokcopy.analysis.induction_config import InductionConfig
from grokcopy.copytest.scoring import score_copy_task
from grokcopy.copytest.task import CopyTask, CopyTaskConfig, build_copy_task
from grokcopy.errors import CheckpointSaveError, TrainingDivergedError, one_line  # noqa: F401 (re-exported)
from grokcopy.hub.push import HubCheckpointCallback
from grokcopy.run_dir import checkpoint_dir, checkpoint_problem, last_complete_checkpoint
from grokcopy.training.callback_support import held_out_blocks, row_length, tokens_per_step, tokens_seen
from grokcopy.training.callbacks import CopyEvalCallback, DivergenceGuard, InductionHeadCallback, LogSpacedSaves
from grokcopy.training.ablation_callback import HeadAblationCallback
from grokcopy.training.forecast_callback import CopyForecastCallback
from grokcopy.training.noise_scale import GradientNoiseScaleCallback

logger = logging.getLogger(__name__)


def as_copy_training_arguments(args):
    """CopyTrainer's arguments: CopyTrainingArguments as given; a plain TrainingArguments converted with every
    field it sets and the copy test's defaults (as SFTTrainer converts to SFTConfig); None: the defaults."""
    from dataclasses import fields

    from transformers import TrainingArguments

    from grokcopy.training.config import CopyTrainingArguments

    if args is None:
        return CopyTrainingArguments(output_dir="trainer_output")
    if isinstance(args, CopyTrainingArguments):
        return args
    if not isinstance(args, TrainingArguments):
        raise TypeError(f"CopyTrainer: args must be CopyTrainingArguments (or TrainingArguments), got "
                        f"{type(args).__name__}")
    given = {f.name: getattr(args, f.name) for f in fields(TrainingArguments) if f.init and hasattr(args, f.name)}
    logger.info("CopyTrainer: TrainingArguments converted to CopyTrainingArguments (the copy test's defaults)")
    return CopyTrainingArguments(**given)


class CopyTrainer(Trainer):
    """A Trainer for causal-LM pretraining that watches copying emerge.

    Args beyond `Trainer`'s: `copy_task` (built from the `copy_*` arguments and the model's context
    when not given) and `block_size` (tokens per sequence, to count tokens seen; inferred from the
    training set when it can be indexed).
    """

    def __init__(self, model=None, args=None, *rest, copy_task: CopyTask | None = None, block_size: int | None = None,
                 data_description: str = "", datasets: list[str] | None = None, **kwargs):
        super().__init__(model, as_copy_training_arguments(args), *rest, **kwargs)
        schedule = self.args.copy_eval_schedule
        if copy_task is None and self.processing_class is not None:
            copy_task = build_copy_task(self.processing_class, CopyTaskConfig.from_training_args(self.args),
                                        max_length=model_context_length(self.model))
        self.copy_task = copy_task
        self.block_size = block_size or self._infer_block_size()
        self._step_loss = None
        self._step_loss_at = -1
        self._unchecked_losses: list[tuple[int, torch.Tensor]] = []
        self.diverged_at: int | None = None
        self._copyable_ids = None
        self.card_datasets = datasets  # Hub datasets trained on, for the model card's metadata
        self.add_callback(DivergenceGuard(self))  # first, so the analyses below can skip a diverged step
        if self.copy_task is not None and schedule != "none":
            self.add_callback(CopyEvalCallback(self, schedule=schedule, every=self.args.copy_eval_steps,
                                               stop_at=self.args.copy_stop_exact_match,
                                               copy_task=self.copy_task,
                                               batch_size=self.args.copy_eval_batch_size))
        if self.args.gradient_noise_scale:
            # first in the list, so the report_to integrations see the values it adds to each log entry
            self.callback_handler.callbacks.insert(0, GradientNoiseScaleCallback(block_size=self.block_size))
        if self.args.induction_analysis:
            settings = InductionConfig.from_training_args(self.args).settings()  # seq_len, batch_size
            self.add_callback(InductionHeadCallback(self, every=self.args.induction_eval_steps,
                                                    icl_input_ids=self._icl_input_ids(), **settings))
        if self.args.ablation_eval_steps:
            from grokcopy.analysis.ablation import parse_layer_sets

            sets = parse_layer_sets(self.args.ablation_layer_sets) if self.args.ablation_layer_sets else ()
            self.add_callback(HeadAblationCallback(self, every=self.args.ablation_eval_steps, layer_sets=sets,
                                                   num_samples=self.args.ablation_num_samples,
                                                   batch_size=self.args.copy_eval_batch_size))
        if self.args.copy_forecast and self.copy_task is not None and schedule != "none":
            self.add_callback(CopyForecastCallback(self))  # after the analyses: it reads the records they make
        self.hub_callback = None
        if self.args.hub_checkpoint_series:
            self.hub_callback = HubCheckpointCallback(
                self.args.hub_model_id, token=self.args.hub_token, private=self.args.hub_private_repo,
                main_branch=self.args.hub_revision, card=self._card_renderer(data_description),
                timeout=self.args.hub_push_timeout)
            self.add_callback(self.hub_callback)
        if self.args.save_schedule == "log":
            self.add_callback(LogSpacedSaves(self))  # last: step 0's on_save reaches the analyses and the Hub

    def get_decay_parameter_names(self, model) -> list[str]:
        """Weight decay on matrices only (2-D and up: linear and embedding weights), never on biases or
        norm scales, as nanoGPT and the LLaMA recipe do (Trainer's default keys on names)."""
        return [name for name, p in model.named_parameters() if p.ndim >= 2]

    def _card_renderer(self, data_description: str):
        def render(output_dir, branches):
            from grokcopy.hub.model_card import model_lineage, render_card

            base_model, adapter = model_lineage(self.model)
            return render_card(self.args.hub_model_id, output_dir, branches, self.model.config, self.args,
                               data_description or "Not described.", self.args.induction_threshold,
                               base_model=base_model, adapter=adapter, datasets=self.card_datasets)

        return render

    def train(self, *args, **kwargs):
        try:
            output = super().train(*args, **kwargs)
        except Exception as err:
            self._raise_if_save_failed(err)
            raise
        if self.diverged_at is not None:
            last = last_complete_checkpoint(self.args.output_dir)
            raise TrainingDivergedError(
                f"training loss is not finite (nan/inf) at step {self.diverged_at}; training stopped there and "
                f"saved nothing after it. " + (f"Last good checkpoint: {last.name}; resume from it with "
                "--resume_from_checkpoint auto --resume_allow_changes learning_rate (or warmup_steps, max_grad_norm) "
                "and a lower value" if last else "No checkpoint was saved before it: start over with a lower "
                "learning_rate, more warmup_steps or a max_grad_norm (--overwrite_output_dir true)"))
        return output  # the last pushes were waited for by HubCheckpointCallback.on_train_end

    def _raise_if_save_failed(self, err: Exception) -> None:
        """A run that died while saving checkpoint-N (e.g. a full disk) leaves a partial folder that
        looks like a checkpoint: remove it and say, in one line, which checkpoint is intact."""
        folder = checkpoint_dir(self.args.output_dir, self.state.global_step)
        if not folder.is_dir() or checkpoint_problem(folder) is None:
            return  # not a save that failed: the error speaks for itself
        if self.args.should_save:
            shutil.rmtree(folder, ignore_errors=True)
        last = last_complete_checkpoint(self.args.output_dir)
        raise CheckpointSaveError(
            f"saving {folder.name} failed ({one_line(err)}); its partial folder was removed. " + (
                f"The previous checkpoint {last.name} is intact: free space, then resume with "
                "--resume_from_checkpoint auto" if last else "There is no earlier checkpoint: free space, then "
                "rerun with --resume_from_checkpoint auto (it starts over)")
        ) from err

    def _icl_input_ids(self):
        """Held-out blocks for Olsson's ICL score (loss at token 500 - at token 50), when blocks are long enough."""
        if self.block_size is None or self.block_size < 500:
            return None
        return self._held_out_blocks(8)

    def _held_out_blocks(self, n: int):
        """The first `n` blocks of the eval set as a LongTensor (None without an indexable eval set)."""
        return held_out_blocks(self.eval_dataset, n)

    def copyable_loss(self) -> dict | None:
        """The held-out loss split into copyable tokens and the rest (grokcopy.analysis.copyable_loss), on
        a fixed batch of the first `copyable_loss_blocks` eval blocks; None without an eval set."""
        blocks = self.args.copyable_loss_blocks
        if not blocks:
            return None
        if self._copyable_ids is None:
            self._copyable_ids = self._held_out_blocks(blocks)
        if self._copyable_ids is None:
            return None
        return copyable_loss_split(self.model, self._copyable_ids, batch_size=self.args.per_device_eval_batch_size)

    def _infer_block_size(self) -> int | None:
        return row_length(self.train_dataset)

    @property
    def tokens_per_step(self) -> int | None:
        return tokens_per_step(self.args, self.block_size)

    def tokens_seen(self) -> int | None:
        return tokens_seen(self.state, self.args, self.block_size)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Micro-batches of one optimizer step all run at the same global_step; their returned
        # losses add up to the step's mean loss (as Trainer's own tr_loss does). No .item() here.
        if self._step_loss_at != self.state.global_step:
            self._step_loss, self._step_loss_at = torch.zeros_like(loss), self.state.global_step
            self._unchecked_losses.append((self.state.global_step + 1, self._step_loss))
        self._step_loss += loss
        return loss

    def first_nonfinite_step(self) -> int | None:
        """The first optimizer step since the last check whose loss was NaN/inf on any process
        (one device sync; distributed, a collective all processes reach at the same step)."""
        steps, losses = zip(*self._unchecked_losses) if self._unchecked_losses else ((), ())
        self._unchecked_losses = []
        bad = (~torch.isfinite(torch.stack(losses))).nonzero() if losses else []
        first = steps[int(bad[0])] if len(bad) else None
        if self.accelerator.num_processes > 1:
            flag = torch.tensor(float("inf") if first is None else first, device=self.args.device)
            gathered = self.accelerator.gather(flag[None])
            first = None if torch.isinf(gathered.min()) else int(gathered.min())
        return first

    @property
    def last_step_loss(self) -> float | None:
        """Training loss of the latest optimizer step, averaged over processes (None before the first).

        Distributed, every process must ask at the same step (the callbacks do): it is a collective."""
        if self._step_loss is None:
            return None
        if self.accelerator.num_processes > 1:
            return float(self.accelerator.reduce(self._step_loss.detach().clone(), reduction="mean"))
        return float(self._step_loss)

    @property
    def analysis_vocab_size(self) -> int | None:
        """Ids the tokenizer can produce: rows of a padded embedding past them were never trained."""
        return len(self.processing_class) if self.processing_class is not None else None

    def copy_evaluate(self, progress: bool = False) -> dict:
        """Run the copy test on the current model: exact_match, token_accuracy, per position.

        Distributed, each process scores its share of the samples and all get the full result."""
        if self.copy_task is None:
            raise ValueError("CopyTrainer has no copy task: pass copy_task= or a processing_class (tokenizer)")
        return score_copy_task(self.model, self.copy_task, batch_size=self.args.copy_eval_batch_size,
                               progress=progress)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        if self.copy_task is not None and description == "Evaluation":
            result = self._copy_result_of_this_step() or self.copy_evaluate()
            output.metrics[f"{metric_key_prefix}_copy_exact_match"] = result["exact_match"]
            output.metrics[f"{metric_key_prefix}_copy_token_accuracy"] = result["token_accuracy"]
        return output

    def _copy_result_of_this_step(self) -> dict | None:
        """The copy test the CopyEvalCallback ran at this very step of training, if it did: the Trainer
        evaluates right after on_step_end, on the same weights, so a second test would only cost time
        (the paper's config evaluates every 2,000 steps, each one a scheduled copy-test step)."""
        if not self.is_in_train:
            return None
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, CopyEvalCallback) and callback.last_step == self.state.global_step:
                return callback.latest
        return None
