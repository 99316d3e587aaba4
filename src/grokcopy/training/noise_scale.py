"""The gradient noise scale during training, from gradients the Trainer computes anyway.

McCandlish et al. (2018, "An Empirical Model of Large-Batch Training") predict the critical batch
size from the *simple noise scale* B_simple = tr(Sigma) / |G|^2 (Sigma: per-example gradient
covariance, G: the true gradient). Below it, steps to a target fall as 1/B (tokens govern); above
it they stop falling (steps govern). So a few hundred steps of B_simple tell a GPU user which regime
their batch is in, and whether the paper's "the copy jump follows steps" applies to their run.

Estimate (their appendix A.1): the squared norm of a mean gradient over B examples has expectation
|G|^2 + tr(Sigma)/B. Two batch sizes give two equations:

    |G|^2    ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

Both are averaged over steps before dividing, as the paper advises: a plain mean over the last `window`
usable steps. Not an exponential moving average: squared gradient norms fall by 10-100x over the first
hundred steps, so an EMA with a long memory is dominated by those early steps for hundreds of steps more
(measured on the demo: an EMA of decay 0.99 still read a negative noise scale at steps 160-200).
The two batch sizes come free with gradient accumulation: after the first micro-batch the
accumulated gradient is that micro-batch's own gradient / K (B_small = one micro-batch of one
process; under DDP it is not yet synchronised), and before the optimizer step it is the mean over all
K micro-batches of all processes (B_big). No extra forward or backward pass. Assumes equal-size
micro-batches (packed blocks) and the Trainer's 1/K loss scaling; steps whose gradient was clipped
are skipped (the pre-clip norm is not recoverable from the clipped gradient).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


def squared_grad_norm(model) -> torch.Tensor | None:
    """Sum of squared gradients over the model's parameters, on their device (no sync)."""
    norms = [p.grad.detach().float().pow(2).sum() for p in model.parameters() if p.grad is not None]
    return torch.stack([n.to(norms[0].device) for n in norms]).sum() if norms else None


def simple_noise_scale(g_small: float, g_big: float, b_small: float, b_big: float) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) from the squared norms of mean gradients over b_small and b_big examples."""
    true_sq = (b_big * g_big - b_small * g_small) / (b_big - b_small)
    trace = (g_small - g_big) / (1.0 / b_small - 1.0 / b_big)
    return true_sq, trace


@dataclass(eq=False)
class GradientNoiseScaleCallback(TrainerCallback):
    """Logs `gradient_noise_scale` (examples) and `gradient_noise_scale_tokens` at every logging step.

    Works in any Trainer with gradient_accumulation_steps >= 2 (else it says so once and stays off).
    The values join the Trainer's own log entry at each logging step (so they are in log_history, and
    reach every report_to integration listed after this callback; CopyTrainer puts it first, with
    another Trainer insert it at the front of `trainer.callback_handler.callbacks` for the same).
    `window`: how many of the latest usable steps the two squared norms are averaged over; `block_size`:
    tokens per example, for the value in tokens.
    """

    window: int = 100
    block_size: int | None = None
    _norms: Any = field(default=None, init=False, repr=False)  # (|g_small|^2, |g_big|^2) of the latest steps
    _first: Any = field(default=None, init=False, repr=False)
    _substep: int = field(default=0, init=False)
    steps_used: int = field(default=0, init=False)
    steps_clipped: int = field(default=0, init=False)
    disabled: bool = field(default=False, init=False)

    def __post_init__(self):
        if self.window < 2:
            raise ValueError(f"window: expected at least 2 steps to average over, got {self.window}")

    def on_train_begin(self, args, state, control, **kwargs):
        self._norms = deque(maxlen=self.window)
        if args.gradient_accumulation_steps < 2:
            logger.warning("gradient noise scale: needs gradient_accumulation_steps >= 2 (two batch sizes from one "
                           "step); off for this run")
            self.disabled = True

    def on_step_begin(self, args, state, control, **kwargs):
        self._substep, self._first = 0, None

    def on_substep_end(self, args, state, control, model=None, **kwargs):
        self._substep += 1
        if self._substep == 1 and not self.disabled and model is not None:
            self._first = squared_grad_norm(model)  # = |g_micro|^2 / K^2

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.disabled or self._first is None or model is None:
            return
        big = squared_grad_norm(model)
        clip = args.max_grad_norm
        if clip and clip > 0 and float(big) >= (clip * 0.999) ** 2:
            self.steps_clipped += 1  # clipped: its norm is the clip value, not the gradient's
            return
        k = args.gradient_accumulation_steps
        small = self._first * k * k
        self._norms.append((small.detach(), big.detach()))  # averaged and read only when logged
        self.steps_used += 1

    def current(self, args) -> dict | None:
        """The noise scale now, in examples and tokens (None before two usable steps)."""
        if not self._norms or len(self._norms) < 2:
            return None
        b_small = args.per_device_train_batch_size
        b_big = b_small * args.gradient_accumulation_steps * args.world_size
        g_small, g_big = (float(v) for v in torch.stack([torch.stack(pair) for pair in self._norms]).mean(dim=0))
        true_sq, trace = simple_noise_scale(g_small, g_big, b_small, b_big)
        if true_sq <= 0 or not math.isfinite(true_sq):
            return None  # the true gradient is lost in the noise: B_simple is beyond what two batches resolve
        scale = trace / true_sq
        tokens = scale * self.block_size if self.block_size else None
        return {"gradient_noise_scale": scale, "gradient_noise_scale_tokens": tokens}

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = self.current(args)
        if values is None or logs is None or "loss" not in logs:
            return
        values = {k: v for k, v in values.items() if v is not None}
        logs.update(values)  # the Trainer's own log entry: it is in log_history and reaches report_to
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)
