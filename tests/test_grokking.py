"""Grokking landmarks on synthetic curves whose answers are known analytically."""

import json
import math

import numpy as np
import pytest

from grokcopy.analysis.grokking import (
    crossing_step,
    formation_steps,
    grokking_stats,
    jump_step,
    jump_width,
    loss_fall_step,
    loss_target_step,
    shared_loss_target,
    smooth,
)
from grokcopy.analysis.survival import (
    bootstrap_medians,
    bootstrap_slope,
    interval,
    km_median,
    landmark_summary,
    mean_interval,
    median_interval,
    proportion_interval,
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
    assert rows[0]["copying_at_end"] is None  # not recorded by this history
    history[-1]["copying"] = [[0.2, 0.05], [0.1, 0.9]]  # the depth-aware copying score, read at the last analysis
    assert [r["copying_at_end"] for r in formation_steps(history, 0.3)] == [0.2, 0.9]


def test_lag_is_jump_minus_loss_target_and_tokens_follow_steps():
    loss = exp_loss()
    base = grokking_stats({"losses": loss, "copy_history": _history(sigmoid_em(1250)), "tokens_per_step": 512},
                          loss_target=3.0, loss_window=1)
    assert base["loss_target_step"] == 420 and base["jump_step"] == pytest.approx(1250, abs=1)
    assert base["lag_steps"] == pytest.approx(830, abs=1)
    assert base["jump_tokens"] == base["jump_step"] * 512 and base["loss_target_tokens"] == 420 * 512


def test_kaplan_meier_median_with_and_without_censoring():
    assert km_median([300, 100, 200], [True] * 3) == 200
    # S sits at 0.5 from the second event to the third: the middle (for complete data, the sample median)
    assert km_median([100, 200, 300, 400], [True] * 4) == 250
    # censored at 200: at risk 2 at 300, S = 3/4 x 1/2 = 0.375 <= 0.5
    assert km_median([100, 200, 300, 400], [True, False, True, True]) == 300
    assert km_median([100, 500, 500], [True, False, False]) is None  # fewer than half reached it
    assert km_median([], []) is None


def test_median_intervals_say_their_coverage_and_when_they_are_unbounded():
    rng = np.random.default_rng(1)
    times = rng.lognormal(np.log(800), 0.3, size=8)
    summary = landmark_summary(times, [True] * 8)
    low, high = summary["ci95"]
    assert low < summary["median"] < high and summary["n_reached"] == 8
    assert summary["ci95_coverage"] >= 0.95 and "order-statistic" in summary["ci95_method"]
    # 8 seeds: [X_(2), X_(7)] covers 93.0% only, so the interval is the range [X_(1), X_(8)] (99.2%)
    assert [low, high] == [min(times), max(times)] and summary["ci95_coverage"] == pytest.approx(0.9922, abs=1e-4)
    # 4 seeds cannot reach 95%: the range, labelled 87.5%
    four = median_interval([1, 2, 3, 4], [1, 2, 3, 4])
    assert four["ci95"] == [1, 4] and four["ci95_coverage"] == 0.875 and "87.5%" in four["ci95_method"]
    # 16 seeds: [X_(4), X_(13)] (97.9%), the exact interval the review computed for the demo
    sixteen = median_interval(np.arange(16), np.arange(16))
    assert sixteen["ci95"] == [3, 12] and sixteen["ci95_coverage"] == pytest.approx(0.9787, abs=1e-4)
    # half the seeds censored early: the median exists, the interval's upper end does not
    censored = landmark_summary([500, 600, 700, 800, 900, 900, 900, 900], [True] * 4 + [False] * 4)
    # (the curve stays at 0.5 after 800 with no later event: the stretch has no end, the median is its start)
    assert censored["median"] == 800 and censored["ci95"][1] is None
    assert landmark_summary([900] * 4, [False] * 4)["median"] is None  # none reached
    assert np.isnan(bootstrap_medians([], [], n=5)).all() and interval(np.array([])) is None


@pytest.mark.parametrize("n", [4, 5, 8, 16])
def test_stated_coverage_is_the_real_coverage(n):
    """Draw seeds from a known distribution many times: the share of intervals holding the true median is
    what `ci95_coverage` says (within simulation noise), at few seeds too."""
    rng = np.random.default_rng(n)
    true_median = 800.0
    hits, stated = 0, None
    for _ in range(4000):
        times = rng.lognormal(np.log(true_median), 0.4, size=n)
        result = median_interval(times, times)
        stated = result["ci95_coverage"]
        hits += result["ci95"][0] <= true_median <= result["ci95"][1]
    assert hits / 4000 == pytest.approx(stated, abs=0.015)


def test_interval_censored_landmarks_are_never_narrower_than_the_grid():
    """Copy tests every 50 steps: each jump is only known between two tests, and so is the interval's end."""
    jumps = np.array([333.0, 338.0, 341.0, 347.0, 352.0, 361.0, 372.0, 379.0, 390.0])
    low, high = np.floor(jumps / 50) * 50, np.ceil(jumps / 50) * 50
    exact = median_interval(jumps, jumps)["ci95"]
    bracketed = median_interval(low, high)["ci95"]
    assert bracketed[0] <= exact[0] and bracketed[1] >= exact[1]
    assert bracketed[0] % 50 == 0 and bracketed[1] % 50 == 0


def test_rates_and_means_carry_method_and_coverage():
    rate = proportion_interval(7, 8)
    assert rate["ci95"] == pytest.approx([0.4735, 0.9968], abs=1e-3) and "Clopper-Pearson" in rate["ci95_method"]
    assert proportion_interval(0, 8)["ci95"][0] == 0 and proportion_interval(8, 8)["ci95"][1] == 1
    assert proportion_interval(0, 0)["ci95"] is None
    mean = mean_interval([0.9, 0.95, 1.0, 0.98], bounds=(0, 1))
    assert mean["ci95"][0] < mean["mean"] < mean["ci95"][1] <= 1 and mean["ci95_coverage"] == 0.95


def test_jump_width_and_its_bounds_from_the_copy_tests():
    dense = _history([(s, 0.95 / (1 + np.exp(-(s - 500) / 20))) for s in range(0, 1001, 10)])
    width = jump_width(dense)
    # a logistic of scale 20 rises from 10% to 90% in 2 ln 9 x 20 = 88 steps
    assert width["jump_width"] == pytest.approx(88, abs=3)
    low, high = width["jump_width_bounds"]
    assert low <= width["jump_width"] <= high and high - low <= 20
    sparse = jump_width(_history([(s, 0.95 / (1 + np.exp(-(s - 500) / 20))) for s in range(0, 1001, 50)]))
    assert sparse["jump_width_bounds"][1] - sparse["jump_width_bounds"][0] >= 50  # the grid says no more
    assert jump_width(_history([(s, 0.1) for s in range(0, 500, 50)]))["jump_width"] is None  # no jump


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
