"""Induction heads while the model trains, in any Trainer.

`InductionHeadCallback` runs grokcopy.analysis.induction at every checkpoint save (and on its own
log-spaced schedule when `every` is set): each checkpoint folder gets `induction.json` and
`induction.png`, `induction_history.jsonl` one record per analysed step, the log the best head's I
per layer. It follows resumes as the copy history does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from grokcopy.run_dir import INDUCTION_HISTORY, RunFolder, write_json_atomic
from grokcopy.training.callback_support import AnalysisCallback, History, eval_steps_schedule, log_images

logger = logging.getLogger(__name__)

@dataclass(eq=False)
class InductionHeadCallback(AnalysisCallback):
    """Induction-head analysis at every checkpoint save, and every `every` steps when set.

        Trainer(model, args, train_dataset=blocks, callbacks=[InductionHeadCallback(every=100)])

    Every argument has a default: `seq_len` (s) is the paper's 100, or what the model's context
    holds; `batch_size` repeated sequences are averaged; `icl_input_ids` (held-out blocks of 500+
    tokens) adds Olsson's ICL score. The model comes from the Trainer's events, the usable vocabulary
    from its tokenizer (an embedding padded past it has rows no training touched). An architecture
    the analysis does not know is reported once and skipped: training and the copy test go on.
    `trainer` is optional (see callback_support).
    """

    trainer: Any = field(default=None, repr=False)
    every: int | None = None
    seq_len: int | None = None
    batch_size: int = 8
    icl_input_ids: Any = field(default=None, repr=False)
    history_name: str = INDUCTION_HISTORY
    block_size: int | None = None
    disabled: bool = field(default=False, init=False)
    _latest: tuple | None = field(default=None, init=False)  # (step, record) of the latest analysis, reused by a save

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin(args, state, **kwargs)
        from grokcopy.analysis.induction import fit_seq_len

        # one rule with every other entry point: unset is fitted to the context, an explicit s that does not fit
        # is refused (positions past the context were never trained: scores read there mean nothing)
        self.seq_len, note = fit_seq_len(self.model_of(kwargs), self.seq_len, name="InductionHeadCallback seq_len")
        if self.seq_len < 100 and state.is_world_process_zero and state.global_step == 0:
            logger.warning("induction analysis: %s", note)
        tokenizer = self.tokenizer_of(kwargs)
        self.vocab_size = len(tokenizer) if tokenizer is not None else None
        self.history = History(args.output_dir, self.history_name)
        self.done = self.history.resume_at(state.global_step, state.is_world_process_zero)
        if self.every and state.global_step == 0 and 0 not in self.done:
            self._analyse(args, state, kwargs)
        elif state.global_step > 0 and state.global_step not in self.done:
            self.on_save(args, state, control, **kwargs)  # resumed from a checkpoint whose analysis was cut short

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and eval_steps_schedule(state.global_step, "log", self.every):
            self._analyse(args, state, kwargs)

    def on_save(self, args, state, control, **kwargs):
        record = self._analyse(args, state, kwargs)
        if record is None or not state.is_world_process_zero:
            return
        from grokcopy.analysis.plots import plot_induction_heatmap

        run, step = RunFolder(args.output_dir), state.global_step
        if run.checkpoint(step).is_dir():
            write_json_atomic(run.checkpoint_induction(step), record)
            plot_induction_heatmap(record, run.checkpoint_induction_plot(step))

    def _analyse(self, args, state, kwargs) -> dict | None:
        if self.disabled or self.stopped(self.model_of(kwargs), state):
            return None
        if self._latest is not None and self._latest[0] == state.global_step:
            return self._latest[1]
        from grokcopy.analysis.induction import UnsupportedArchitectureError, analyze_induction

        start = time.perf_counter()
        try:
            scores = analyze_induction(self.model_of(kwargs), seq_len=self.seq_len, batch_size=self.batch_size,
                                       icl_input_ids=self.icl_input_ids, vocab_size=self.vocab_size)
        except UnsupportedArchitectureError as err:
            logger.warning("induction analysis off for this run: %s", err)
            self.disabled = True
            return None
        record = {"step": state.global_step, "tokens": self.tokens(args, state), **scores.to_dict(),
                  "seconds": round(time.perf_counter() - start, 4)}
        self._latest = (state.global_step, record)
        if state.is_world_process_zero and state.global_step not in self.done:
            self.history.append(record)
        self.done.add(state.global_step)
        metrics = {f"eval_induction_max_layer{layer}": max(row) for layer, row in enumerate(record["induction"])}
        metrics.update({f"eval_induction_layer{layer}_head{head}": value  # per head: what Fig. 6 plots
                        for layer, row in enumerate(record["induction"]) for head, value in enumerate(row)})
        self.log(state, metrics)
        from grokcopy.analysis.plots import induction_heatmap_figure

        log_images(self.trainer, state, {"induction/heatmap": lambda: induction_heatmap_figure(record)})
        return record
