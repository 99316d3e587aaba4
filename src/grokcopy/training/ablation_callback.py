"""Head ablation while the model trains, in any Trainer.

`HeadAblationCallback` runs grokcopy.analysis.ablation on its own schedule: the copy test with each attention
head zero-ablated, then each layer's whole attention (and, when asked, sets of layers together), on the first
`num_samples` samples of the run's copy test. One record per analysed step goes to `ablation_history.jsonl`;
the log gets the unablated exact match on those samples and, per layer, the exact match with that layer's
attention ablated and the lowest over its single heads. Why during training: I says which heads *look* like
an induction circuit; the ablation says when the copying comes to *need* them, and when a backup that I does
not see (a head that takes over when another layer is gone) starts to work. It follows resumes as the copy
history does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from grokcopy.errors import UnsupportedArchitectureError
from grokcopy.run_dir import ABLATION_HISTORY
from grokcopy.training.callback_support import AnalysisCallback, History, eval_steps_schedule

logger = logging.getLogger(__name__)

RECORD_KEYS = ("exact_match", "token_accuracy", "ablated_exact_match", "ablated_token_accuracy",
               "layer_ablated_exact_match", "layer_ablated_token_accuracy", "group_ablated_exact_match",
               "group_ablated_token_accuracy", "num_layers", "num_heads", "num_samples", "num_queries")


@dataclass(eq=False)
class HeadAblationCallback(AnalysisCallback):
    """Every head and every layer's attention ablated in turn, every `every` steps (log-spaced below it).

        Trainer(model, args, train_dataset=blocks, processing_class=tokenizer,
                callbacks=[CopyEvalCallback(), HeadAblationCallback(every=100)])

    Every argument has a default. The copy test is the run's own: `copy_task`, else, with a trainer reference,
    the trainer's (`CopyTrainer.copy_task`, or its `CopyEvalCallback`'s), else one drawn from the Trainer's
    tokenizer with CopyTaskConfig's defaults fitted to the context. `num_samples` of its samples are scored (a drop from 0.95 to
    0.6 needs far fewer than a score does; the same samples for every ablation, so each drop is paired).
    `layer_sets`: sets of layers whose whole attention is also ablated together, e.g. ((1, 2),), which finds
    a backup a single layer's ablation hides. An architecture the analysis does not know is reported once and
    skipped. `trainer` is optional (see callback_support).
    """

    trainer: Any = field(default=None, repr=False)
    every: int = 100
    num_samples: int = 32
    layer_sets: tuple = ()
    batch_size: int = 16
    copy_task: Any = field(default=None, repr=False)
    history_name: str = ABLATION_HISTORY
    block_size: int | None = None
    disabled: bool = field(default=False, init=False)

    def __post_init__(self):
        if self.every < 1 or self.num_samples < 1:
            raise ValueError(f"HeadAblationCallback: every and num_samples must be >= 1, got {self.every} and "
                             f"{self.num_samples}")
        self.layer_sets = tuple(tuple(int(layer) for layer in layers) for layers in self.layer_sets)

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin(args, state, **kwargs)
        self.layer_groups(self.model_of(kwargs))  # a layer the model does not have: said before training
        self.history = History(args.output_dir, self.history_name)
        self.done = self.history.resume_at(state.global_step, state.is_world_process_zero)
        if state.global_step not in self.done and eval_steps_schedule(state.global_step, "log", self.every):
            self._ablate(args, state, kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        if eval_steps_schedule(state.global_step, "log", self.every) and state.global_step not in self.done:
            self._ablate(args, state, kwargs)

    def task(self, kwargs):
        """The run's copy test (see the class docstring), found or drawn once."""
        if self.copy_task is None:
            self.copy_task = getattr(self.trainer, "copy_task", None)
        if self.copy_task is None and self.trainer is not None:
            for callback in self.trainer.callback_handler.callbacks:
                if getattr(callback, "copy_task", None) is not None and callback is not self:
                    self.copy_task = callback.copy_task
                    break
        if self.copy_task is None:
            from grokcopy.copytest.task import CopyTaskConfig

            self.copy_task = self.draw_copy_task(kwargs, CopyTaskConfig())
        return self.copy_task

    def layer_groups(self, model) -> dict:
        from grokcopy.analysis.ablation import layer_groups
        from grokcopy.attention import unwrap_model

        config = unwrap_model(model).config
        return layer_groups(self.layer_sets, config.num_hidden_layers, config.num_attention_heads,
                            "HeadAblationCallback layer_sets")

    def _ablate(self, args, state, kwargs) -> dict | None:
        model = self.model_of(kwargs)
        if self.disabled or self.stopped(model, state):
            return None
        from grokcopy.analysis.ablation import ablate_heads

        start = time.perf_counter()
        try:
            result = ablate_heads(model, self.task(kwargs), num_samples=self.num_samples, batch_size=self.batch_size,
                                  groups=self.layer_groups(model) or None)
        except UnsupportedArchitectureError as err:
            logger.warning("head ablation off for this run: %s", err)
            self.disabled = True
            return None
        record = {"step": state.global_step, "tokens": self.tokens(args, state),
                  **{k: result[k] for k in RECORD_KEYS if k in result},
                  "seconds": round(time.perf_counter() - start, 4)}
        if state.is_world_process_zero:
            self.history.append(record)
        self.done.add(state.global_step)
        metrics = {"eval_ablation_exact_match": record["exact_match"]}
        for layer, value in enumerate(record["layer_ablated_exact_match"]):
            metrics[f"eval_ablation_layer{layer}_exact_match"] = value
            metrics[f"eval_ablation_min_head_layer{layer}_exact_match"] = min(record["ablated_exact_match"][layer])
        for name, value in (record.get("group_ablated_exact_match") or {}).items():
            metrics[f"eval_ablation_{name.replace(' ', '').replace('+', '_')}_exact_match"] = value
        self.log(state, metrics)
        return record
