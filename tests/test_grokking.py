"""Grokking landmarks on synthetic curves whose answers are known analytically."""

import json
import math

import numpy as np
import pytest

from grokcopy.analysis.grokking import (
    copy_half_step,
    copy_jump_step,
    first_step_reaching,
    grokking_stats,
    loss_fall_step,
    loss_plateau_step,
    smooth,
)

LOG_STEPS = [0, 1, 2, 4, 8, 16, 32, 64] + list(range(100, 3001, 100))  # copy_eval_schedule log, every 100


def sigmoid_em(centre, steps=LOG_STEPS, width=50.0, top=1.0):
    return [(s, top / (1 + math.exp(-(s - centre) / width))) for s in steps]


def exp_loss(tau=200.0, floor=2.0, height=8.0, every=10, last=3000):
    return [(t, floor + height * math.exp(-t / tau)) for t in range(0, last + 1, every)]


def first_logged_at_or_after(t, every=10):
    return int(math.ceil(t / every) * every)


def test_existing_landmarks_still_work():
    assert smooth([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    assert first_step_reaching([(0, 0.1), (5, 0.6)], 0.5) == 5
    assert loss_fall_step([(0, 10.0), (1, 5.0), (2, 2.0), (3, 2.0)], 0.8, window=1) == 2


def test_jump_of_a_sigmoid_is_its_centre_within_the_eval_spacing():
    for centre in (600, 1250, 2000):
        jump = copy_jump_step(sigmoid_em(centre))
        assert abs(jump - centre) <= 100, (centre, jump)
    assert copy_jump_step(sigmoid_em(600)) == pytest.approx(600)  # a symmetric jump: the middle of the best span
    # half of the final value is crossed at the centre (interpolated between evaluations)
    assert copy_half_step(sigmoid_em(600)) == pytest.approx(600, abs=1)
    assert copy_half_step(sigmoid_em(600, top=0.6)) == pytest.approx(600, abs=1)


def test_jump_ignores_noise_at_densely_sampled_early_steps():
    rng = np.random.default_rng(0)
    noisy = [(s, min(1.0, max(0.0, v + rng.normal(0, 0.02)))) for s, v in sigmoid_em(1500)]
    noisy[3] = (4, 0.06)  # one lucky early test: +0.06 in 2 steps is a steep slope, but not a jump
    assert abs(copy_jump_step(noisy) - 1500) <= 100
    assert copy_jump_step(noisy, window=400) == pytest.approx(1500, abs=100)


def test_no_jump_no_half_step():
    flat = [(s, 0.0) for s in LOG_STEPS]
    assert copy_jump_step(flat) is None and copy_half_step(flat) is None
    assert copy_jump_step([(0, 0.0)]) is None


def test_plateau_of_an_exponential_decay_is_analytic():
    loss = exp_loss()
    final = loss[-1][1]
    # window 1: the loss itself; within 5% of the fall (10 -> final) from t* on
    t_star = -200 * math.log(0.05 * (10 - final) / 8 + math.exp(-15))
    assert loss_plateau_step(loss, 0.05, window=1) == first_logged_at_or_after(t_star)  # 600 (t* = 599.1)
    # trailing average of 5 logged points: (2 + 8 e^{-t/200} c), c = mean of e^{10k/200}, k = 0..4
    c = sum(math.exp(10 * k / 200) for k in range(5)) / 5
    final5 = 2 + 8 * math.exp(-15) * c
    t_star5 = -200 * math.log(0.05 * (10 - final5) / (8 * c) + math.exp(-15))
    assert loss_plateau_step(loss, 0.05, window=5) == first_logged_at_or_after(t_star5)  # 620
    # absolute band: within 0.1 nats
    t_abs = -200 * math.log(0.1 / 8 + math.exp(-15))
    assert loss_plateau_step(loss, 0.1, relative=False, window=1) == first_logged_at_or_after(t_abs)
    # a loss that rises again later has not plateaued until after the rise
    bumped = [(s, v + (1.0 if 2000 <= s < 2200 else 0.0)) for s, v in loss]
    assert loss_plateau_step(bumped, 0.05, window=1) == 2200
    assert loss_plateau_step([(0, 1.0), (10, 2.0)], 0.05) is None  # it did not fall


def test_shifting_the_copy_curve_shifts_the_lag_by_as_much():
    loss = exp_loss()
    base = grokking_stats({"losses": loss, "copy_history": _history(sigmoid_em(1200)), "tokens_per_step": 512},
                          loss_window=1)
    later = grokking_stats({"losses": loss, "copy_history": _history(sigmoid_em(1500)), "tokens_per_step": 512},
                           loss_window=1)
    assert base["loss_plateau_step"] == later["loss_plateau_step"] == 600
    assert base["lag_steps"] == pytest.approx(600, abs=100)
    assert later["lag_steps"] - base["lag_steps"] == pytest.approx(300, abs=100)
    assert later["lag_tokens"] == later["lag_steps"] * 512
    assert later["copy_jump_tokens"] == later["copy_jump_step"] * 512
    assert later["loss_plateau_tokens"] == 600 * 512


def _history(points, tokens_per_step=512):
    return [{"step": s, "tokens": s * tokens_per_step, "loss": None if s == 0 else 3.0, "exact_match": v,
             "token_accuracy": min(1.0, v + 0.1)} for s, v in points]


def test_stats_from_a_run_folder_match_stats_from_histories(tmp_path):
    loss, copy = exp_loss(), _history(sigmoid_em(1000), tokens_per_step=256)
    log = [{"step": s, "loss": v, "learning_rate": 1e-3} for s, v in loss if s > 0]
    log += [{"step": 3000, "train_loss": 2.5}]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 3000, "log_history": log}))
    (tmp_path / "copy_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in copy))
    (tmp_path / "run_config.json").write_text(json.dumps({"tokens_per_step": 256, "training": {"seed": 0}}))
    from_folder = grokking_stats(tmp_path)
    from_data = grokking_stats({"losses": [(s, v) for s, v in loss if s > 0], "copy_history": copy,
                                "tokens_per_step": 256})
    assert from_folder == from_data
    assert from_folder["tokens_per_step"] == 256 and from_folder["steps"] == 3000
    assert from_folder["final_exact_match"] == copy[-1]["exact_match"]
    assert from_folder["final_loss"] == pytest.approx(2.0, abs=1e-5)
    assert abs(from_folder["copy_jump_step"] - 1000) <= 100
    # without run_config.json tokens per step come from the copy history; without a trainer_state.json
    # (a run still training) from the newest checkpoint's
    (tmp_path / "run_config.json").unlink()
    checkpoint = tmp_path / "checkpoint-3000"
    checkpoint.mkdir()
    (tmp_path / "trainer_state.json").rename(checkpoint / "trainer_state.json")
    assert grokking_stats(tmp_path) == from_data
