"""Statistics of the critical-batch and learning-rate x batch sweeps (issue #29, items 4, 8, 9): the fit
range's rule carried by the bootstrap, the fit from every starting batch, the censored fit's convergence
check, the sign flip corrected for the comparisons made and not resting on headless or censored cells, and
the noise scale read on each run's own plateau. Synthetic conditions with known answers, no training."""

import numpy as np
import pytest

from grokcopy.experiments import critical_batch_fit
from grokcopy.experiments.batch_figures import (
    MIN_PLATEAU_POINTS,
    NOISE_SCALE_KEY,
    lr_batch_grid,
    lr_effect,
    lr_effect_table,
    noise_scale_summary,
    plateau_noise_scale,
    plateau_window,
)
from grokcopy.experiments.conditions import summarize
from grokcopy.experiments.critical_batch import N_FIT_RESAMPLES, critical_batch, fit_range
from grokcopy.experiments.critical_batch_fit import fit_censored

S_MIN, B_CRIT = 220.0, 12_000.0
SPREAD = np.linspace(-1, 1, 6)


def cond(jumps, *, batch, lr=1.5e-3, steps=100_000, heads=None):
    """A condition as group_conditions makes it from per-seed jump steps (None: censored at `steps`);
    `heads[i]` False: seed i formed no induction head (None: no induction scores at all)."""
    tps = batch * 40
    per_seed = []
    for i, j in enumerate(jumps):
        formation = [] if heads is None else [
            {"layer": 0, "formation_step": 100 if heads[i] else None, "formation_tokens": None,
             "censored_at": None if heads[i] else steps, "head": 0, "max_induction": 0.9 if heads[i] else 0.05}]
        per_seed.append({"jump_step": j, "jump_tokens": None if j is None else j * tps,
                         "jump_censored_at": steps if j is None else None, "tokens_per_step": tps, "steps": steps,
                         "final_exact_match": 0.9, "formation": formation})
    stats, samples = summarize(per_seed)
    return {"config": {"tokens_per_step": tps, "per_device_train_batch_size": batch, "learning_rate": lr},
            "stats": stats, "samples": samples, "runs": [{"stats": s} for s in per_seed]}


def curve(batch):
    return S_MIN * (1 + B_CRIT / (batch * 40))


def edge_flipping_sweep():
    """B = 256..2,048 on McCandlish's curve (B_crit 12,000 tokens); B = 128 off it, needing 1.03x the tokens of
    B = 256 in the median but with a wide seed spread, so that resamples of the seeds move the fewest-tokens
    edge between B = 128 and B = 256, and with B = 128 in the fit B_crit reads ~17k."""
    conditions = {f"B={b}": cond(list(curve(b) * (1 + 0.05 * SPREAD)), batch=b) for b in (256, 512, 1024, 2048)}
    tokens_256 = curve(256) * 256 * 40
    conditions["B=128"] = cond(list(1.03 * tokens_256 / (128 * 40) * (1 + 0.25 * SPREAD)), batch=128)
    return conditions


def test_fit_range_rule():
    # fewest tokens at index 2; index 0 needed more (defined), index 1 is only bounded above the edge's: both
    # below; index 3 jumped, index 4 never did
    edge, below, fitted = fit_range([9e6, None, 5e6, 6e6, None], [None, 7e6, None, None, 8e6],
                                    [True, True, True, True, False])
    assert edge == 2 and below == [True, True, False, False, False] and fitted == [False, False, True, True, False]
    edge, below, fitted = fit_range([None, 5e6, 5e6], [1e6, None, None], [True, True, True])  # tie: the smaller
    assert edge == 1 and below == [False, False, False] and fitted == [True, True, True]  # bound < edge: fitted


def test_the_fit_range_rule_is_carried_by_the_bootstrap():
    conditions = edge_flipping_sweep()
    fit = critical_batch(conditions, list(conditions))
    fixed = critical_batch(conditions, list(conditions), propagate_fit_range=False)
    assert fit["e_min_batch"] == fixed["e_min_batch"] == "B=256" and fit["fitted"] == ["B=256", "B=512", "B=1024",
                                                                                         "B=2048"]
    assert fit["b_crit"] == fixed["b_crit"] == pytest.approx(B_CRIT, rel=0.05)  # the point: as before
    moved = fit["e_min_batch_resampled"]
    assert set(moved) == {"B=128", "B=256"} and min(moved.values()) > 0.15 * N_FIT_RESAMPLES
    assert sum(moved.values()) == N_FIT_RESAMPLES and fixed["e_min_batch_resampled"] == {"B=256": N_FIT_RESAMPLES}
    # the resamples that start at B = 128 read B_crit ~17k: the interval carries the choice, the fixed one not
    assert fit["b_crit_ci95"][1] > 1.2 * fixed["b_crit_ci95"][1]
    assert fixed["b_crit_ci95"][0] < B_CRIT < fixed["b_crit_ci95"][1] < 1.15 * B_CRIT
    assert "re-applied in each resample" in fit["b_crit_ci95_method"]
    assert "fixed" in fixed["b_crit_ci95_method"] and "re-applied" not in fixed["b_crit_ci95_method"]
    assert fit["converged"] and fit["n_resamples_not_converged"] == fit["n_resamples_unfitted"] == 0


