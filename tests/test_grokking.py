"""Grokking landmarks on synthetic curves whose answers are known analytically."""

import json
import math

import numpy as np
import pytest

from grokcopy.analysis.grokking import (
    crossing_step,
    first_step_reaching,
    formation_steps,
    grokking_stats,
    jump_step,
    loss_fall_step,
    loss_target_step,
    shared_loss_target,
    smooth,
)
from grokcopy.analysis.survival import bootstrap_medians, bootstrap_slope, interval, km_median, landmark_summary

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


def test_jump_step_is_the_interpolated_threshold_crossing():
    assert crossing_step([(0, 0.0), (100, 1.0)], 0.5) == 50
    assert crossing_step([(0, 0.7)], 0.5) == 0
    for centre in (650, 1250, 2050):  # centred between two copy tests: the interpolation is exact by symmetry
        step, censored = jump_step(_history(sigmoid_em(centre)))
        assert step == pytest.approx(centre, abs=1) and censored is None
    # not quantised to the copy-test spacing: a centre at 1220 is found at 1220 +- 10, not at 1200 or 1300
    assert jump_step(_history(sigmoid_em(1220)))[0] == pytest.approx(1220, abs=10)


def test_a_run_that_never_reaches_the_threshold_is_censored_at_its_last_test():
    stalled = _history([(s, 0.45 * v) for s, v in sigmoid_em(600)])  # half of the old "half of final" definition
    assert jump_step(stalled) == (None, LOG_STEPS[-1])
    assert jump_step(stalled, threshold=0.4)[0] is not None
    assert jump_step([]) == (None, None)


def test_loss_target_step_of_an_exponential_decay_is_analytic():
    loss = exp_loss()  # 2 + 8 exp(-t / 200), logged every 10 steps
    t_star = 200 * math.log(8 / 1.0)  # reaches 3.0 at t* = 415.9
    assert loss_target_step(loss, 3.0, window=1) == (first_logged_at_or_after(t_star), None)
    c = sum(math.exp(10 * k / 200) for k in range(5)) / 5  # trailing mean of 5 points: 2 + 8 c exp(-t/200)
    assert loss_target_step(loss, 3.0, window=5) == (first_logged_at_or_after(200 * math.log(8 * c)), None)
    assert loss_target_step(loss, 1.5) == (None, 3000)  # below the floor: censored at the last logged step
    assert loss_target_step(loss, None) == (None, 3000)


def test_the_shared_loss_target_is_reached_by_every_run():
    runs = [exp_loss(floor=2.0), exp_loss(floor=2.5), exp_loss(floor=2.2, tau=600)]
    target = shared_loss_target(runs, window=1)
    assert target == pytest.approx(2.5 + 0.05 * (10.2 - 2.5), abs=1e-4)  # worst floor + 5% of the median fall
    assert all(loss_target_step(r, target, window=1)[0] is not None for r in runs)
    assert shared_loss_target([[]]) is None


def test_formation_is_censored_where_the_analyses_stop():
    history = [{"step": s, "tokens": s * 10, "num_layers": 2, "num_heads": 2,
                "induction": [[0.0, 0.1], [0.0, 0.5 if s >= 300 else 0.1]]} for s in (0, 100, 200, 300, 400)]
    rows = formation_steps(history, 0.3)
    assert rows[0]["formation_step"] is None and rows[0]["censored_at"] == 400
    assert rows[1]["formation_step"] == 300 and rows[1]["censored_at"] is None and rows[1]["head"] == 1


def test_lag_is_jump_minus_loss_target_and_tokens_follow_steps():
    loss = exp_loss()
    base = grokking_stats({"losses": loss, "copy_history": _history(sigmoid_em(1250)), "tokens_per_step": 512},
                          loss_target=3.0, loss_window=1)
    assert base["loss_target_step"] == 420 and base["jump_step"] == pytest.approx(1250, abs=1)
    assert base["lag_steps"] == pytest.approx(830, abs=1)
    assert base["jump_tokens"] == base["jump_step"] * 512 and base["loss_target_tokens"] == 420 * 512


