"""The report's statistics as a reviewer reads them (issue #29): a verdict per batch for claim (c), one loss
target per experiment whatever else a report holds, a stopped run that is not counted headless, and every
interval in report.json saying its method and its coverage."""

import json

import pytest
import yaml

from grokcopy.cli import main
from grokcopy.errors import ConfigError
from grokcopy.experiments.claims import DIFFERS, SUPPORTED, claim_larger_lr_earlier
from grokcopy.experiments.conditions import summarize
from grokcopy.experiments.sweep import load_sweep
from tests.test_report import cond, noisy, write_run


def lr_rows(rows: dict) -> dict:
    """{batch: [jumps at lr 1.5e-3, 3e-3, 6e-3]} -> conditions differing in learning rate within each batch."""
    out = {}
    for batch, jumps_by_lr in rows.items():
        for lr, jumps in zip((1.5e-3, 3e-3, 6e-3), jumps_by_lr):
            out[f"B={batch}, lr={lr:g}"] = cond({"learning_rate": lr, "tokens_per_step": batch * 40}, jumps)
    return out


def test_claim_c_has_a_verdict_per_batch_and_says_when_they_differ():
    agree = claim_larger_lr_earlier(lr_rows({64: [noisy(1400), noisy(900), noisy(600)],
                                             512: [noisy(700), noisy(450), noisy(300)]}))
    assert agree["verdict"] == SUPPORTED and len(agree["numbers"]["per_family"]) == 2
    split = claim_larger_lr_earlier(lr_rows({64: [noisy(1400), noisy(900), noisy(600)],
                                             512: [noisy(300), noisy(450), noisy(700)]}))
    assert split["verdict"] == DIFFERS
    verdicts = {f["tokens_per_step"]: f["verdict"] for f in split["numbers"]["per_family"]}
    assert verdicts == {64 * 40: "supported", 512 * 40: "contradicted"}
    assert "at 2,560 tokens per step: supported" in split["evidence"]


def _stopped_without_head(stopped: bool) -> dict:
    return {"jump_step": 300.0, "jump_censored_at": None, "final_exact_match": 0.85, "stopped_by_rule": stopped,
            "formation": [{"layer": 0, "formation_step": None, "censored_at": 300, "max_induction": 0.15}]}


def test_a_run_the_stop_rule_ended_before_its_next_analysis_is_not_headless():
    stats, _ = summarize([_stopped_without_head(True), _stopped_without_head(False)])
    assert stats["n_with_head"] == 0 and stats["n_head_undetermined"] == 1


def _report(paths, out) -> dict:
    assert main(["report", *map(str, paths), "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


def test_the_loss_target_is_the_experiments_not_the_reports(tmp_path):
    """Reported alone or with another experiment's runs, an experiment's runs are measured to its own loss
    target (experiment.json beside its archived members); runs of no experiment share one."""
    fixed, loose = tmp_path / "fixed", tmp_path / "loose"
    for seed in range(3):
        write_run(fixed / f"a-seed{seed}", batch=64, seed=seed, jump=800)
        write_run(loose / f"b-seed{seed}", batch=64, seed=seed, jump=800, plateau=1500, lr=1e-3)
    (fixed / "experiment.json").write_text(json.dumps({"sweep": "x.yaml", "report": {"loss_target": 2.5}}))
    alone = _report([fixed], tmp_path / "alone")
    both = _report([fixed, loose], tmp_path / "both")
    steps = {r["name"]: r["stats"]["loss_target_step"] for r in both["runs"]}
    for run in alone["runs"]:
        assert run["stats"]["loss_target"] == 2.5 and run["stats"]["loss_target_source"] == "experiment"
        assert steps[run["name"]] == run["stats"]["loss_target_step"]  # unmoved by the other runs
    loose_runs = [r for r in both["runs"] if r["name"].startswith("b-")]
    assert {r["stats"]["loss_target_source"] for r in loose_runs} == {"shared by the report's runs"}
    assert loose_runs[0]["stats"]["loss_target"] != 2.5
    assert both["settings"]["loss_target"] == sorted({2.5, loose_runs[0]["stats"]["loss_target"]})


def test_every_interval_in_report_json_says_its_method_and_coverage(tmp_path):
    runs = [write_run(tmp_path / f"seed{s}", batch=64, seed=s, jump=800) for s in range(4)]
    record = _report(runs, tmp_path / "report")
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("ci95") and key != "slope_ci95":  # the claims' slopes: numbers of their own
                    found.append(key)
                    assert f"{key}_method" in node and f"{key}_coverage" in node, key
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(record["conditions"])
    assert {"jump_step_ci95", "final_exact_match_ci95", "groks_ci95", "ci95"} <= set(found)
    stats = record["conditions"][0]["stats"]
    assert stats["jump_step_ci95_coverage"] == 0.875  # 4 seeds: the range, and it says so
    assert "(87.5%)" in (tmp_path / "report" / "report.md").read_text()


def test_a_sweep_fixes_its_report_settings(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "runs"), "model_preset": "demo", "max_steps": 5}))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": "base.yaml", "output_dir": str(tmp_path / "s"), "seeds": [0],
                                     "report": {"loss_target": 2.4}}))
    assert load_sweep(sweep).report == {"loss_target": 2.4}
    for bad, said in (({"loss_target": "low"}, "positive number"), ({"threshold": 0.3}, "unknown setting")):
        sweep.write_text(yaml.safe_dump({"base": "base.yaml", "output_dir": "s", "seeds": [0], "report": bad}))
        with pytest.raises(ConfigError, match=said):
            load_sweep(sweep)