def test_every_interval_says_its_method_and_coverage():
    conditions = edge_flipping_sweep()
    conditions["B=8192"] = cond([None] * 4, batch=8192, steps=5_000)  # censored: a bound with a prediction
    fit = critical_batch(conditions, list(conditions))
    for name in ("b_crit_ci95", "s_min_ci95", "e_min_ci95", "sigma_ci95"):
        assert len(fit[name]) == 2 and fit[f"{name}_coverage"] is None
        assert "percentile bootstrap" in fit[f"{name}_method"] and "not guaranteed" in fit[f"{name}_method"]
    assert fit["local_slopes"] and all(len(s["ci95"]) == 2 and s["ci95_coverage"] is None and
                                       "bootstrap" in s["ci95_method"] for s in fit["local_slopes"])
    (bound,) = fit["censored"]
    assert bound["label"] == "B=8192" and bound["predicted_ci95_coverage"] is None
    assert "bootstrap" in bound["predicted_ci95_method"] and bound["below_model"] is True


def test_fit_range_sensitivity_rows():
    conditions = edge_flipping_sweep()
    conditions["B=64"] = cond([None] * 4, batch=64, steps=3_000)  # never jumped: starting there fits as B=128
    fit = critical_batch(conditions, list(conditions))
    rows = fit["fit_range_sensitivity"]
    assert [r["start"] for r in rows] == ["B=64", "B=128", "B=256", "B=512", "B=1024"]  # 1,024 leaves two batches
    assert rows[0]["fitted"] == rows[1]["fitted"] == ["B=128", "B=256", "B=512", "B=1024", "B=2048"]
    assert rows[0]["b_crit"] == pytest.approx(rows[1]["b_crit"])
    assert [r["chosen"] for r in rows] == [False, False, True, False, False]
    chosen = rows[2]
    assert chosen["b_crit"] == pytest.approx(fit["b_crit"]) and chosen["s_min"] == pytest.approx(fit["s_min"])
    assert rows[1]["b_crit"] > 1.3 * chosen["b_crit"]  # B = 128 in the fit pulls B_crit up
    assert all(r["b_crit"] == pytest.approx(B_CRIT, rel=0.1) for r in rows[2:]) and all(r["converged"] for r in rows)
    assert all(r["e_min"] == pytest.approx(r["s_min"] * r["b_crit"]) for r in rows)


def test_the_censored_fit_checks_its_convergence(monkeypatch):
    batches = np.repeat([10240.0, 20480.0, 40960.0, 81920.0], 4)
    steps = S_MIN * (1 + B_CRIT / batches) * np.exp(0.05 * np.tile(SPREAD[[0, 2, 3, 5]], 4))
    observed = np.ones(batches.size, dtype=bool)
    observed[0] = False  # one seed censored
    weights = np.vstack([np.ones(batches.size), np.zeros(batches.size)])
    thetas, converged = fit_censored(np.log(batches), np.log(steps), observed, weights)
    assert converged.tolist() == [True, False] and np.isnan(thetas[1]).all()  # a row with no weight: no fit
    assert np.exp(thetas[0, 1]) == pytest.approx(B_CRIT, rel=0.1)
    _, grad = critical_batch_fit._negative_log_likelihood(thetas[0], np.log(batches), np.log(steps), observed,
                                                          weights[0])
    assert np.abs(grad).max() < critical_batch_fit.GRADIENT_TOLERANCE * batches.size
    _, stopped = fit_censored(np.log(batches), np.log(steps), observed, weights[:1], max_iterations=1)
    assert stopped.tolist() == [False]  # stopped before the optimum: flagged, not passed off as a fit

    # the report carries the flag: with a tolerance no fit meets, nothing counts as converged
    monkeypatch.setattr(critical_batch_fit, "GRADIENT_TOLERANCE", 0.0)
    conditions = edge_flipping_sweep()
    fit = critical_batch(conditions, list(conditions))
    assert fit["resolved"] and fit["converged"] is False
    assert fit["n_resamples_not_converged"] == N_FIT_RESAMPLES and fit["b_crit_ci95"] is None
    assert f"0 of {N_FIT_RESAMPLES} resamples" in fit["b_crit_ci95_method"]


