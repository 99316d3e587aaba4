"""The paper's claims as pure functions of condition statistics, and `grokcopy report` end to end on
synthetic run folders (histories, trainer state, run config) whose landmarks are known."""

import json
import math

import numpy as np
import pytest

from grokcopy.cli import main
from grokcopy.experiments.claims import (
    CONTRADICTED,
    NOT_RESOLVED,
    NOT_TESTABLE,
    SUPPORTED,
    claim_jump_follows_steps,
    claim_larger_lr_earlier,
    claim_loss_follows_tokens,
)
from grokcopy.experiments.conditions import family, summarize


def cond(config, jumps, *, steps=2000, loss_tokens=None, ems=None):
    """A condition as group_conditions makes it, from per-seed jump steps (None: censored at `steps`)."""
    tps = config.get("tokens_per_step") or 40 * 128
    per_seed = []
    for i, j in enumerate(jumps):
        lt = None if loss_tokens is None else loss_tokens[i % len(loss_tokens)]
        per_seed.append({"jump_step": j, "jump_tokens": None if j is None else j * tps,
                         "jump_censored_at": steps if j is None else None, "tokens_per_step": tps, "steps": steps,
                         "loss_target_step": None if lt is None else lt / tps, "loss_target_tokens": lt,
                         "loss_censored_at": None if lt is not None else steps,
                         "final_exact_match": (ems or [0.9])[i % len(ems or [0.9])], "formation": []})
    stats, samples = summarize(per_seed)
    return {"config": config, "stats": stats, "samples": samples, "runs": [{"stats": s} for s in per_seed]}


def noisy(centre, n=4, spread=0.05):
    return [centre * (1 + spread * k) for k in np.linspace(-1, 1, n)]


def batch_conditions(jumps_by_batch, loss_tokens_by_batch=None, batches=(64, 256, 1024)):
    out = {}
    for i, (b, jumps) in enumerate(zip(batches, jumps_by_batch)):
        config = {"tokens_per_step": b * 40, "per_device_train_batch_size": b, "learning_rate": 3e-3}
        out[f"bs={b}"] = cond(config, jumps, loss_tokens=None if loss_tokens_by_batch is None else
                              loss_tokens_by_batch[i])
    return out


def test_claim_a_steps_aligned_is_supported_tokens_aligned_is_contradicted():
    aligned = claim_jump_follows_steps(batch_conditions([noisy(800), noisy(810), noisy(790)]))
    assert aligned["verdict"] == SUPPORTED
    low, high = aligned["numbers"]["slope_ci95"]
    assert -0.2 < low <= aligned["numbers"]["slope"] <= high < 0.2
    tokens = claim_jump_follows_steps(batch_conditions([noisy(1600), noisy(400), noisy(100)]))  # S ~ 1/B
    assert tokens["verdict"] == CONTRADICTED and tokens["numbers"]["slope"] == pytest.approx(-1, abs=0.05)
    # noisy seeds: the interval straddles the band's edge
    wide = claim_jump_follows_steps(batch_conditions([noisy(900, spread=0.9), noisy(700, spread=0.9),
                                                      noisy(500, spread=0.9)]))
    assert wide["verdict"] == NOT_RESOLVED
    few = claim_jump_follows_steps(batch_conditions([noisy(800, n=2)] * 3))
    assert few["verdict"] == NOT_RESOLVED and "fewer than 3 seeds" in few["evidence"]


def test_claim_a_censored_seeds_are_kept_and_can_refute():
    # bs=64 trained 1,200 steps and jumped in 1 of 4 seeds; bs=256 jumped at ~250 in all: not aligned in steps
    conditions = batch_conditions([[600, None, None, None], noisy(250), noisy(240)])
    conditions["bs=64"] = cond(conditions["bs=64"]["config"], [600, None, None, None], steps=1200)
    result = claim_jump_follows_steps(conditions)
    assert result["verdict"] == CONTRADICTED and result["numbers"]["outran"] == ["bs=64"]
    assert "bs=64: not reached [" in result["evidence"] and "(1/4)" in result["evidence"]


def test_claim_b_loss_in_tokens():
    same_tokens = [noisy(4e6)] * 3
    assert claim_loss_follows_tokens(batch_conditions([noisy(800)] * 3, same_tokens))["verdict"] == SUPPORTED
    same_steps = [noisy(4e6 * b / 64) for b in (64, 256, 1024)]  # the loss target at the same step
    assert claim_loss_follows_tokens(batch_conditions([noisy(800)] * 3, same_steps))["verdict"] == CONTRADICTED


def lr_conditions(jumps_by_lr, steps=2000):
    return {f"lr={lr:g}": cond({"learning_rate": lr, "tokens_per_step": 5120}, jumps, steps=steps)
            for lr, jumps in zip((1.5e-3, 3e-3, 6e-3), jumps_by_lr)}


def test_claim_c_larger_learning_rate_groks_earlier():
    assert claim_larger_lr_earlier(lr_conditions([noisy(1400), noisy(900), noisy(600)]))["verdict"] == SUPPORTED
    assert claim_larger_lr_earlier(lr_conditions([noisy(600), noisy(900), noisy(1400)]))["verdict"] == CONTRADICTED
    # the largest learning rate never jumps within 2,000 steps, past the smaller ones' jumps: contradicted
    hot = claim_larger_lr_earlier(lr_conditions([noisy(600), noisy(900), [None] * 4]))
    assert hot["verdict"] == CONTRADICTED and hot["numbers"]["outran"] == ["lr=0.006"]
    flat = claim_larger_lr_earlier(lr_conditions([noisy(900, spread=0.6)] * 3))
    assert flat["verdict"] == NOT_RESOLVED
    assert claim_larger_lr_earlier(batch_conditions([noisy(1)] * 3))["verdict"] == NOT_TESTABLE


