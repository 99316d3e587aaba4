"""The paper's claims as pure functions of condition statistics, and `grokcopy report` end to end on
synthetic run folders (histories, trainer state, run config) whose landmarks are known."""

import json
import math

import pytest

from grokcopy.cli import main
from grokcopy.experiments.claims import (
    NOT_SUPPORTED,
    NOT_TESTABLE,
    SUPPORTED,
    claim_jump_follows_steps,
    claim_larger_lr_earlier,
    claim_loss_follows_tokens,
    claim_regularization_helps,
)
from grokcopy.experiments.conditions import family


def cond(config, **stats):
    return {"config": config, "stats": stats}


def batch_conditions(jump_steps, plateau_steps=(1000, 1000, 1000), tokens=(32768, 65536, 131072)):
    return {f"bs={t // 1024}": cond({"tokens_per_step": t, "per_device_train_batch_size": t // 1024,
                                     "learning_rate": 2e-4},
                                    copy_jump_step=j, copy_jump_tokens=j * t, loss_plateau_step=p,
                                    loss_plateau_tokens=p * t)
            for j, p, t in zip(jump_steps, plateau_steps, tokens)}


def test_claim_a_jump_aligned_in_steps_is_supported_aligned_in_tokens_is_not():
    aligned_in_steps = claim_jump_follows_steps(batch_conditions([38000, 38500, 37800]))
    assert aligned_in_steps["verdict"] == SUPPORTED
    assert aligned_in_steps["numbers"]["spread_steps"] < 0.05 < aligned_in_steps["numbers"]["spread_tokens"]
    assert "38,500" in aligned_in_steps["evidence"]
    aligned_in_tokens = claim_jump_follows_steps(batch_conditions([40000, 20000, 10000]))
    assert aligned_in_tokens["verdict"] == NOT_SUPPORTED
    assert aligned_in_tokens["numbers"]["spread_tokens"] == 0
    # the tolerance is the claim's: a 20% spread in steps is aligned at 0.25, not at 0.1
    loose = batch_conditions([36000, 40000, 44000])
    assert claim_jump_follows_steps(loose, 0.25)["verdict"] == SUPPORTED
    assert claim_jump_follows_steps(loose, 0.1)["verdict"] == NOT_SUPPORTED
    no_jump = batch_conditions([38000, 38000, 38000])
    no_jump["bs=32"]["stats"]["copy_jump_step"] = None
    assert claim_jump_follows_steps(no_jump)["verdict"] == NOT_TESTABLE


def test_claim_b_loss_plateau_aligned_in_tokens():
    in_tokens = batch_conditions([38000] * 3, plateau_steps=(4000, 2000, 1000))
    assert claim_loss_follows_tokens(in_tokens)["verdict"] == SUPPORTED
    in_steps = batch_conditions([38000] * 3, plateau_steps=(2000, 2000, 2100))
    assert claim_loss_follows_tokens(in_steps)["verdict"] == NOT_SUPPORTED


def lr_conditions(jumps, ems=(0.5, 0.6, 0.7)):
    return {f"lr={lr:g}": cond({"learning_rate": lr, "tokens_per_step": 524288}, copy_jump_step=j,
                               final_exact_match=em)
            for lr, j, em in zip((1e-4, 2e-4, 4e-4), jumps, ems)}


def test_claim_c_larger_learning_rate_groks_earlier():
    assert claim_larger_lr_earlier(lr_conditions([40000, 30000, 20000]))["verdict"] == SUPPORTED
    assert claim_larger_lr_earlier(lr_conditions([None, 30000, 20000]))["verdict"] == SUPPORTED  # never: latest
    assert claim_larger_lr_earlier(lr_conditions([20000, 30000, 25000]))["verdict"] == NOT_SUPPORTED
    assert claim_larger_lr_earlier(lr_conditions([40000, 30000, None]))["verdict"] == NOT_SUPPORTED
    assert claim_larger_lr_earlier(lr_conditions([None, None, None]))["verdict"] == NOT_TESTABLE
    assert claim_larger_lr_earlier(batch_conditions([1, 2, 3]))["verdict"] == NOT_TESTABLE