def _row(batch, jumps_by_lr, steps=5_000, heads_by_lr=None):
    return {f"lr={lr}, B={batch}": cond(jumps, batch=batch, lr=lr, steps=steps,
                                        heads=None if heads_by_lr is None else heads_by_lr[lr])
            for lr, jumps in jumps_by_lr.items()}


def test_a_sign_flip_is_corrected_for_the_batches_tested():
    """A weak "earlier" whose 95% interval excludes 0 but whose Bonferroni-adjusted one (3 batches tested)
    does not: the protocol's per-batch verdicts read earlier and later, which the uncorrected OR called a flip."""
    spread = np.linspace(-1, 1, 8)

    def weak(d, batch=2048):
        return _row(batch, {1e-3: list(400 * (1 + 0.15 * spread)),
                            2e-3: list(400 * (1 - d) * (1 + 0.15 * spread[::-1]))})
    corrected_level = 1 - 0.05 / 3
    for d in np.linspace(0.10, 0.20, 21):  # the smallest effect 95% reads and the corrected level does not
        row = weak(d)
        if (lr_effect(row, list(row))["verdict"] == "larger LR earlier"
                and lr_effect(row, list(row), level=corrected_level)["verdict"] == "no clear effect"):
            break
    else:
        pytest.fail("no effect between the two levels")
    later = _row(64, {1e-3: list(1000 * (1 + 0.05 * spread)), 2e-3: list(2000 * (1 + 0.05 * spread))})
    flat = _row(512, {1e-3: list(500 * (1 + 0.05 * spread)), 2e-3: list(500 * (1 + 0.05 * spread))})
    grid = lr_batch_grid({**later, **flat, **weak(d)})
    assert [e["verdict"] for e in grid["lr_effect"]] == ["larger LR later", "no clear effect", "larger LR earlier"]
    test = grid["sign_flip_test"]
    assert test["n_tests"] == 3 and test["level"] == pytest.approx(corrected_level) and "Bonferroni" in test["rule"]
    assert [c["verdict"] for c in test["rows"]] == ["larger LR later", "no clear effect", "no clear effect"]
    assert grid["sign_flips"] is False and test["verdict"] == "no flip shown"
    strong = lr_batch_grid({**later, **flat, **weak(0.4)})  # a clear effect survives the correction
    assert strong["sign_flips"] is True and strong["sign_flip_test"]["verdict"] == "flips"
    assert "Over whole rows: the sign flips with the batch (Bonferroni over the 3" in "\n".join(lr_effect_table(strong))


def test_a_flip_resting_on_headless_or_censored_cells_is_not_resolved():
    later = _row(64, {1e-3: list(np.linspace(950, 1050, 4)), 2e-3: list(np.linspace(1900, 2100, 4))},
                 heads_by_lr={1e-3: [True] * 4, 2e-3: [True] * 4})
    # at the large batch the larger learning rate copies early, but without an induction head
    headless = _row(2048, {1e-3: list(np.linspace(390, 410, 4)), 2e-3: list(np.linspace(190, 210, 4))},
                    heads_by_lr={1e-3: [True] * 4, 2e-3: [False, False, False, True]})
    grid = lr_batch_grid({**later, **headless})
    assert [e["verdict"] for e in grid["lr_effect"]] == ["larger LR later", "larger LR earlier"]  # as before
    assert grid["sign_flips"] is False
    assert grid["sign_flip_test"]["verdict"] == "not resolved (rests on headless or censored cells)"
    call = grid["sign_flip_test"]["rows"][1]
    assert call["rests_on_flagged"] and call["flagged_cells"] == {"lr=0.002, B=2048": "headless"}
    assert [c["headless"] for c in grid["cells"]] == [False, False, False, True]
    assert grid["pair_sign_flips"] == [] and grid["pair_sign_flips_not_resolved"] == [[1e-3, 2e-3]]
    text = "\n".join(lr_effect_table(grid))
    assert "the sign flip is not resolved: it rests on headless or censored cells" in text
    assert "lr=0.002, B=2048 headless" in text

    # a headless cell the direction does not need: 1e-3 -> 2e-3 already reads earlier with heads
    third = _row(2048, {4e-3: list(np.linspace(140, 160, 4))}, heads_by_lr={4e-3: [False] * 4})
    clean = {**later, **_row(2048, {1e-3: list(np.linspace(390, 410, 4)), 2e-3: list(np.linspace(190, 210, 4))},
                             heads_by_lr={1e-3: [True] * 4, 2e-3: [True] * 4}), **third}
    grid = lr_batch_grid(clean)
    assert grid["sign_flips"] is True and not grid["sign_flip_test"]["rows"][1]["rests_on_flagged"]

    # a censored cell: "later" at the small batch only because 2e-3 never jumped within its budget
    censored = _row(64, {1e-3: list(np.linspace(950, 1050, 4)), 2e-3: [None] * 4}, steps=5_000)
    grid = lr_batch_grid({**censored, **_row(2048, {1e-3: list(np.linspace(390, 410, 4)),
                                                   2e-3: list(np.linspace(190, 210, 4))})})
    assert [e["verdict"] for e in grid["lr_effect"]] == ["larger LR later", "larger LR earlier"]
    assert grid["sign_flips"] is False and grid["sign_flip_test"]["rows"][0]["flagged_cells"] == \
        {"lr=0.002, B=64": "censored"}
    assert grid["pair_sign_flips_not_resolved"] == [[1e-3, 2e-3]]