def reg_runs(jumps, final, at_300=None):
    """A condition's runs as copy histories every 10 steps to 700: exact match 0 before the jump step,
    then `final` (None: never jumps); `at_300` overrides the reading at step 300."""
    runs = []
    for jump, em in zip(jumps, final):
        history = [{"step": s, "exact_match": 0.0 if jump is None or s < jump else em} for s in range(0, 701, 10)]
        if at_300 is not None:
            history[30]["exact_match"] = at_300
        runs.append({"data": {"copy_history": history}})
    return runs


def reg_conditions(rows: dict) -> dict:
    configs = {"baseline": (0.0, 0.0), "dropout": (0.1, 0.0), "wd": (0.0, 0.6)}
    return {label: {"config": {"attention_dropout": configs[label][0], "weight_decay": configs[label][1],
                               "learning_rate": 1.5e-3}, "runs": runs, "n": len(runs)} for label, runs in rows.items()}


def test_claim_d_by_the_protocols_rule_exact_permutation_tests_with_holm():
    from grokcopy.experiments.regularization import claim_regularization, compare, holm

    base = reg_runs([340, 350, 330, 360, 345, 355, 335, 365], [0.95] * 8)
    earlier = reg_runs([200, 210, 220, 230, 240, 250, 260, 270], [0.95] * 8)
    same = reg_runs([345, 350, 330, 360, 340, 355, 335, 365], [0.95] * 8)
    never = reg_runs([None] * 8, [0.1] * 8)
    result = claim_regularization(reg_conditions({"baseline": base, "dropout": earlier, "wd": earlier}))
    assert result["verdict"] == "supported"
    jump = next(t for t in result["numbers"]["tests"] if t["condition"] == "dropout" and t["readout"] == "jump_step")
    assert jump["p_value"] == pytest.approx(2 / 12870) and jump["shift"] < 0 and jump["direction"] == "helps"
    result = claim_regularization(reg_conditions({"baseline": base, "dropout": same, "wd": same}))
    assert result["verdict"] == "not resolved"
    assert {c["verdict"] for c in result["numbers"]["conditions"].values()} == {"no effect resolved"}
    result = claim_regularization(reg_conditions({"baseline": base, "dropout": never, "wd": earlier}))
    assert result["verdict"] == "contradicted"  # a dropout that never jumps (censored: ranked last)
    assert result["numbers"]["conditions"]["dropout"]["verdict"] == "contradicted"
    four = claim_regularization(reg_conditions({"baseline": base[:4], "dropout": earlier[:4], "wd": earlier[:4]}))
    assert four["verdict"].startswith("interim: fewer than 8 seeds")
    assert claim_regularization(reg_conditions({"dropout": earlier, "wd": earlier}))["verdict"].startswith("not testable")
    # the pieces: an exact p from all splits agrees with scipy's own Mann-Whitney where it is exact (no ties)
    from scipy.stats import mannwhitneyu

    x, y = [1.0, 2.5, 3.1, 4.7], [2.0, 5.0, 6.2, 7.3, 8.8]
    assert compare(x, y)["p_value"] == pytest.approx(mannwhitneyu(x, y, method="exact").pvalue)
    assert holm([0.01, 0.04, 0.03]) == [True, False, False] and holm([0.01, 0.02, 0.03]) == [True, True, True]


def test_family_picks_conditions_that_differ_only_in_the_claims_fields():
    def config(tokens, lr):  # configs as group_conditions makes them: the same fields everywhere
        return {"config": {"tokens_per_step": tokens, "per_device_train_batch_size": tokens // 1024,
                           "learning_rate": lr}}

    mixed = {"bs=32": config(32768, 2e-4), "bs=128": config(131072, 2e-4), "lr=0.0001": config(65536, 1e-4),
             "lr=0.0002": config(65536, 2e-4), "lr=0.0004": config(65536, 4e-4)}  # bs=64 is lr=0.0002
    assert sorted(family(mixed, ("learning_rate",), key="learning_rate")) == ["lr=0.0001", "lr=0.0002", "lr=0.0004"]
    assert sorted(family(mixed, ("tokens_per_step", "per_device_train_batch_size"), key="tokens_per_step")) == [
        "bs=128", "bs=32", "lr=0.0002"]


# --- end to end -------------------------------------------------------------------------------