def test_kaplan_meier_median_with_and_without_censoring():
    assert km_median([300, 100, 200], [True] * 3) == 200
    assert km_median([100, 200, 300, 400], [True] * 4) == 200  # S falls to 0.5 at the second event
    # censored at 200: at risk 2 at 300, S = 3/4 x 1/2 = 0.375 <= 0.5
    assert km_median([100, 200, 300, 400], [True, False, True, True]) == 300
    assert km_median([100, 500, 500], [True, False, False]) is None  # fewer than half reached it
    assert km_median([], []) is None


def test_bootstrap_intervals_cover_and_say_when_they_are_unbounded():
    rng = np.random.default_rng(1)
    times = rng.lognormal(np.log(800), 0.3, size=8)
    summary = landmark_summary(times, [True] * 8)
    low, high = summary["ci95"]
    assert low < summary["median"] < high and summary["n_reached"] == 8
    assert low > 300 and high < 2000
    # half the seeds censored early: the median exists, the interval's upper end does not
    censored = landmark_summary([500, 600, 700, 800, 900, 900, 900, 900], [True] * 4 + [False] * 4)
    assert censored["median"] == 800 and censored["ci95"][1] is None
    assert landmark_summary([900] * 4, [False] * 4)["ci95"] is None  # none reached: no interval at all
    assert np.isnan(bootstrap_medians([], [], n=5)).all() and interval(np.array([])) is None


def test_bootstrap_slope_recovers_a_power_law():
    xs = [64, 256, 1024]
    samples = [np.full(100, 4000.0 / x) for x in xs]  # S = 4000 / B exactly, no seed noise
    fit = bootstrap_slope(xs, [4000.0 / x for x in xs], samples)
    assert fit["slope"] == pytest.approx(-1) and fit["ci95"] == pytest.approx([-1, -1])
    undefined = bootstrap_slope(xs, [None, 1.0, 2.0], samples)
    assert not undefined["resolved"] and undefined["slope"] is None


def _history(points, tokens_per_step=512):
    return [{"step": s, "tokens": s * tokens_per_step, "loss": None if s == 0 else 3.0, "exact_match": v,
             "token_accuracy": min(1.0, v + 0.1)} for s, v in points]


def test_stats_from_a_run_folder_match_stats_from_histories(tmp_path):
    loss, copy = exp_loss(), _history(sigmoid_em(1050), tokens_per_step=256)
    log = [{"step": s, "loss": v, "learning_rate": 1e-3} for s, v in loss if s > 0]
    log += [{"step": 3000, "train_loss": 2.5}]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 3000, "log_history": log}))
    (tmp_path / "copy_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in copy))
    (tmp_path / "run_config.json").write_text(json.dumps({"tokens_per_step": 256,
                                                          "training": {"seed": 0, "max_steps": 3000}}))
    from_folder = grokking_stats(tmp_path, loss_target=3.0)
    from_data = grokking_stats({"losses": [(s, v) for s, v in loss if s > 0], "copy_history": copy,
                                "tokens_per_step": 256, "run_config": {"training": {"max_steps": 3000}}},
                               loss_target=3.0)
    assert from_folder == from_data
    assert from_folder["tokens_per_step"] == 256 and from_folder["steps"] == 3000 and from_folder["finished"]
    assert from_folder["final_exact_match"] == copy[-1]["exact_match"]
    assert from_folder["final_loss"] == pytest.approx(2.0, abs=1e-5)
    assert from_folder["jump_step"] == pytest.approx(1050, abs=1)
    # a run stopped at 2,000 of 3,000 steps is marked unfinished
    short = grokking_stats({"losses": loss[:201], "copy_history": copy[:-10],
                            "run_config": {"training": {"max_steps": 3000}}})
    assert short["finished"] is False
    # without run_config.json tokens per step come from the copy history; without a trainer_state.json
    # (a run still training) from the newest checkpoint's
    (tmp_path / "run_config.json").unlink()
    checkpoint = tmp_path / "checkpoint-3000"
    checkpoint.mkdir()
    (tmp_path / "trainer_state.json").rename(checkpoint / "trainer_state.json")
    expected = {**from_data, "finished": None}
    assert grokking_stats(tmp_path, loss_target=3.0) == expected