def reg_conditions(dropout=(10000, 0.56), decay=(12000, 0.51), base=(15000, 0.21)):
    rows = {"baseline": ({"attention_dropout": 0.0, "weight_decay": 0.0}, base),
            "attention_dropout=0.1": ({"attention_dropout": 0.1, "weight_decay": 0.0}, dropout),
            "weight_decay=0.1": ({"attention_dropout": 0.0, "weight_decay": 0.1}, decay)}
    return {label: cond({**config, "learning_rate": 2e-4}, copy_jump_step=j, final_exact_match=em)
            for label, (config, (j, em)) in rows.items()}


def test_claim_d_regularization_earlier_or_higher():
    assert claim_regularization_helps(reg_conditions())["verdict"] == SUPPORTED
    assert claim_regularization_helps(reg_conditions(dropout=(20000, 0.6)))["verdict"] == SUPPORTED  # higher only
    assert claim_regularization_helps(reg_conditions(decay=(9000, 0.1)))["verdict"] == SUPPORTED  # earlier only
    worse = claim_regularization_helps(reg_conditions(decay=(20000, 0.1)))
    assert worse["verdict"] == NOT_SUPPORTED
    assert worse["numbers"]["conditions"]["weight_decay=0.1"] == {"earlier": False, "higher": False}
    no_baseline = reg_conditions()
    del no_baseline["baseline"]
    assert claim_regularization_helps(no_baseline)["verdict"] == NOT_TESTABLE