def write_run(folder, *, batch, seed, jump, plateau=300, steps=2000, lr=3e-3, dropout=None, block=40):
    """A run folder as grokcopy writes it: loss decays to a plateau at ~`plateau`, EM jumps at `jump`."""
    folder.mkdir(parents=True)
    per_step = batch * block
    shift = 7 * seed
    log = [{"step": s, "loss": 2.0 + 4.0 * math.exp(-s / (plateau / 3.0)) + 0.01 * seed, "learning_rate": lr}
           for s in range(10, steps + 1, 10)]
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": steps, "log_history": log}))
    evals = [0, 1, 2, 4, 8, 16, 32, 64] + list(range(100, steps + 1, 100))
    copy = [{"step": s, "tokens": s * per_step, "loss": None, "exact_match": 0.95 / (1 + math.exp(-(s - jump - shift)
                                                                                                   / 40)),
             "token_accuracy": 0.5} for s in evals]
    (folder / "copy_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in copy))
    induction = [{"step": s, "tokens": s * per_step, "num_layers": 2, "num_heads": 2,
                  "induction": [[0.01, 0.02], [0.0, 0.9 if s >= jump else 0.05]]} for s in range(0, steps + 1, 200)]
    (folder / "induction_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in induction))
    config = {"model": {"preset": "demo", "attention_dropout": dropout},
              "data": {"block_size": block, "demo_corpus": True},
              "training": {"output_dir": str(folder), "logging_dir": str(folder / "logs"), "seed": seed,
                           "learning_rate": lr, "per_device_train_batch_size": batch, "weight_decay": 0.0,
                           "max_steps": steps, "save_steps": 200, "report_to": []},
              "world_size": 1, "tokens_per_step": per_step}
    (folder / "run_config.json").write_text(json.dumps(config))
    (folder / "summary.json").write_text(json.dumps({"steps": steps}))  # written when a run finishes
    return folder


def test_report_end_to_end_two_batch_sizes_four_seeds(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    seeds = (0, 1, 2, 3)
    for batch in (64, 256):
        for seed in seeds:
            write_run(sweep / f"bs{batch}-seed{seed}", batch=batch, seed=seed, jump=800,
                      plateau=300 if batch == 256 else 1200)  # jump in steps, loss in tokens
    (sweep / "sweep.json").write_text(json.dumps({"members": [{"name": f"bs{b}-seed{s}"} for b in (64, 256)
                                                              for s in seeds] + [{"name": "never-ran"}]}))
    out = tmp_path / "report"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8 runs in 2 conditions" in printed and "B=64: 4/4 jumped; median jump step" in printed
    for name in ("curves.png", "induction_formation.png", "report.md", "report.json"):
        assert (out / name).stat().st_size > (10_000 if name.endswith(".png") else 100), name
    assert not (out / "learning_rate.png").exists() and not (out / "regularization.png").exists()
    record = json.loads((out / "report.json").read_text())
    # a batch sweep is labelled by its batch (sequences per step), its config by every field that differs
    assert sorted(c["label"] for c in record["conditions"]) == ["B=256", "B=64"]
    claims = {c["claim"]: c for c in record["claims"]}
    assert claims["a"]["verdict"] == SUPPORTED and claims["b"]["verdict"] == SUPPORTED
    assert claims["c"]["verdict"] == NOT_TESTABLE and claims["d"]["verdict"] == NOT_TESTABLE
    bs64 = next(c for c in record["conditions"] if c["label"] == "B=64")
    assert bs64["n_runs"] == 4 and bs64["n_jumped"] == 4
    assert bs64["jump_step_median"] == pytest.approx(800 + 7, abs=15)  # seeds shift the jump by 0, 7, 14, 21
    low, high = bs64["jump_step_ci95"]
    # 4 seeds: the range of the copy tests around their jumps, labelled with its 87.5% coverage
    assert low <= bs64["jump_step_median"] <= high and high - low <= 200
    assert bs64["stats"]["jump_step_ci95_coverage"] == 0.875
    assert all(r["jump_step"] is not None and r["censored_at"] is None for r in record["runs"])
    assert record["settings"]["loss_target"] > 2.0
    report = (out / "report.md").read_text()
    assert "| run | condition | seed |" in report and "| bs64-seed1 | B=64 | 1 |" in report
    assert "| condition | config | runs | jumped |" in report and "| B=256 | B=256, bs=256 | 4 | 4 |" in report
    assert f"**{SUPPORTED}**" in report and f"**{NOT_TESTABLE}**" in report and "![curves.png](curves.png)" in report
    assert "## Induction-head formation" in report


def test_one_batch_split_two_ways_keeps_the_split_in_its_label(tmp_path):
    """B = 512 as 128 x 4 micro-batches and as 256 x 2: the split is what differs, so the label says it."""
    for per_device, accum in ((128, 4), (256, 2)):
        for seed in (0, 1):
            run = write_run(tmp_path / f"split{per_device}-seed{seed}", batch=per_device, seed=seed, jump=600)
            config = json.loads((run / "run_config.json").read_text())
            config["training"]["gradient_accumulation_steps"] = accum
            config["tokens_per_step"] = per_device * accum * 40
            (run / "run_config.json").write_text(json.dumps(config))
    out = tmp_path / "report"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 0
    labels = sorted(c["label"] for c in json.loads((out / "report.json").read_text())["conditions"])
    assert labels == ["accum=2, bs=256", "accum=4, bs=128"], labels


def test_report_keeps_censored_and_unfinished_runs(tmp_path):
    runs = [write_run(tmp_path / f"seed{s}", batch=128, seed=s, jump=600) for s in range(3)]
    runs.append(write_run(tmp_path / "seed3", batch=128, seed=3, jump=5000))  # never jumps within 2,000 steps
    stopped = write_run(tmp_path / "seed4", batch=128, seed=4, jump=5000, steps=1000)
    config = json.loads((stopped / "run_config.json").read_text())
    config["training"]["max_steps"] = 2000  # configured for 2,000 steps, stopped at 1,000
    (stopped / "run_config.json").write_text(json.dumps(config))
    out = tmp_path / "report"
    assert main(["report", *map(str, runs + [stopped]), "--out", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())
    by_name = {r["name"]: r for r in record["runs"]}
    assert by_name["seed3"]["jump_step"] is None and by_name["seed3"]["censored_at"] == 2000
    assert by_name["seed4"]["censored_at"] == 1000 and by_name["seed4"]["stats"]["finished"] is False
    [condition] = record["conditions"]
    assert (condition["n_runs"], condition["n_jumped"]) == (5, 3)
    assert condition["jump_step_median"] is not None  # 3 of 5 jumped: the KM median exists
    assert condition["stats"]["n_unfinished"] == 1
    report = (out / "report.md").read_text()
    assert "> 2,000 (censored)" in report and "**no**" in report


def test_report_learning_rate_and_regularization_panels(tmp_path):
    runs = []
    for lr, jump in ((1.5e-3, 1400), (6e-3, 600)):
        runs += [write_run(tmp_path / f"lr{lr:g}-{s}", batch=128, seed=s, jump=jump, lr=lr) for s in range(3)]
    runs += [write_run(tmp_path / f"dropout-{s}", batch=128, seed=s, jump=300, lr=6e-3, dropout=0.1)
             for s in range(3)]
    out = tmp_path / "report"
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0
    assert (out / "learning_rate.png").is_file() and (out / "regularization.png").is_file()
    record = json.loads((out / "report.json").read_text())
    # labelled where they depart from what most conditions share: lr=0.006 without dropout is the baseline
    assert sorted(c["label"] for c in record["conditions"]) == ["attention_dropout=0.1", "baseline", "lr=0.0015"]
    claims = {c["claim"]: c for c in record["claims"]}
    assert claims["c"]["verdict"] == SUPPORTED
    assert claims["d"]["verdict"] == "interim: fewer than 8 seeds in baseline; attention_dropout=0.1"  # its protocol
    assert claims["d"]["numbers"]["baseline"] == "baseline"
    assert "| baseline | attention_dropout=0, lr=0.006 | 3 | 3 |" in (out / "report.md").read_text()


def test_report_on_one_run_has_figures_table_and_nothing_testable(tmp_path):
    run = write_run(tmp_path / "demo", batch=128, seed=0, jump=600)
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out), "--jump-threshold", "0.8", "--loss-target", "2.5"]) == 0
    record = json.loads((out / "report.json").read_text())
    assert [c["label"] for c in record["conditions"]] == ["demo"]
    assert all(c["verdict"] == NOT_TESTABLE for c in record["claims"])
    assert record["settings"]["jump_threshold"] == 0.8 and record["settings"]["loss_target"] == 2.5
    assert record["runs"][0]["jump_step"] > 600  # 0.8 of the 0.95 plateau: after the sigmoid's centre
    assert (out / "curves.png").is_file() and "| demo | demo | 0 |" in (out / "report.md").read_text()


def test_report_errors_are_one_line(tmp_path, capsys):
    for args, needle in (([str(tmp_path / "nowhere")], "not a folder"), ([str(tmp_path)], "no run in it")):
        with pytest.raises(SystemExit) as exit_info:
            main(["report", *args, "--out", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("grokcopy: error:") and needle in err[0]


def test_report_on_a_real_training_run(corpus_file, tmp_path):
    """What `grokcopy train` writes (run_config.json, trainer_state.json, histories) is what the report reads."""
    from conftest import tiny_config

    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    run = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, run, induction_eval_steps=4)))
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    record = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(record["runs"]) == 1 and len(record["conditions"]) == 1
    assert record["conditions"][0]["stats"]["steps"] == 8 and record["runs"][0]["stats"]["finished"] is True
    assert all(c["verdict"] == NOT_TESTABLE for c in record["claims"])
    assert (tmp_path / "report" / "curves.png").stat().st_size > 10_000
    assert "| layer |" in (tmp_path / "report" / "report.md").read_text()


