"""The forecast while a model trains, in any Trainer: will it copy by induction, headless, or not, and when.

`CopyForecastCallback` forecasts (grokcopy.forecast) from what the run has recorded so far, each time the copy
test or the induction analysis adds a record (and every `every` steps when set), logs `forecast_jump_step`,
`forecast_p_circuit`, `forecast_p_headless` and `forecast_p_no_jump` through the Trainer's log, and warns once
when the forecast turns to "headless" or "no jump", with the measured reason. It reads the histories the analysis
callbacks write into the run folder: listed after them, it sees each record at the step it is made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from grokcopy.run_dir import RunFolder, losses_from_log
from grokcopy.training.callback_support import AnalysisCallback, tokens_per_step

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class CopyForecastCallback(AnalysisCallback):
    """Forecast the copy jump during training.

        Trainer(model, args, train_dataset=blocks, callbacks=[CopyEvalCallback(), CopyForecastCallback()])

    Every argument has a default: `horizon` the step the probabilities refer to (the run's max_steps),
    `forecaster` a grokcopy.forecast.reference.Forecaster (the reference set grokcopy ships), `every` also forecast
    every N steps (e.g. with no analysis callback: then from the configuration alone).
    """

    trainer: Any = field(default=None, repr=False)
    horizon: int | None = None
    forecaster: Any = field(default=None, repr=False)
    every: int | None = None
    block_size: int | None = None
    latest: Any = field(default=None, init=False, repr=False)  # the latest Forecast
    _stamp: tuple | None = field(default=None, init=False, repr=False)
    _warned: str | None = field(default=None, init=False, repr=False)

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin(args, state, **kwargs)
        model = self.model_of(kwargs)
        config = getattr(getattr(model, "base_model", model), "config", None) or getattr(model, "config", None)
        config = getattr(config, "get_text_config", lambda: config)()
        self.run = RunFolder(args.output_dir)
        self.configuration = {
            "tokens_per_step": tokens_per_step(args, self.resolved_block_size),
            "learning_rate": args.learning_rate,
            "num_layers": getattr(config, "num_hidden_layers", None),
            "context": self.resolved_block_size,
            "max_steps": args.max_steps if args.max_steps and args.max_steps > 0 else state.max_steps,
        }
        if self.forecaster is None:
            from grokcopy.forecast.reference import shipped_forecaster

            self.forecaster = shipped_forecaster()

    def _changed(self) -> bool:
        stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else None
                      for p in (self.run.copy_history, self.run.induction_history))
        changed = stamp != self._stamp and any(stamp)
        self._stamp = stamp
        return changed

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        scheduled = bool(self.every) and state.global_step % self.every == 0
        horizon = self.horizon or self.configuration["max_steps"]
        if not (self._changed() or scheduled) or (horizon and state.global_step > horizon):
            return
        from grokcopy.forecast.signals import snapshot

        histories = {"copy_history": self.run.read_copy_history(), "induction_history": self.run.read_induction_history(),
                     "losses": losses_from_log(state.log_history)}
        snap = snapshot(histories, state.global_step)
        snap.config = dict(self.configuration)
        try:
            forecast = self.forecaster.forecast(snap, horizon)
        except ValueError as err:  # e.g. no tokens per step known: say so once, training goes on
            if self._warned != "error":
                logger.warning("copy forecast: %s", err)
                self._warned = "error"
            return
        self.latest = forecast
        metrics = {"forecast_p_circuit": round(forecast.p_circuit, 4), "forecast_p_headless": round(forecast.p_headless, 4),
                   "forecast_p_no_jump": round(forecast.p_no_jump, 4)}
        if forecast.jump_step is not None:
            metrics["forecast_jump_step"] = round(forecast.jump_step, 1)
        self.log(state, metrics)
        if forecast.outcome != "circuit" and self._warned != forecast.outcome and not forecast.jumped_already:
            self._warned = forecast.outcome
            logger.warning("copy forecast at step %d: %s (P = %.2f). %s", state.global_step, forecast.outcome,
                           forecast.p_headless if forecast.outcome == "headless" else forecast.p_no_jump,
                           forecast.reason)
        elif forecast.outcome == "circuit":
            self._warned = None
