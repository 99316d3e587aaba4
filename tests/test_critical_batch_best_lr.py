"""The critical batch at each batch's best learning rate (issue #29 item 5, the rule of
docs/reproduction/cpu-critical-batch-tuned/PROTOCOL.md): the best rate's choice (smallest KM median, an
undefined median never best, ties to the smaller rate), the choice re-made in every bootstrap resample, the
fit recovering a known B_crit, the small-batch verdict and the comparison with the fixed rate's B_crit.
Synthetic conditions with known answers, no training."""

import numpy as np
import pytest

from grokcopy.experiments.conditions import summarize
from grokcopy.experiments.critical_batch import N_FIT_RESAMPLES, critical_batch
from grokcopy.experiments.critical_batch_tuned import (
    BIASED,
    DESCRIBES,
    DOES_NOT,
    NO_BIAS,
    best_rate,
    critical_batch_best_lr,
)
from grokcopy.experiments.report_text import critical_batch_best_lr_lines

S_MIN, B_CRIT = 220.0, 12_000.0  # tokens per step: 40 tokens per document
SPREAD = np.exp(0.08 * np.array([-1.5, -0.5, 0.5, 1.5]))  # four seeds, sigma ~0.1 in ln S


def curve(batch):
    return S_MIN * (1 + B_CRIT / (batch * 40))


def cond(jumps, *, batch, lr, steps=100_000):
    """A condition as group_conditions makes it from per-seed jump steps (None: censored at `steps`)."""
    tps = batch * 40
    per_seed = [{"jump_step": j, "jump_tokens": None if j is None else j * tps,
                 "jump_censored_at": steps if j is None else None, "tokens_per_step": tps, "steps": steps,
                 "final_exact_match": 0.9, "formation": []} for j in jumps]
    stats, samples = summarize(per_seed)
    return {"config": {"tokens_per_step": tps, "per_device_train_batch_size": batch, "learning_rate": lr},
            "stats": stats, "samples": samples, "runs": [{"stats": s} for s in per_seed]}


def sweep(factors: dict) -> dict:
    """{(batch, lr): factor}: the cell's seeds at factor x the curve (None: no seed jumps by 3,000 steps)."""
    return {f"B={b}, lr={lr:g}": cond([None] * 4, batch=b, lr=lr, steps=3_000) if f is None else
            cond(list(f * curve(b) * SPREAD), batch=b, lr=lr) for (b, lr), f in factors.items()}


# Sweep A's fixed rate 1.5e-3: B = 64 never jumps, B = 128 needs 3x the curve (more tokens than B = 256): the
# model's fewest-tokens batch is B = 256. The tuned rates put B = 64 and 128 back on the curve.
FIXED = {(64, 1.5e-3): None, (128, 1.5e-3): 3.0, **{(b, 1.5e-3): 1.0 for b in (256, 512, 1024, 2048)}}
TUNED = {(64, 0.375e-3): 1.5, (64, 0.75e-3): 1.0, (128, 0.375e-3): 1.6, (128, 0.75e-3): 1.0,
         (256, 0.375e-3): 2.0, (256, 0.75e-3): 1.5, (512, 0.75e-3): 1.6, (512, 3e-3): 1.4,
         (2048, 0.75e-3): 1.6, (2048, 3e-3): 1.4}  # every other rate >= 1.4x: never best in a resample


@pytest.fixture(scope="module")
def tuned_sweep():
    conditions = sweep({**FIXED, **TUNED})
    fixed = critical_batch(conditions, [l for l in conditions if conditions[l]["config"]["learning_rate"] == 1.5e-3])
    return conditions, fixed, critical_batch_best_lr(conditions, fixed=fixed)


def test_best_rate_rule():
    assert best_rate([500.0, 300.0, 400.0], [1e-3, 2e-3, 3e-3]) == 1  # the smallest median
    assert best_rate([300.0, 300.0], [3e-3, 1e-3]) == 1  # a tie: the smaller learning rate
    assert best_rate([None, 900.0], [1e-3, 2e-3]) == 1  # undefined is never best while another is defined
    assert best_rate(np.array([np.nan, 900.0, np.nan]), [1e-3, 2e-3, 3e-3]) == 1  # NaN: undefined too
    assert best_rate([None, np.nan], [1e-3, 2e-3]) is None