def test_critical_batch_fit_recovers_mccandlish_curve_and_reads_the_regimes(tmp_path):
    from grokcopy.experiments.critical_batch import critical_batch, fit_critical_batch

    s_min, b_crit = 300.0, 20_000.0
    batches = [1280 * 4**k for k in range(5)]  # 32 ... 8192 documents of 40 tokens
    exact = [s_min * (1 + b_crit / b) for b in batches]
    assert fit_critical_batch(batches, exact) == pytest.approx((s_min, b_crit), rel=0.01)
    conditions = {f"bs={b // 40}": cond({"tokens_per_step": b, "per_device_train_batch_size": b // 40,
                                          "learning_rate": 3e-3}, noisy(s, spread=0.03), steps=100_000)
                  for b, s in zip(batches, exact)}
    fit = critical_batch(conditions, list(conditions))
    assert fit["resolved"] and fit["b_crit"] == pytest.approx(b_crit, rel=0.1)
    low, high = fit["b_crit_ci95"]
    assert low < b_crit < high and fit["e_min"] == pytest.approx(fit["s_min"] * fit["b_crit"])
    regimes = [s["regime"] for s in fit["local_slopes"]]
    assert regimes[0] == "tokens govern" and regimes[-1] == "steps govern"  # 1,280 << B_crit << 327,680
    from grokcopy.experiments.batch_figures import collapse_figure

    for c in conditions.values():  # the collapse plot draws every seed: runs as group_conditions makes them
        c["runs"] = [{"stats": {"jump_step": s}} for s in noisy(c["stats"]["jump_step_median"], spread=0.03)]
    assert collapse_figure(conditions, fit, tmp_path / "collapse.png").stat().st_size > 10_000
    # a batch where no seed jumped is no point of the fit but a bound, checked against it, never dropped: the
    # largest never jumping by step 5,000 where the curve says ~320 fails the model; the smallest by 1,000
    # (~5,000 predicted) is no conflict; by 50,000 (more tokens than any other batch needed) it lies below the
    # batch with the fewest tokens to the jump, where the model does not apply
    big = "bs=8192"
    for label, steps, where, fails in ((big, 5_000, "censored", True), ("bs=32", 1_000, "censored", False),
                                       ("bs=32", 50_000, "below_fewest_tokens", None)):
        trial = dict(conditions, **{label: cond(conditions[label]["config"], [None] * 4, steps=steps)})
        fit = critical_batch(trial, list(trial))
        assert fit["resolved"] and label not in fit["fitted"] and len(fit["fitted"]) == 4
        (bound,) = fit[where]
        assert bound["label"] == label and (fails is None or bound["below_model"] is fails)
        if where == "censored":
            assert bound["steps_without_jump"] == steps
    assert fit["e_min_batch"] == "bs=128" and fit["below_fewest_tokens"][0]["jump_tokens_lower_bound"] == 64_000_000
    two = {k: c for k, c in conditions.items() if k in ("bs=32", "bs=128")}
    two["bs=32"] = cond(two["bs=32"]["config"], [None] * 4, steps=1_000)
    assert critical_batch(two, list(two))["resolved"] is False  # one batch with a jump: no fit


