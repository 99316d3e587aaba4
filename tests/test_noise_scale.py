"""The gradient noise scale callback on a problem whose noise scale is known exactly, in a plain Trainer."""

import json

import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import Trainer, TrainingArguments

from grokcopy.training.noise_scale import GradientNoiseScaleCallback, simple_noise_scale

DIM, SIGMA = 16, 1.0
MU = torch.full((DIM,), 0.125)  # |G|^2 = 16 / 64 = 0.25, tr(Sigma) = 16: B_simple = 64 examples


class LinearLoss(nn.Module):
    """loss_i = theta . x_i with x_i = MU + noise: every example's gradient is x_i itself, so the
    per-example gradient has mean MU and covariance SIGMA^2 I, whatever theta is."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(DIM))

    def forward(self, x):
        return {"loss": (x @ self.theta).mean()}


def test_estimator_is_exact_in_expectation():
    true_sq, trace = float(MU @ MU), DIM * SIGMA**2
    for b_small, b_big in ((8, 32), (4, 64)):
        g_small, g_big = true_sq + trace / b_small, true_sq + trace / b_big  # E|mean gradient over b|^2
        assert simple_noise_scale(g_small, g_big, b_small, b_big) == pytest.approx((true_sq, trace))


def train_linear(tmp_path, data, callback, trainer_class=Trainer):
    """600 steps of 4 micro-batches of 8 on the linear problem (LR ~0: the gradients' statistics stay put)."""
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, gradient_accumulation_steps=4,
                             max_steps=600, learning_rate=1e-9, logging_steps=100, report_to="none", use_cpu=True,
                             max_grad_norm=0.0, save_strategy="no", disable_tqdm=True, dataloader_pin_memory=False,
                             remove_unused_columns=False)
    collate = lambda rows: {"x": torch.tensor([r["x"] for r in rows])}  # noqa: E731
    trainer = trainer_class(model=LinearLoss(), args=args, train_dataset=data, data_collator=collate,
                            callbacks=[callback])
    trainer.train()
    return trainer


class InOrder(Trainer):
    def _get_train_sampler(self, *args, **kwargs):
        return torch.utils.data.SequentialSampler(self.train_dataset)


def test_callback_recovers_the_known_noise_scale_in_a_plain_trainer(tmp_path):
    torch.manual_seed(0)
    data = Dataset.from_dict({"x": (MU + SIGMA * torch.randn(24_000, DIM)).tolist()})
    callback = GradientNoiseScaleCallback(window=200, block_size=10)
    trainer = train_linear(tmp_path, data, callback)
    logged = [r for r in trainer.state.log_history if "gradient_noise_scale" in r]
    assert [r["step"] for r in logged][-3:] == [400, 500, 600] and all("loss" in r for r in logged)
    final = logged[-1]
    assert final["gradient_noise_scale"] == pytest.approx(64, rel=0.2)
    assert final["gradient_noise_scale_tokens"] == pytest.approx(final["gradient_noise_scale"] * 10)
    assert callback.steps_used == 600 and callback.steps_clipped == 0


def test_early_large_gradients_do_not_linger_in_the_estimate(tmp_path):
    """Real training starts with gradients 10-100x larger than on the plateau; the estimate must forget them.
    The first 50 steps here have a mean gradient 20x MU (|G|^2 400x larger, noise scale 0.16), the rest the
    known problem: 500 steps later the callback reads the known 64 (an EMA of decay 0.99 read 24 here, 0.995 2.2)."""
    torch.manual_seed(0)
    early = 20 * MU + SIGMA * torch.randn(50 * 32, DIM)
    data = Dataset.from_dict({"x": torch.cat([early, MU + SIGMA * torch.randn(550 * 32, DIM)]).tolist()})
    trainer = train_linear(tmp_path, data, GradientNoiseScaleCallback(window=200, block_size=10), InOrder)
    assert trainer.state.log_history[-2]["gradient_noise_scale"] == pytest.approx(64, rel=0.25)
    with pytest.raises(ValueError, match="window"):
        GradientNoiseScaleCallback(window=1)


def test_without_gradient_accumulation_it_says_so_and_stays_off(tmp_path, caplog):
    data = Dataset.from_dict({"x": torch.randn(64, DIM).tolist()})
    callback = GradientNoiseScaleCallback()
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=4, logging_steps=1,
                             report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True,
                             remove_unused_columns=False)
    collate = lambda rows: {"x": torch.tensor([r["x"] for r in rows])}  # noqa: E731
    with caplog.at_level("WARNING"):
        Trainer(model=LinearLoss(), args=args, train_dataset=data, data_collator=collate, callbacks=[callback]).train()
    assert callback.disabled and "gradient_accumulation_steps >= 2" in caplog.text


def test_copy_trainer_stop_rule_and_noise_scale_from_the_config(corpus_file, tmp_path):
    """copy_stop_exact_match stops a run at its first copy test at or above it; gradient_noise_scale logs."""
    from conftest import tiny_config

    from grokcopy.analysis.grokking import grokking_stats
    from grokcopy.run_dir import read_jsonl
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    out = tmp_path / "stopped"
    summary = run_training(*parse_args(tiny_config(corpus_file, out, max_steps=10, copy_stop_exact_match=0.0)))
    steps = [r["step"] for r in read_jsonl(out / "copy_history.jsonl")]
    assert steps == [0, 2] and summary["steps"] == 2  # 0.0 is reached at the first copy test after step 0
    assert grokking_stats(out)["finished"] is True  # stopped by its rule: finished, not cut short

    out = tmp_path / "noise"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=12, gradient_accumulation_steps=4,
                                         per_device_train_batch_size=2, gradient_noise_scale=True, logging_steps=4,
                                         max_grad_norm=0.0, copy_eval_schedule="none")))
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [r for r in log if "gradient_noise_scale" in r]
    assert logged and all("loss" in r for r in logged)
    assert all(r["gradient_noise_scale_tokens"] == pytest.approx(r["gradient_noise_scale"] * 128) for r in logged)
