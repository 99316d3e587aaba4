"""The CPU demo end to end: the paper's phenomenon, reproduced on 2 cores."""

import json

from grokcopy.callbacks import read_jsonl
from grokcopy.grokking import first_step_reaching, loss_fall_step


def test_demo_shows_loss_first_then_copy_jump(demo_run):
    out, proc = demo_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "the loss fell first, then copying jumped" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    history = read_jsonl(out / "copy_history.jsonl")
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [(r["step"], r["loss"]) for r in state["log_history"] if "loss" in r]
    jump = first_step_reaching([(r["step"], r["exact_match"]) for r in history], 0.5)
    fall80 = loss_fall_step(losses, 0.8)
    assert jump is not None and fall80 is not None and jump > fall80
    assert history[-1]["exact_match"] >= 0.9
    assert summary["final_exact_match"] == history[-1]["exact_match"]
    for name in ("copy_curve.png", "induction_formation.png", "induction_history.png", "model.safetensors",
                 "tokenizer.json", "config.json"):
        assert (out / name).is_file(), name


def test_demo_forms_induction_heads(demo_run):
    out, _ = demo_run
    induction = read_jsonl(out / "induction_history.jsonl")
    assert len(induction) >= 3
    first, last = induction[0], induction[-1]
    assert max(max(row) for row in last["induction"]) > max(max(row) for row in first["induction"]) + 0.3