def test_censored_fit_uses_the_seeds_that_never_jumped(tmp_path):
    """Half the seeds of the two smallest batches never jump within a budget just past the curve: their
    medians are fragile, but as censored seeds they still say 'later than the budget', and the fit over every
    seed recovers the curve. Dropping them (fitting the jumped seeds only) would read B_crit too small."""
    from grokcopy.experiments.critical_batch import critical_batch

    s_min, b_crit = 300.0, 20_000.0
    conditions = {}
    for b in [2560 * 2**k for k in range(6)]:  # 64 ... 2,048 documents
        truth = s_min * (1 + b_crit / b)
        spread = np.exp(np.linspace(-0.3, 0.3, 6))  # sigma ~0.22 in ln S
        budget = truth * 1.05 if b < 10_000 else truth * 10
        jumps = [t if t <= budget else None for t in truth * spread]
        conditions[f"B={b // 40}"] = cond({"tokens_per_step": b, "per_device_train_batch_size": b // 40}, jumps,
                                          steps=int(budget))
    fit = critical_batch(conditions, list(conditions))
    assert fit["resolved"] and fit["n_censored_seeds_fitted"] >= 4 and not fit["censored"]
    assert fit["b_crit"] == pytest.approx(b_crit, rel=0.25) and fit["s_min"] == pytest.approx(s_min, rel=0.15)
    low, high = fit["b_crit_ci95"]
    assert low < b_crit < high and 0.1 < fit["sigma"] < 0.4
    jumped_only = {k: cond(c["config"], [r["stats"]["jump_step"] for r in c["runs"]
                                         if r["stats"]["jump_step"] is not None], steps=c["stats"]["steps"])
                   for k, c in conditions.items()}
    assert critical_batch(jumped_only, list(jumped_only))["b_crit"] < 0.8 * fit["b_crit"]


def test_a_censored_batch_is_bounded_by_most_of_its_seeds_not_its_longest():
    """One seed trained to 50,000 steps and three stopped at 200 (a partial sweep): the median is only known
    to lie beyond 200, so the fit's prediction (~5,000 steps) is no conflict (found in review)."""
    from grokcopy.analysis.survival import median_lower_bound
    from grokcopy.experiments.critical_batch import critical_batch

    assert median_lower_bound([50_000, 200, 200, 200], [False] * 4) == 200
    assert median_lower_bound([50_000, 9_000, 8_000, 200], [False, False, True, False]) == 8_000
    assert median_lower_bound([100, 200, 300], [True, True, False]) is None  # defined: 200
    s_min, b_crit = 300.0, 20_000.0
    batches = [1280 * 4**k for k in range(1, 5)]
    conditions = {f"B={b // 40}": cond({"tokens_per_step": b, "per_device_train_batch_size": b // 40},
                                       noisy(s_min * (1 + b_crit / b), spread=0.03), steps=100_000) for b in batches}
    partial = cond({"tokens_per_step": 1280, "per_device_train_batch_size": 32}, [None] * 4, steps=200)
    partial["stats"]["jump_step_lower_bound"] = 200  # what summarize gives for 50,000 / 200 / 200 / 200
    (bound,) = critical_batch({**conditions, "B=32": partial}, [*conditions, "B=32"])["censored"]
    assert bound["steps_without_jump"] == 200 and bound["below_model"] is False


def test_a_censored_cell_never_reads_as_the_opposite_effect():
    """LR 0.75e-3 jumps at 1,100, 3e-3 at 300, 6e-3 never by 1,200: entered at 1,200 the slope is negative,
    but the largest rate is the latest of all: the bound only says the slope is at least that, so "earlier"
    must not be read (found in review)."""
    from grokcopy.experiments.batch_figures import lr_batch_grid

    def row(batch):
        cells = {0.00075: [1100, 1110, 1090, 1105], 0.003: [300, 310, 295, 305], 0.006: [None] * 4}
        return {f"lr={lr}, B={batch}": cond({"learning_rate": lr, "tokens_per_step": batch * 40,
                                             "per_device_train_batch_size": batch}, jumps, steps=1200)
                for lr, jumps in cells.items()}
    grid = lr_batch_grid({**row(64), **row(512)})
    assert all(e["verdict"] == "not resolved (censored)" and e["slope"] < 0 for e in grid["lr_effect"])
    assert grid["sign_flips"] is False
    never = [c for c in grid["cells"] if c["learning_rate"] == 0.006]
    assert all(c["jump_step_median"] is None and c["jump_step_lower_bound"] == 1200 for c in never)  # "> 1,200"


def test_neighbouring_learning_rates_show_the_sign_a_u_shaped_row_hides(tmp_path):
    """Small batch: 1e-3 jumps at 1,000, 2e-3 never by 5,000 (larger LR later). Large batch: 1e-3 at 400,
    2e-3 at 200, 4e-3 at 410 (U-shaped: the whole-row slope is ~0). Only the neighbours show that the sign of
    1e-3 -> 2e-3 flips with the batch; one seed is never an interval."""
    from grokcopy.experiments.batch_figures import _effect_text, lr_batch_figure, lr_batch_grid
    from grokcopy.experiments.batch_figures import lr_effect_table as _lr_effect_table

    def cells(batch, jumps, steps):
        return {f"lr={lr}, B={batch}": cond({"learning_rate": lr, "tokens_per_step": batch * 40,
                                             "per_device_train_batch_size": batch}, runs, steps=steps)
                for lr, runs in jumps.items()}
    small = cells(64, {1e-3: noisy(1000, spread=0.05), 2e-3: [None] * 4}, 5000)
    large = cells(2048, {1e-3: noisy(400, spread=0.05), 2e-3: noisy(200, spread=0.05),
                         4e-3: noisy(410, spread=0.08)}, 1200)
    grid = lr_batch_grid({**small, **large})
    low, high = {e["tokens_per_step"]: e for e in grid["lr_effect"]}[64 * 40], \
        {e["tokens_per_step"]: e for e in grid["lr_effect"]}[2048 * 40]
    assert low["verdict"] == "larger LR later" and low["fastest_learning_rate"] == 1e-3
    assert high["verdict"] == "no clear effect" and high["fastest_learning_rate"] == 2e-3
    assert [p["verdict"] for p in high["pairs"]] == ["larger LR earlier", "larger LR later"]
    # the small batch's "later" rests on a censored cell (2e-3 never jumped): not resolved (issue #29, item 8)
    assert grid["sign_flips"] is False and grid["pair_sign_flips"] == []
    assert grid["pair_sign_flips_not_resolved"] == [[1e-3, 2e-3]]
    assert "Not resolved between neighbours (the flip rests on headless or censored cells): 0.001 -> 0.002." \
        in "\n".join(_lr_effect_table(grid))
    assert lr_batch_figure(grid, tmp_path / "lr_batch.png").is_file()

    assert all(p["level"] == pytest.approx(1 - 0.05 / 3) for e in grid["lr_effect"] for p in e["pairs"])

    # Found in review: each of these read as an effect.
    other = cells(512, {1e-3: [500]}, 5000)
    two_seeds = lr_batch_grid(cells(64, {1e-3: [1000, 1000], 2e-3: [1050, 1050]}, 5000) | other)
    assert two_seeds["lr_effect"][0]["verdict"] == "not resolved (fewer than 3 seeds)"
    assert two_seeds["lr_effect"][0]["ci"] is None
    same = lr_batch_grid(cells(64, {1e-3: [1000, 1100, 1200], 2e-3: [1000, 1100, 1200]}, 5000) | other)
    assert same["lr_effect"][0]["verdict"] == "no clear effect"  # identical resamples: a slope of +-1e-15
    # 2e-3's median (520) is lost in a third of its resamples: they must widen the interval, not vanish
    fragile = lr_batch_grid(cells(64, {1e-3: [1000, 1010, 990, 1005], 2e-3: [500, 520, None, None]}, 5000) | other)
    effect = fragile["lr_effect"][0]
    assert effect["verdict"] == "no clear effect" and effect["ci"][1] is None and effect["slope"] < 0
    assert _effect_text(effect).endswith(", inf] (no clear effect)")


def test_demo_criteria_rate_and_the_held_out_seeds(tmp_path):
    runs = [write_run(tmp_path / f"seed{s}", batch=128, seed=s, jump=600 if s % 4 else 5000) for s in range(8)]
    out = tmp_path / "report"
    assert main(["report", *map(str, runs), "--out", str(out), "--held-out-from", "4"]) == 0
    record = json.loads((out / "report.json").read_text())
    by_seed = {r["seed"]: r["stats"] for r in record["runs"]}
    assert [by_seed[s]["groks"] for s in range(8)] == [s % 4 != 0 for s in range(8)]
    assert by_seed[1]["loss_first"] and by_seed[1]["max_induction"] == 0.9
    split = record["seed_split"]
    assert (split["chosen_on"]["n_groks"], split["chosen_on"]["n_rated"]) == (3, 4)
    assert (split["held_out"]["n_groks"], split["held_out"]["n_rated"]) == (3, 4)
    assert record["conditions"][0]["stats"]["n_groks"] == 6
    assert "| >= 4 (held out, never used to choose) | 3/4 [" in (out / "report.md").read_text()


def test_held_out_rate_per_recipe(tmp_path):
    """A recipe screened on two seeds and dropped has no held-out seeds; the chosen one's held-out rate
    stands apart from it (the demo seed study: several recipes in one folder)."""
    for s in (1, 3):
        write_run(tmp_path / "screened" / f"seed{s}", batch=128, seed=s, jump=5000)
    for s in range(12):
        write_run(tmp_path / "chosen" / f"seed{s}", batch=256, seed=s, jump=5000 if s == 9 else 600)
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "screened"), str(tmp_path / "chosen"), "--out", str(out),
                 "--held-out-from", "8"]) == 0
    split = json.loads((out / "report.json").read_text())["seed_split"]
    rates = {c["label"]: (c["chosen_on"]["n_groks"], c["chosen_on"]["n_rated"], c["held_out"]["n_groks"],
                          c["held_out"]["n_rated"]) for c in split["by_condition"]}
    assert sorted(rates.values()) == [(0, 2, 0, 0), (8, 8, 3, 4)]
    assert (split["chosen_on"]["n_groks"], split["chosen_on"]["n_rated"]) == (8, 10)
    assert "| condition | chosen on | held out |" in (out / "report.md").read_text()