def noise_log(values_by_step):
    return [{"step": s, "loss": 2.0, NOISE_SCALE_KEY: v} for s, v in values_by_step]


def plateau_run(jump, fall=80, last=None):
    """Noise scale 1,000 while the callback's 100-step average still holds the loss's fall (to fall + 100),
    20,000 on the plateau, 50 after the jump; logged every 10 steps."""
    log = noise_log([(s, 1000.0 if s < fall + 100 else 20000.0 if s <= jump else 50.0)
                     for s in range(10, (last or int(jump) + 200) + 1, 10)])
    return log, {"loss_80pct_fall_step": fall, "jump_step": jump, "jump_censored_at": None}


def test_the_noise_scale_is_read_on_each_runs_own_plateau():
    log, stats = plateau_run(230)
    assert plateau_window(stats) == [180.0, 230.0]
    result = plateau_noise_scale(log, stats)
    # the old fixed window (half the jump step to the jump) held six values of the fall: median 10,500
    old = [r[NOISE_SCALE_KEY] for r in log if 0.5 * 230 <= r["step"] <= 230]
    assert np.median(old) == pytest.approx(10500.0)
    assert result == {"window": [180.0, 230.0], "n_points": 6, "median": 20000.0, "left_out": None}
    censored = {"loss_80pct_fall_step": 90, "jump_step": None, "jump_censored_at": 900}
    assert plateau_window(censored) == [190.0, 900.0]  # never jumped: to its last step

    short = plateau_noise_scale(*plateau_run(195))  # [180, 195]: two values
    assert short["n_points"] == MIN_PLATEAU_POINTS - 1 and short["median"] is None
    assert short["left_out"] == f"fewer than {MIN_PLATEAU_POINTS} values on the plateau"
    assert plateau_noise_scale(*plateau_run(150))["left_out"] == "no plateau window"  # shorter than the average
    assert plateau_noise_scale([], stats)["left_out"] == "no noise scale logged"

    def runs(*cases):
        return [{"name": f"seed{i}", "data": {"log_history": log}, "stats": s} for i, (log, s) in enumerate(cases)]
    by_label = {"B=256": {"runs": runs(plateau_run(480), plateau_run(500), plateau_run(195))},
                "B=2048": {"runs": runs(plateau_run(230), plateau_run(260), ([], stats))}}
    fit = {"conditions": ["B=256", "B=2048"], "tokens_per_step": [10240, 81920], "fitted": ["B=256", "B=2048"],
           "resolved": True, "b_crit": 12000.0, "b_crit_ci95": [10000.0, 15000.0]}
    summary = noise_scale_summary(by_label, fit)
    assert [(r["label"], r["n_runs"], r["n_left_out"], r["median"]) for r in summary["per_condition"]] == \
        [("B=256", 2, 1, 20000.0), ("B=2048", 2, 1, 20000.0)]
    assert [r["window"] for r in summary["per_condition"][1]["runs"]] == [[180.0, 230.0], [180.0, 260.0],
                                                                          [180.0, 230.0]]
    assert summary["n_runs_left_out"] == 2 and summary["left_out"] == {
        f"fewer than {MIN_PLATEAU_POINTS} values on the plateau": 1, "no noise scale logged": 1}
    assert "80%-loss-fall step + 100" in summary["window_rule"]
    assert summary["ratio"] == pytest.approx(20000.0 / 12000.0) and summary["within_b_crit_ci"] is False
