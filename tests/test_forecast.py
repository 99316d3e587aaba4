"""`grokcopy forecast` and `CopyForecastCallback`: forecasts from a run folder's records up to a step only, on
committed runs (the shipped reference set is fit on them), on a run with no induction analyses, and while a tiny
model trains in CopyTrainer and in a plain Trainer."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import GROKCOPY, assert_one_line_error, tiny_config

from grokcopy.experiments.forecast_evaluation import build_reference
from grokcopy.forecast.reference import Forecaster, forecast_run, shipped_forecaster
from grokcopy.run_dir import read_jsonl
from grokcopy.safe_io import write_jsonl

REPRO = Path(__file__).resolve().parents[1] / "docs" / "reproduction"
CIRCUIT_RUN = REPRO / "claim4-regularization" / "baseline-seed0"  # held out: never in the reference set
HEADLESS_RUN = REPRO / "cpu-lr-batch" / "bs2048-lr0.006-seed0"


def truncated_copy(run: Path, step: int, dest: Path, drop_induction: bool = False) -> Path:
    """The run folder as it stood at `step`: histories and the Trainer's log cut there."""
    dest.mkdir(parents=True)
    shutil.copy(run / "run_config.json", dest / "run_config.json")
    write_jsonl([r for r in read_jsonl(run / "copy_history.jsonl") if r["step"] <= step], dest / "copy_history.jsonl")
    if not drop_induction:
        write_jsonl([r for r in read_jsonl(run / "induction_history.jsonl") if r["step"] <= step],
                    dest / "induction_history.jsonl")
    state = json.loads((run / "trainer_state.json").read_text())
    state["log_history"] = [r for r in state["log_history"] if r.get("step", 0) <= step]
    (dest / "trainer_state.json").write_text(json.dumps(state))
    return dest