def _conditions_of_three_seeds(tmp_path, edit) -> list:
    """The report's conditions for three seeds of one configuration, each run_config changed by edit(config,
    seed) in a field that must not split them."""
    runs = []
    for seed in range(3):
        run = write_run(tmp_path / f"seed{seed}", batch=128, seed=seed, jump=600)
        config = json.loads((run / "run_config.json").read_text())
        edit(config, seed)
        (run / "run_config.json").write_text(json.dumps(config))
        runs.append(run)
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "out")]) == 0
    return json.loads((tmp_path / "out" / "report.json").read_text())["conditions"]


def test_demo_corpus_seeds_are_one_condition(tmp_path):
    """A demo corpus is generated from its config and the seed: its cache file name differs per seed but is
    not a condition."""
    def edit(config, seed):
        config["data"]["train_files"] = [f"/cache/demo_corpus_{seed:012x}.jsonl"]
    assert len(_conditions_of_three_seeds(tmp_path, edit)) == 1


def test_a_restarted_member_is_the_same_condition_as_its_seeds(tmp_path):
    """A sweep member restarted from scratch runs with overwrite_output_dir=True: bookkeeping, not a condition
    (sweep B's seed 2 was split off its cells by it)."""
    def edit(config, seed):
        config["training"]["overwrite_output_dir"] = seed == 2
    conditions = _conditions_of_three_seeds(tmp_path, edit)
    assert len(conditions) == 1 and "overwrite" not in json.dumps(conditions)