def test_absent_unless_two_batches_ran_more_than_one_rate():
    one = sweep({**FIXED, (64, 0.75e-3): 1.0})  # only B = 64 has a second rate
    assert critical_batch_best_lr(one) is None
    assert critical_batch_best_lr(sweep(FIXED)) is None  # one rate everywhere
    two = sweep({**FIXED, (64, 0.75e-3): 1.0, (128, 0.75e-3): 1.0})
    assert critical_batch_best_lr(two) is not None


def test_best_rate_per_batch_and_the_fit_recovers_b_crit(tuned_sweep):
    _, fixed, tuned = tuned_sweep
    best = {r["tokens_per_step"] // 40: r["best_learning_rate"] for r in tuned["batches"]}
    assert best == {64: 0.75e-3, 128: 0.75e-3, 256: 1.5e-3, 512: 1.5e-3, 1024: 1.5e-3, 2048: 1.5e-3}
    assert tuned["fitted"] == ["B=64, lr=0.00075", "B=128, lr=0.00075", *(f"B={b}, lr=0.0015"
                                                                          for b in (256, 512, 1024, 2048))]
    assert tuned["resolved"] and tuned["converged"] and tuned["fitted_range"] == [2560, 81920]
    assert tuned["n_seeds_fitted"] == 24 and tuned["n_censored_seeds_fitted"] == 0
    assert tuned["b_crit"] == pytest.approx(B_CRIT, rel=0.1) and tuned["s_min"] == pytest.approx(S_MIN, rel=0.1)
    low, high = tuned["b_crit_ci95"]
    assert low < B_CRIT < high < 2 * B_CRIT
    assert tuned["e_min"] == pytest.approx(tuned["s_min"] * tuned["b_crit"]) and 0.03 < tuned["sigma"] < 0.2
    for name in ("b_crit_ci95", "s_min_ci95", "e_min_ci95", "sigma_ci95"):
        assert len(tuned[name]) == 2 and tuned[f"{name}_coverage"] is None
        assert "percentile bootstrap" in tuned[f"{name}_method"] and "re-chosen" in tuned[f"{name}_method"]
    assert tuned["n_resamples"] == N_FIT_RESAMPLES and tuned["n_resamples_not_converged"] == 0
    # a clear best everywhere: chosen in every resample; a rate that never jumped never chosen
    for row in tuned["batches"]:
        counts = {r["learning_rate"]: r["n_chosen_resampled"] for r in row["rates"]}
        assert counts[row["best_learning_rate"]] == N_FIT_RESAMPLES and sum(counts.values()) == N_FIT_RESAMPLES
        assert row["n_resamples_none_defined"] == 0
    assert not fixed["e_min_batch_resampled"].keys() - {"B=256, lr=0.0015"}  # the fixed fit starts at B = 256


def test_small_batches_and_the_comparison_with_the_fixed_rate(tuned_sweep):
    conditions, fixed, tuned = tuned_sweep
    assert tuned["small_batches_below"] == fixed["e_min_batch"] == "B=256, lr=0.0015"
    small = tuned["small_batches"]
    assert [s["tokens_per_step"] for s in small] == [2560, 5120] and all(s["n_seeds"] == 4 for s in small)
    for s in small:
        low, high = s["predicted_ci95"]
        assert low < s["jump_step_median"] < high and s["within"] is True and s["predicted_ci95_coverage"] is None
        seed_low, seed_high = s["predicted_seed_ci95"]
        assert seed_low < low and high < seed_high  # one seed spreads wider than the median of four
        assert "bootstrap fit" in s["predicted_ci95_method"] and "sigma" in s["predicted_ci95_method"]
    assert tuned["verdict"] == DESCRIBES
    comparison = tuned["fixed_lr_comparison"]
    assert comparison["fixed_b_crit_ci95"] == fixed["b_crit_ci95"] and comparison["overlap"] is True
    assert comparison["verdict"] == NO_BIAS  # both fits recover the same curve
    far = {**fixed, "b_crit_ci95": [30_000.0, 40_000.0]}
    assert critical_batch_best_lr(conditions, fixed=far)["fixed_lr_comparison"]["verdict"] == BIASED
    alone = critical_batch_best_lr(conditions)  # no fixed-rate fit: nothing says which batches are small
    assert alone["small_batches"] == [] and alone["verdict"] == "not resolved" and alone["fixed_lr_comparison"] is None
    assert alone["b_crit"] == pytest.approx(tuned["b_crit"])


def test_a_small_batch_off_the_curve_is_not_described():
    """Even at its best rate B = 64 needs 4x the curve's steps (more tokens than B = 256): the tuned fit does
    not describe it, and the bias comparison is not read."""
    factors = {**FIXED, **TUNED, (64, 0.375e-3): 4.5, (64, 0.75e-3): 4.0}
    conditions = sweep(factors)
    fixed = critical_batch(conditions, [l for l in conditions if conditions[l]["config"]["learning_rate"] == 1.5e-3])
    tuned = critical_batch_best_lr(conditions, fixed=fixed)
    by_batch = {s["tokens_per_step"]: s for s in tuned["small_batches"]}
    assert by_batch[2560]["within"] is False and by_batch[2560]["jump_step_median"] > by_batch[2560]["predicted_ci95"][1]
    assert tuned["verdict"] == DOES_NOT
    assert tuned["fixed_lr_comparison"]["verdict"].startswith("not read")


def test_an_undefined_median_is_never_best_and_the_choice_is_re_made_per_resample():
    """At B = 64 the smaller rate jumps early in one seed of four (median undefined): the larger, later but
    defined, is best. At B = 512 two rates overlap: resamples choose either, and the counts say so."""
    factors = {**FIXED, **TUNED}
    conditions = sweep(factors)
    conditions["B=64, lr=0.000375"] = cond([0.5 * curve(64), None, None, None], batch=64, lr=0.375e-3, steps=3_000)
    conditions["B=512, lr=0.003"] = cond(list(curve(512) * np.exp(0.15 * np.array([-2.0, -0.5, 0.3, 2.0]))),
                                         batch=512, lr=3e-3)
    conditions["B=512, lr=0.0015"] = cond(list(curve(512) * np.exp(0.15 * np.array([-1.8, -0.3, 0.5, 1.5]))),
                                          batch=512, lr=1.5e-3)
    tuned = critical_batch_best_lr(conditions)
    rows = {r["tokens_per_step"] // 40: r for r in tuned["batches"]}
    assert rows[64]["best_learning_rate"] == 0.75e-3
    early = next(r for r in rows[64]["rates"] if r["learning_rate"] == 0.375e-3)
    assert early["jump_step_median"] is None and 0 < early["n_chosen_resampled"] < N_FIT_RESAMPLES / 2
    counts = {r["learning_rate"]: r["n_chosen_resampled"] for r in rows[512]["rates"]}
    assert counts[1.5e-3] > 0.15 * N_FIT_RESAMPLES and counts[3e-3] > 0.15 * N_FIT_RESAMPLES
    assert sum(counts.values()) == N_FIT_RESAMPLES and counts[0.75e-3] < 0.05 * N_FIT_RESAMPLES
    # a batch where no rate's median is defined is not fitted, but bounded
    conditions["B=64, lr=0.00075"] = cond([None] * 4, batch=64, lr=0.75e-3, steps=2_000)
    conditions["B=64, lr=0.000375"] = cond([None] * 4, batch=64, lr=0.375e-3, steps=2_500)
    tuned = critical_batch_best_lr(conditions)
    row = next(r for r in tuned["batches"] if r["tokens_per_step"] == 2560)
    assert row["best_learning_rate"] is None and not row["fitted"] and row["jump_step_lower_bound"] == 2_000
    assert row["n_resamples_none_defined"] == N_FIT_RESAMPLES and tuned["fitted_range"][0] == 5120


def test_batches_below_the_smallest_tuned_batch_are_not_fitted():
    """B = 32 ran only the fixed rate (never tuned): even though its seeds jumped, it stays out of the fit."""
    conditions = sweep({**FIXED, **TUNED, (32, 1.5e-3): 1.0})
    tuned = critical_batch_best_lr(conditions)
    row = tuned["batches"][0]
    assert row["tokens_per_step"] == 1280 and not row["tuned"] and not row["in_fit_range"] and not row["fitted"]
    assert row["best_learning_rate"] == 1.5e-3 and row["n_resamples_none_defined"] is None
    assert "B=32, lr=0.0015" not in tuned["fitted"] and tuned["fitted_range"][0] == 2560


def test_report_lines(tuned_sweep):
    _, _, tuned = tuned_sweep
    text = "\n".join(critical_batch_best_lr_lines(tuned))
    assert "## Critical batch at the best learning rate per batch" in text
    assert f"**{DESCRIBES}**" in text and f"**{NO_BIAS}**" in text
    assert "| 2,560 | 0.000375: " in text and f"best in {N_FIT_RESAMPLES}" in text
    assert "not reached (0/4" in text  # B = 64 at the fixed rate never jumped
    assert critical_batch_best_lr_lines(None) == []