def test_forecast_uses_only_records_up_to_the_step(tmp_path):
    out = tmp_path / "f.json"
    proc = subprocess.run([*GROKCOPY, "forecast", str(CIRCUIT_RUN), "--at-step", "170", "--json", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["at_step"] == 170 and record["horizon"] == 700 and not record["jumped_already"]
    assert {"p_circuit", "jump_step", "jump_step_interval", "signals"} <= set(record)
    assert abs(record["p_circuit"] + record["p_headless"] + record["p_no_jump"] - 1) < 1e-3
    lo, hi = record["jump_step_interval"]
    assert 170 <= lo < record["jump_step"] < hi <= 700
    assert record["signals"]["learning_rate"] == 1.5e-3 and record["signals"]["tokens_per_step"] == 20480
    assert record["model"] == "full" and record["missing"] == []
    assert "P(copies by induction by step 700)" in proc.stdout and "80% interval" in proc.stdout
    # the same forecast from the folder as it stood at step 170: nothing after K leaked in
    cut = forecast_run(truncated_copy(CIRCUIT_RUN, 170, tmp_path / "cut"))
    assert cut.at_step == 170 and cut.to_json()["jump_step"] == record["jump_step"]
    assert cut.to_json()["p_circuit"] == record["p_circuit"]
    # half-way to its jump (365) this held-out circuit run is forecast inside the interval
    assert lo <= 365 <= hi and record["outcome"] == "circuit"


def test_a_signal_not_recorded_is_named_and_the_forecast_still_made(tmp_path):
    run = truncated_copy(CIRCUIT_RUN, 200, tmp_path / "no-induction", drop_induction=True)
    forecast = forecast_run(run)
    assert forecast.model == "copy" and forecast.missing == ["prev_token_rise"]
    assert "prev_token_rise" not in forecast.signals and forecast.signals["token_accuracy"] is not None
    assert "Not recorded by this run" in forecast.text() and "previous-token" in forecast.text()


def test_an_unseen_configuration_widens_the_interval(tmp_path):
    """A configuration no reference run had is forecast with the leave-one-configuration-out spread, and says so."""
    from grokcopy.forecast.signals import snapshot
    from grokcopy.run_dir import load_histories

    forecaster = shipped_forecaster()
    snap = snapshot(load_histories(CIRCUIT_RUN), 170)
    known = forecaster.forecast(snap)
    snap.config = {**snap.config, "context": 128}
    unseen = forecaster.forecast(snap)
    width = lambda f: f.jump_step_interval[1] / f.jump_step_interval[0]  # noqa: E731
    assert known.outside_reference == [] and width(unseen) > 1.5 * width(known)
    assert unseen.outside_reference == ["context 128 above the reference runs' 40-40"]
    assert "Unlike every reference run (the forecast extrapolates): context 128" in unseen.text()


def test_headless_forecast_says_why():
    forecast = forecast_run(HEADLESS_RUN, at_step=120)
    assert forecast.outcome == "headless" and forecast.p_headless > 0.5
    assert "previous-token score" in forecast.reason and "reference runs that jumped headless" in forecast.reason


def test_already_jumped_run_reads_its_jump():
    forecast = forecast_run(CIRCUIT_RUN)
    assert forecast.jumped_already and forecast.p_no_jump == 0.0
    crossed = next(r["step"] for r in read_jsonl(CIRCUIT_RUN / "copy_history.jsonl") if r["exact_match"] >= 0.5)
    assert forecast.jump_step_interval[0] < forecast.jump_step <= crossed


def test_forecast_bad_input(tmp_path):
    assert_one_line_error(subprocess.run([*GROKCOPY, "forecast", str(tmp_path)], capture_output=True, text=True),
                          "not a grokcopy run folder")
    assert_one_line_error(subprocess.run([*GROKCOPY, "forecast", str(CIRCUIT_RUN), "--evaluate"], capture_output=True,
                                         text=True), "--out")
    assert_one_line_error(subprocess.run([*GROKCOPY, "forecast", str(CIRCUIT_RUN), "--at-step", "5000"],
                                         capture_output=True, text=True), "last record is at step 700", "--at-step 5000")
    assert_one_line_error(subprocess.run([*GROKCOPY, "forecast", str(CIRCUIT_RUN), "--at-step", "170", "--horizon",
                                          "100"], capture_output=True, text=True), "horizon 100 is before")


def test_quantiles_far_past_the_forecast_median_stay_finite():
    """A run far past where its configuration usually jumps still gets a finite interval after K."""
    from grokcopy.forecast.model import mixture_quantile

    parts = [(0.9, 5.8, 0.09), (0.1, 6.4, 0.1)]  # medians ~330 and ~600 steps
    for after in (100, 2000, 50_000):
        lo, hi = (mixture_quantile(q, parts, after) for q in (0.1, 0.9))
        assert after < lo < hi < float("inf")


def test_no_jump_grows_past_the_expected_jump_and_falls_with_the_horizon():
    """The cure-rate model: a run far past the step its configuration jumps at is forecast "no jump"; a later
    horizon leaves more time to jump, so P(no jump by H) never rises with H."""
    from grokcopy.forecast.signals import Snapshot

    forecaster = shipped_forecaster()
    config = {"tokens_per_step": 20480, "learning_rate": 1.5e-3, "num_layers": 2, "context": 40}
    early, late = (forecaster.forecast(Snapshot(step=k, config=config), horizon=5000) for k in (100, 2000))
    assert early.outcome == "circuit" and late.outcome == "no jump" and late.p_no_jump > 0.9 > early.p_no_jump
    by_horizon = [forecaster.forecast(Snapshot(step=300, config=config), horizon=h).p_no_jump
                  for h in (300, 350, 400, 700, 5000)]
    assert by_horizon[0] > 0.99 and all(a >= b - 1e-9 for a, b in zip(by_horizon, by_horizon[1:]))
    assert by_horizon[-1] < 0.5


def test_reference_build_fit_and_evaluate(tmp_path):
    """A reference set built from experiment folders fits; --evaluate scores held-out runs apart from in-sample."""
    ref_file = tmp_path / "ref.json"
    reference = build_reference([REPRO / "cpu-critical-batch", REPRO / "cpu-lr-batch"], ref_file)
    assert len(reference["runs"]) == 64 and json.loads(ref_file.read_text())["experiments"] == ["cpu-critical-batch",
                                                                                                  "cpu-lr-batch"]
    solutions = {r["outcome"]["solution"] for r in reference["runs"]}
    assert {"circuit", "headless", "no jump"} <= solutions
    assert all(s["step"] < (r["outcome"]["jump_step"] or r["outcome"]["last_step"] + 1)
               for r in reference["runs"] for s in r["snapshots"])  # only snapshots before the jump
    forecaster = Forecaster(reference)
    full = forecaster.models["full"]
    assert forecaster.cure.n_runs == 64 and full["circuit_time"].n_runs == 30  # every run; the circuits (18 + 12)
    assert full["circuit_time"].sigma_new > full["circuit_time"].sigma  # unseen configurations are harder
    out = tmp_path / "eval"
    proc = subprocess.run([*GROKCOPY, "forecast", "--evaluate", str(REPRO / "cpu-depth-knockout"),
                           str(REPRO / "cpu-lr-batch"), "--reference", str(ref_file), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "forecast_evaluation.json").read_text())
    held, seen = record["sets"]["held_out"], record["sets"]["in_sample"]
    assert held["0.5"]["n_runs"] == 4 and seen["0.5"]["n_runs"] == 36
    assert 0 <= held["0.5"]["coverage_80"] <= 1 and held["0.5"]["median_abs_error"] >= 0
    assert set(held["0.5"]["baselines"]) >= {"nearest configuration", "McCandlish (batch only)", "Aoyama (T0 refit)",
                                             "copy-test extrapolation"}
    assert seen["0.5"]["auroc"] is not None and (out / "forecast_evaluation.png").stat().st_size > 10_000
    paired = held["0.5"]["baselines"]["nearest configuration"]["forecast_minus_baseline"]
    assert paired["n_runs"] == 4 and paired["ci95"][0] <= paired["difference"] <= paired["ci95"][1]
    assert set(record["verdict"]["baselines_beaten"].values()) <= {"beaten", "worse", "not told apart"}
    assert "## held-out" in (out / "forecast_evaluation.md").read_text()
    leads = record["signal_leads"]["circuit"]
    assert leads["0.5"]["n_runs"] == 12 + 4  # cpu-lr-batch's circuits and the knock-out twin's
    assert leads["0.75"]["prev_token_rise"][1] > leads["0.25"]["prev_token_rise"][1]  # the previous-token head leads


def test_the_headline_measures_carry_intervals_that_say_how_little_few_runs_pin_down():
    """Coverage: Clopper-Pearson (7 of 8 -> [0.47, 0.997]); median error: order statistics (8 runs -> min, max, as
    ranks 2 and 7 would cover only 93%); AUROC: a stratified bootstrap around the point."""
    from grokcopy.experiments.forecast_evaluation import auroc, uncertainty

    errors = [0.01, 0.02, 0.03, 0.05, 0.06, 0.09, 0.12, 0.22]
    p, y = [0.9, 0.8, 0.85, 0.7, 0.95, 0.1, 0.2, 0.75, 0.05, 0.3], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    u = uncertainty(errors, [True] * 7 + [False], p, y)
    assert u["coverage_80_ci95"][0] == pytest.approx(0.4735, abs=1e-3) and u["coverage_80_ci95"][1] > 0.99
    assert u["median_abs_error_ci95"] == [0.01, 0.22]
    big = uncertainty(list(np.linspace(0, 1, 101)), [True] * 101, p, y)["median_abs_error_ci95"]
    assert 0.39 < big[0] < 0.5 < big[1] < 0.61  # ranks 41 and 61 of 101
    assert u["auroc_ci95"][0] < auroc(p, y) <= u["auroc_ci95"][1]
    assert uncertainty(errors[:5], [True] * 5, p[:6], y[:6])["median_abs_error_ci95"] is None  # too few runs


def test_shipped_reference_is_the_protocols_fit_set():
    reference = shipped_forecaster().reference
    assert reference["experiments"] == ["cpu-critical-batch-pilot", "cpu-critical-batch", "cpu-lr-batch",
                                        "demo-seeds", "cpu-depth"]
    assert len(reference["runs"]) == 98


def _forecast_logs(log_history):
    return [r for r in log_history if "forecast_p_circuit" in r]


def test_callback_in_copy_trainer(corpus_file, tmp_path):
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, induction_eval_steps=4)))
    logs = _forecast_logs(json.loads((out / "trainer_state.json").read_text())["log_history"])
    assert [r["step"] for r in logs] == [1, 2, 4, 6, 8]  # each step a copy test or an induction analysis recorded
    for r in logs:
        assert 0 <= r["forecast_p_circuit"] <= 1 and "forecast_jump_step" in r
        assert abs(r["forecast_p_circuit"] + r["forecast_p_headless"] + r["forecast_p_no_jump"] - 1) < 1e-3


@pytest.mark.parametrize("kind", ["trainer"])
def test_callback_in_a_plain_trainer(corpus_file, tmp_path, kind):
    from test_any_trainer import run_other_trainer

    from grokcopy import CopyForecastCallback

    callback = CopyForecastCallback()  # no arguments
    log_history, _ = run_other_trainer(tiny_config(corpus_file, tmp_path / "run", induction_eval_steps=4), kind,
                                       "callbacks", extra=(callback,))
    logs = _forecast_logs(log_history)
    assert logs and all(0 <= r["forecast_p_circuit"] <= 1 for r in logs)
    assert callback.latest is not None and callback.latest.signals["tokens_per_step"] == 8 * 128