def test_lr_batch_grid_finds_a_sign_flip_and_the_plateau_noise_scale(tmp_path):
    """Synthetic runs with a known answer: at the small batch a larger LR jumps later, at the large batch
    earlier; every run logs a noise scale of 5,000 tokens on its plateau (and 50 after the jump)."""
    jumps = {(64, 1.5e-3): 600, (64, 6e-3): 1400, (1024, 1.5e-3): 900, (1024, 6e-3): 300}
    for (batch, lr), jump in jumps.items():
        for seed in range(4):
            run = write_run(tmp_path / f"bs{batch}-lr{lr}-seed{seed}", batch=batch, seed=seed, jump=jump, lr=lr)
            state = json.loads((run / "trainer_state.json").read_text())
            for row in state["log_history"]:
                row["gradient_noise_scale_tokens"] = 5000.0 if row["step"] < jump else 50.0
            (run / "trainer_state.json").write_text(json.dumps(state))
            if (batch, lr) == (1024, 6e-3):  # copies without an induction head: the other solution
                history = run / "induction_history.jsonl"
                history.write_text(history.read_text().replace("0.9]", "0.05]"))
    out = tmp_path / "report"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())
    grid = record["lr_batch"]
    assert {(c["learning_rate"], c["tokens_per_step"]): c["n_with_head"] for c in grid["cells"]} == \
        {(1.5e-3, 64 * 40): 4, (6e-3, 64 * 40): 4, (1.5e-3, 1024 * 40): 4, (6e-3, 1024 * 40): 0}
    assert grid["learning_rates"] == [1.5e-3, 6e-3] and grid["tokens_per_step"] == [64 * 40, 1024 * 40]
    effects = {e["tokens_per_step"]: e for e in grid["lr_effect"]}
    assert effects[64 * 40]["verdict"] == "larger LR later" and effects[64 * 40]["slope"] > 0
    assert effects[1024 * 40]["verdict"] == "larger LR earlier" and effects[1024 * 40]["slope"] < 0
    # the large batch's "earlier" rests on the headless cell: not resolved (issue #29, item 8)
    assert grid["sign_flips"] is False
    assert grid["sign_flip_test"]["verdict"] == "not resolved (rests on headless or censored cells)"
    assert {(c["learning_rate"], c["tokens_per_step"], c["n_jumped"], c["n_runs"]) for c in grid["cells"]} == \
        {(lr, b * 40, 4, 4) for b, lr in jumps}
    noise = record["noise_scale"]
    assert noise["median_tokens"] == pytest.approx(5000.0)
    assert all(r["n_runs"] == 4 for r in noise["per_condition"])
    assert "lr_batch.png" in record["figures"] and (out / "lr_batch.png").stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "## Learning rate x batch" in text
    assert "Over whole rows: the sign flip is not resolved: it rests on headless or censored cells" in text
    assert "(4/4; 0/4 formed a head)" in text


def test_lr_batch_grid_counts_a_censored_cell_as_late_and_skips_single_rate_rows(tmp_path):
    """A learning rate that never jumps within its budget is the latest, not a missing point: at the small
    batch 6e-3 never jumps (budget 1,200 steps), so "larger LR later" must still be read. A batch with one
    learning rate (a batch-only member in the same folder) gives no learning-rate effect. The budget
    (max_steps) differs with the batch, as in a token-budget sweep: still one family."""
    cases = {(64, 1.5e-3, 1200): 600, (64, 3e-3, 1200): 580, (64, 6e-3, 1200): None,  # dropped, 6e-3 would look early
             (1024, 1.5e-3, 700): 400, (1024, 3e-3, 700): 250, (1024, 6e-3, 700): 150, (256, 1.5e-3, 900): 450}
    for (batch, lr, budget), jump in cases.items():
        for seed in range(4):
            write_run(tmp_path / f"bs{batch}-lr{lr}-seed{seed}", batch=batch, seed=seed, lr=lr, steps=budget,
                      jump=budget + 2000 if jump is None else jump)  # None: never within the budget
    out = tmp_path / "report"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())
    grid = record["lr_batch"]
    assert grid["tokens_per_step"] == [64 * 40, 256 * 40, 1024 * 40]
    effects = {e["tokens_per_step"]: e for e in grid["lr_effect"]}
    assert set(effects) == {64 * 40, 1024 * 40}
    assert effects[64 * 40]["verdict"] == "larger LR later" and len(effects[64 * 40]["censored_cells"]) == 1
    assert effects[1024 * 40]["verdict"] == "larger LR earlier"
    # the small batch's "later" needs the censored cell (without it 1.5e-3 -> 3e-3 reads earlier): not resolved
    assert grid["sign_flips"] is False and grid["sign_flip_test"]["rows"][0]["rests_on_flagged"]
    assert record["critical_batch"]["conditions"] and len(record["critical_batch"]["conditions"]) == 3


