"""The CPU demo end to end, run exactly as the README's first command runs it.

What every demo run must deliver is asserted here: a trained model and tokenizer in HF format,
the copy history and curve, the induction history and formation chart, and a summary that agrees
with the histories. Whether a run shows the paper's phenomenon is a measurement the demo prints
and records (`loss_fell_first_then_copy_jumped`); it is checked against the histories, not assumed.
"""

import json

from grokcopy.analysis.grokking import jump_step, loss_fall_step
from grokcopy.run_dir import read_jsonl


def test_demo_delivers_model_curves_and_a_consistent_summary(demo_run):
    out, proc = demo_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "=== grokcopy demo ===" in proc.stdout
    for name in ("copy_curve.png", "induction_formation.png", "induction_history.png", "model.safetensors",
                 "tokenizer.json", "config.json", "summary.json", "copy_history.jsonl"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    history = read_jsonl(out / "copy_history.jsonl")
    steps = [r["step"] for r in history]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == summary["steps"]
    assert summary["final_exact_match"] == history[-1]["exact_match"]
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [(r["step"], r["loss"]) for r in state["log_history"] if "loss" in r]
    assert losses[-1][1] < losses[0][1]  # it trained
    jump = jump_step(history)[0]
    fall80 = loss_fall_step(losses, 0.8)
    shown = jump is not None and fall80 is not None and jump > fall80
    assert summary["loss_fell_first_then_copy_jumped"] is shown
    assert summary["jump_step"] == jump
    assert ("the loss fell first, then copying jumped" in proc.stdout) is shown
    # the held-out loss split into copyable tokens and the rest, at every copy test
    assert all(r["copyable_loss"] > 0 and r["other_loss"] > 0 for r in history)


def test_demo_records_induction_heads_per_checkpoint(demo_run):
    out, _ = demo_run
    induction = read_jsonl(out / "induction_history.jsonl")
    assert len(induction) >= 3
    assert [r["step"] for r in induction] == sorted({r["step"] for r in induction})
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints and all((c / "induction.json").is_file() and (c / "copy_eval.json").is_file()
                               for c in checkpoints)


def test_demo_logs_its_forecast_and_can_be_forecast_from_its_folder(demo_run, tmp_path):
    """The demo's default schedule feeds the forecast: logged at its copy tests, and `grokcopy forecast` on its
    folder as it stood half-way to its jump (a run the reference set never saw) gives a full record."""
    import subprocess

    from conftest import GROKCOPY

    out, _ = demo_run
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [r for r in state["log_history"] if "forecast_p_circuit" in r]
    copy_steps = {r["step"] for r in read_jsonl(out / "copy_history.jsonl")}
    assert copy_steps - {0} <= {r["step"] for r in logged}  # a forecast at every copy test after the first step
    assert all(0 <= r["forecast_p_circuit"] <= 1 for r in logged)
    jump = json.loads((out / "summary.json").read_text())["jump_step"] or 700
    at = int(jump // 2)
    proc = subprocess.run([*GROKCOPY, "forecast", str(out), "--at-step", str(at), "--json", str(tmp_path / "f.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "f.json").read_text())
    assert record["at_step"] == at and record["horizon"] == 700 and not record["jumped_already"]
    assert record["model"] == "full" and record["missing"] == [] and 0 <= record["p_circuit"] <= 1
    assert record["jump_step"] > at and record["jump_step_interval"][0] >= at