def test_family_picks_conditions_that_differ_only_in_the_claims_fields():
    mixed = {**batch_conditions([38000] * 3), **lr_conditions([40000, 30000, 20000])}
    for c in mixed.values():  # configs as group_conditions makes them: the same fields everywhere
        c["config"].update(per_device_train_batch_size=c["config"]["tokens_per_step"] // 1024)
    for label in ("lr=0.0001", "lr=0.0002", "lr=0.0004"):
        mixed[label]["config"].update(tokens_per_step=65536, per_device_train_batch_size=64)
    del mixed["bs=64"]  # the same config as lr=0.0002: one condition
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


def test_report_end_to_end_two_batch_sizes_two_seeds(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for batch in (64, 256):
        for seed in (0, 1):
            write_run(sweep / f"bs{batch}-seed{seed}", batch=batch, seed=seed, jump=800,
                      plateau=300 if batch == 256 else 1200)  # jump in steps, loss in tokens
    (sweep / "sweep.json").write_text(json.dumps({"members": [{"name": f"bs{b}-seed{s}"} for b in (64, 256)
                                                              for s in (0, 1)] + [{"name": "never-ran"}]}))
    out = tmp_path / "report"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 runs in 2 conditions" in printed
    for name in ("curves.png", "induction_formation.png", "report.md", "report.json"):
        assert (out / name).stat().st_size > (10_000 if name.endswith(".png") else 100), name
    assert not (out / "learning_rate.png").exists() and not (out / "regularization.png").exists()
    record = json.loads((out / "report.json").read_text())
    labels = sorted(c["label"] for c in record["conditions"])
    assert labels == ["bs=256", "bs=64"]
    claims = {c["claim"]: c for c in record["claims"]}
    assert claims["a"]["verdict"] == SUPPORTED and claims["b"]["verdict"] == SUPPORTED
    assert claims["c"]["verdict"] == NOT_TESTABLE and claims["d"]["verdict"] == NOT_TESTABLE
    bs64 = next(c for c in record["conditions"] if c["label"] == "bs=64")
    assert bs64["n"] == 2 and bs64["stats"]["copy_jump_step"] == pytest.approx(803.5, abs=100)
    assert bs64["spread"]["copy_jump_step"]["count"] == 2
    report = (out / "report.md").read_text()
    assert "| run | condition | seed |" in report and "| bs64-seed1 | bs=64 | 1 |" in report
    assert "| condition | config | runs |" in report and "| bs=256 | bs=256 | 2 |" in report
    assert f"**{SUPPORTED}**" in report and f"**{NOT_TESTABLE}**" in report and "![curves.png](curves.png)" in report
    assert "## Induction-head formation" in report


def test_report_learning_rate_and_regularization_panels(tmp_path):
    runs = []
    for lr, jump in ((1.5e-3, 1400), (6e-3, 600)):
        runs.append(write_run(tmp_path / f"lr{lr:g}", batch=128, seed=0, jump=jump, lr=lr))
    runs.append(write_run(tmp_path / "dropout", batch=128, seed=0, jump=500, lr=6e-3, dropout=0.1))
    out = tmp_path / "report"
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0
    assert (out / "learning_rate.png").is_file() and (out / "regularization.png").is_file()
    record = json.loads((out / "report.json").read_text())
    # labelled where they depart from what most conditions share: lr=0.006 without dropout is the baseline
    assert sorted(c["label"] for c in record["conditions"]) == ["attention_dropout=0.1", "baseline", "lr=0.0015"]
    claims = {c["claim"]: c for c in record["claims"]}
    assert claims["c"]["verdict"] == SUPPORTED and claims["d"]["verdict"] == SUPPORTED
    assert claims["d"]["numbers"]["baseline"] == "baseline"
    assert "| baseline | attention_dropout=0, lr=0.006 | 1 |" in (out / "report.md").read_text()


def test_report_on_one_run_has_figures_table_and_nothing_testable(tmp_path):
    run = write_run(tmp_path / "demo", batch=128, seed=0, jump=600)
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out), "--jump-window", "200", "--absolute",
                 "--loss-tolerance", "0.1"]) == 0
    record = json.loads((out / "report.json").read_text())
    assert [c["label"] for c in record["conditions"]] == ["demo"]
    assert all(c["verdict"] == NOT_TESTABLE for c in record["claims"])
    assert record["settings"]["jump_window"] == 200 and record["settings"]["relative"] is False
    assert (out / "curves.png").is_file() and "| demo | demo | 0 |" in (out / "report.md").read_text()


def test_report_errors_are_one_line(tmp_path, capsys):
    for args, needle in (([str(tmp_path / "nowhere")], "not a folder"), ([str(tmp_path)], "no run in it")):
        with pytest.raises(SystemExit) as exit_info:
            main(["report", *args, "--out", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("grokcopy: error:") and needle in err[0]


def test_a_condition_that_never_jumps_within_more_steps_refutes_step_alignment():
    from grokcopy.experiments.claims import NOT_SUPPORTED, claim_jump_follows_steps

    def condition(bs, jump, steps):
        return {"config": {"tokens_per_step": bs * 40, "per_device_train_batch_size": bs, "learning_rate": 3e-3},
                "stats": {"copy_jump_step": jump, "copy_jump_tokens": None if jump is None else jump * bs * 40,
                          "steps": steps}}

    conditions = {"bs=64": condition(64, None, 1200), "bs=128": condition(128, 550, 1200),
                  "bs=256": condition(256, 250, 1200)}
    result = claim_jump_follows_steps(conditions)
    assert result["verdict"] == NOT_SUPPORTED
    assert "bs=64: no jump by step 1,200" in result["evidence"] and result["numbers"]["without_jump"] == ["bs=64"]


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
    assert record["conditions"][0]["stats"]["steps"] == 8
    assert all(c["verdict"] == NOT_TESTABLE for c in record["claims"])
    assert (tmp_path / "report" / "curves.png").stat().st_size > 10_000
    assert "| layer |" in (tmp_path / "report" / "report.md").read_text()