@pytest.mark.parametrize("order, verdict", [((None, 200, 400), "supported"), ((None, 400, 200), "contradicted")])
def test_shallow_to_deep_from_a_three_layer_formation(tmp_path, order, verdict):
    """Claim (e) on runs with a known order: layer 1 forms at 200 and layer 2 at 400 in every seed (supported),
    or the other way round (contradicted); layer 0 never forms (it is no layer that can, so it is left out)."""
    for seed in range(4):
        run = write_run(tmp_path / f"seed{seed}", batch=64, seed=seed, jump=500)
        rows = [{"step": step, "tokens": step * 64 * 40, "num_layers": 3, "num_heads": 2,
                 "induction": [[0.05 if at is None or step < at + 10 * seed else 0.8, 0.0] for at in order]}
                for step in range(0, 2001, 50)]
        (run / "induction_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 0
    claim = {c["claim"]: c for c in json.loads((out / "report.json").read_text())["claims"]}["e"]
    assert claim["verdict"] == verdict, claim["evidence"]
    (only,) = claim["numbers"]["conditions"].values()
    assert only["formed_layers"] == [1, 2] and only["pairs"][0]["order_known"] == 4


def test_shallow_to_deep_counts_a_seed_whose_shallow_layer_never_formed(tmp_path):
    """Seeds 0-2: layer 1 at 200, layer 2 at 400; seed 3: layer 2 at 100 and layer 1 never (by step 2,000):
    a known "deep first", so the claim is not supported (found in review: such a seed was ignored)."""
    for seed in range(4):
        run = write_run(tmp_path / f"seed{seed}", batch=64, seed=seed, jump=500)
        order = (None, None, 100) if seed == 3 else (None, 200, 400)
        rows = [{"step": step, "tokens": step * 64 * 40, "num_layers": 3, "num_heads": 2,
                 "induction": [[0.05 if at is None or step < at else 0.8, 0.0] for at in order]}
                for step in range(0, 2001, 50)]
        (run / "induction_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 0
    claim = {c["claim"]: c for c in json.loads((out / "report.json").read_text())["claims"]}["e"]
    (only,) = claim["numbers"]["conditions"].values()
    assert only["pairs"][0]["order_known"] == 4 and only["pairs"][0]["deep_strictly_first"] == 1
    assert claim["verdict"] == "not resolved", claim["evidence"]


def test_report_finds_runs_in_folders_of_folders(tmp_path):
    """docs/reproduction/demo-seeds/<recipe>/seed-N: one command reports every recipe's seeds."""
    for recipe, share in (("a", 0.0), ("b", 0.03)):
        for seed in (0, 1):
            run = write_run(tmp_path / "seeds" / recipe / f"seed-{seed}", batch=128, seed=seed, jump=600)
            config = json.loads((run / "run_config.json").read_text())
            config["data"]["demo_corpus_config"] = json.dumps({"num_documents": 1000, "newline_share": share})
            (run / "run_config.json").write_text(json.dumps(config))
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "seeds"), "--out", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())
    assert len(record["runs"]) == 4 and len(record["conditions"]) == 2
    # a JSON-object field is labelled by the key that differs, not by the whole object
    labels = sorted(c["label"] for c in record["conditions"])
    assert labels == ["demo_corpus_config.newline_share=0", "demo_corpus_config.newline_share=0.03"], labels


def _claim1_condition(jumps, loss_fall=100, widths=(40,), n=4):
    """Per-seed landmarks for claim (f): the loss's 80% fall at `loss_fall`, jumps at `jumps` (None: never)."""
    per_seed = []
    for i, j in enumerate(jumps[:n]):
        w = widths[i % len(widths)]
        per_seed.append({"jump_step": j, "jump_censored_at": None if j else 3000, "loss_80pct_fall_step": loss_fall,
                         "loss_first": j is not None and j > loss_fall, "jump_width": w if j else None,
                         "jump_width_bounds": [w, w] if j else None,
                         "plateau_steps": (j - w / 2 - loss_fall) if j else None,
                         "plateau_steps_bounds": [(j - w / 2 - loss_fall)] * 2 if j else None, "formation": []})
    stats, samples = summarize(per_seed)
    return {"config": {}, "stats": stats, "samples": samples, "runs": [{"stats": s} for s in per_seed]}


@pytest.mark.parametrize("jumps, widths, verdict", [
    ((500, 520, 480, 510), (40,), SUPPORTED),                  # loss first, jump quick after a long plateau
    ((500, 520, 480, 510), (600,), CONTRADICTED),              # a rise as slow as the wait: gradual, not a jump
    ((60, 70, 80, 500), (20,), CONTRADICTED),                  # copying before the loss's fall in 3/4
    ((None, None, None, 500), (40,), "loss first, no jump within the budget"),
    ((500, 520, None, None), (40,), NOT_RESOLVED),
])
def test_claim_f_loss_first_then_an_abrupt_jump(jumps, widths, verdict):
    from grokcopy.experiments.claims import claim_loss_first_then_jump

    claim = claim_loss_first_then_jump({"c": _claim1_condition(list(jumps), widths=widths)})
    assert claim["claim"] == "f" and claim["verdict"] == verdict, claim["evidence"]
    assert claim_loss_first_then_jump({"c": _claim1_condition([500, 510], n=2)})["verdict"] == NOT_TESTABLE
