"""CopyTrainer end to end on real tiny runs: metrics, history, standard Trainer features, resume."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from grokcopy.run_dir import read_jsonl
from grokcopy.training.callbacks import eval_steps_schedule
from grokcopy.training.config import parse_args
from grokcopy.training.pipeline import build_trainer, run_training

HISTORY_KEYS = {"step", "tokens", "loss", "exact_match", "token_accuracy", "per_position"}


def history(out):
    return read_jsonl(Path(out) / "copy_history.jsonl")


def test_schedule_log_and_linear():
    log = [s for s in range(0, 1100) if eval_steps_schedule(s, "log", 256)]
    assert log == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024]
    assert [s for s in range(0, 10) if eval_steps_schedule(s, "linear", 3)] == [0, 3, 6, 9]
    assert not any(eval_steps_schedule(s, "none", 3) for s in range(10))


def test_evaluate_returns_loss_and_copy_metrics(corpus_file, tmp_path):
    trainer = build_trainer(*parse_args(tiny_config(corpus_file, tmp_path / "run", copy_eval_schedule="none")))
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_copy_exact_match", "eval_copy_token_accuracy"} <= set(metrics)
    assert 0.0 <= metrics["eval_copy_token_accuracy"] <= 1.0


def test_evaluation_at_a_copy_test_step_reuses_its_result(corpus_file, tmp_path, monkeypatch):
    """eval_steps on copy-test steps: the evaluation reports the callback's result of that step, and the
    test runs once per step (a second run on the same weights would only cost time)."""
    config = tiny_config(corpus_file, tmp_path / "run", eval_strategy="steps", eval_steps=4, save_strategy="no",
                         induction_analysis=False)
    import grokcopy.copytest.scoring as scoring

    trainer = build_trainer(*parse_args(config))
    calls = []
    measure = scoring.score_copy_task  # every copy test, the callback's and the evaluation's, runs through it
    monkeypatch.setattr(scoring, "score_copy_task",
                        lambda *a, **kw: calls.append(trainer.state.global_step) or measure(*a, **kw))
    monkeypatch.setattr("grokcopy.training.trainer.score_copy_task", scoring.score_copy_task)
    trainer.train()
    assert calls == [0, 2, 4, 6, 8]  # the schedule's steps, each once
    records = {r["step"]: r for r in history(tmp_path / "run")}
    evals = [r for r in trainer.state.log_history if "eval_loss" in r]  # evaluate()'s entries
    assert [r["step"] for r in evals] == [4, 8]
    for r in evals:
        assert r["eval_copy_exact_match"] == records[r["step"]]["exact_match"]
        assert r["eval_copy_token_accuracy"] == records[r["step"]]["token_accuracy"]
    trainer.evaluate()  # after training, a call of its own: the weights may have been changed since
    assert calls[-1] == 8 and len(calls) == 6


def test_training_writes_history_logs_and_checkpoints(corpus_file, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(corpus_file, out, report_to="tensorboard", eval_strategy="steps", eval_steps=4)
    summary = run_training(*parse_args(config))
    records = history(out)
    assert [r["step"] for r in records] == [0, 2, 4, 6, 8]
    assert all(HISTORY_KEYS <= set(r) for r in records)
    assert records[0]["loss"] is None and all(r["loss"] > 0 for r in records[1:])
    assert [r["tokens"] for r in records] == [s * 8 * 128 for s in (0, 2, 4, 6, 8)]
    assert set(records[-1]["per_position"]) == {"5", "10"}
    assert summary["steps"] == 8 and summary["final_exact_match"] == records[-1]["exact_match"]
    assert (out / "checkpoint-4").is_dir() and (out / "checkpoint-8").is_dir()
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "copy_curve.png").stat().st_size > 10_000
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["tokens_per_step"] == 8 * 128 and run_config["training"]["learning_rate"] == 3e-3
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [r for r in state["log_history"] if "eval_copy_exact_match" in r and "eval_loss" not in r]
    assert [r["step"] for r in logged] == [0, 2, 4, 6, 8]  # the schedule's; evaluate()'s entries carry eval_loss
    assert any("eval_copy_exact_match" in r for r in state["log_history"])
    # report_to=tensorboard received the copy metrics through the Trainer's log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((out / "runs").rglob("events.out.tfevents*")).parent),
                              size_guidance={"images": 0, "scalars": 0})  # keep all (the default samples 4 images)
    events.Reload()
    assert "eval/copy_exact_match" in events.Tags()["scalars"]  # one namespace with evaluate()'s
    # per-head induction scores as scalars, and the pictures a researcher looks at, at their analysis steps
    assert {f"eval/induction_layer{layer}_head{head}" for layer in range(2) for head in range(4)} <= set(
        events.Tags()["scalars"])
    assert {"copy/curve", "induction/heatmap"} <= set(events.Tags()["images"])
    assert [e.step for e in events.Images("copy/curve")] == [0, 2, 4, 6, 8]
    assert [e.step for e in events.Images("induction/heatmap")] == [4, 8]
    assert events.Images("induction/heatmap")[0].width > 100
    # every checkpoint carries its induction analysis; the run has a history and figures
    for step in (4, 8):
        analysis = json.loads((out / f"checkpoint-{step}" / "induction.json").read_text())
        assert analysis["step"] == step and len(analysis["induction"]) == 2 and len(analysis["induction"][0]) == 4
        assert (out / f"checkpoint-{step}" / "induction.png").stat().st_size > 5_000
    assert [r["step"] for r in read_jsonl(out / "induction_history.jsonl")] == [4, 8]
    assert any("eval_induction_max_layer1" in r for r in state["log_history"])
    assert (out / "induction_formation.png").is_file() and (out / "induction_history.png").is_file()
    assert [r["layer"] for r in summary["induction_formation"]] == [0, 1]


def test_resume_continues_history_without_gap_or_duplicate(corpus_file, tmp_path):
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=6)))
    assert [r["step"] for r in history(out)] == [0, 2, 4, 6]
    # A crash after step 6 was measured but before checkpoint-6 was written:
    shutil.rmtree(out / "checkpoint-6")
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=10, resume_from_checkpoint="last",
                                         resume_allow_changes="max_steps")))
    steps = [r["step"] for r in history(out)]
    assert steps == [0, 2, 4, 6, 8, 10]
    assert [r["step"] for r in read_jsonl(out / "induction_history.jsonl")] == [4, 8, 10]


def test_induction_on_its_own_schedule_and_cli(corpus_file, tmp_path):
    import subprocess

    from conftest import GROKCOPY

    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, induction_eval_steps=4, copy_eval_schedule="none")))
    assert [r["step"] for r in read_jsonl(out / "induction_history.jsonl")] == [0, 1, 2, 4, 8]
    proc = subprocess.run([*GROKCOPY, "induction", str(out / "checkpoint-8"), "--json", str(tmp_path / "i.json"),
                           "--plot", str(tmp_path / "i.png")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "i.json").read_text())
    assert result["num_layers"] == 2 and result["num_heads"] == 4
    for key in ("attention", "ep", "induction", "prev_token", "prefix_matching"):
        assert len(result[key]) == 2 and len(result[key][0]) == 4
    saved = json.loads((out / "checkpoint-8" / "induction.json").read_text())
    assert np.allclose(result["induction"], saved["induction"], atol=1e-6)
    assert (tmp_path / "i.png").stat().st_size > 5_000
    missing = subprocess.run([*GROKCOPY, "induction", str(tmp_path / "nowhere")], capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "nowhere" in missing.stderr


def test_resume_from_missing_checkpoint_is_clear(corpus_file, tmp_path):
    from grokcopy.training.config import ConfigError
    from grokcopy.training.pipeline import resolve_resume

    _, _, args = parse_args(tiny_config(corpus_file, tmp_path / "empty", resume_from_checkpoint="last"))
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        resolve_resume(args)


def test_weight_decay_only_on_matrices(corpus_file, tmp_path):
    trainer = build_trainer(*parse_args(tiny_config(corpus_file, tmp_path / "run", weight_decay=0.1)))
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed and plain and decayed | plain == set(names.values())
    assert all(trainer.model.get_parameter(n).ndim == 2 for n in decayed)
    assert all("norm" in n for n in plain)  # LLaMA has no biases: its 1-D parameters are the norm scales
    assert "model.embed_tokens.weight" in decayed and "lm_head.weight" in decayed


COMPILED_RUN = """
import json, sys
from torch._dynamo.utils import counters
from grokcopy.training.config import parse_args
from grokcopy.training.pipeline import run_training
run_training(*parse_args(json.loads(sys.argv[1])))
print(json.dumps({k: dict(v) for k, v in counters.items()}))
"""


def test_torch_compile_with_every_callback_compiles_once(corpus_file, tmp_path):
    """The copy test and the induction analysis (eager attention, eval mode, KV cache) run on the eager
    module and restore every flag, so the compiled training graph is never recompiled."""
    import subprocess
    import sys

    config = tiny_config(corpus_file, tmp_path / "run", max_steps=12, torch_compile=True, copy_eval_steps=2,
                         induction_eval_steps=4, save_steps=6)
    proc = subprocess.run([sys.executable, "-c", COMPILED_RUN, json.dumps(config)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counters = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counters["frames"]["ok"] >= 1 and counters["stats"]["unique_graphs"] == 1
    assert not counters.get("recompiles")
    assert [r["step"] for r in history(tmp_path / "run")] == list(range(0, 13, 2))
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "induction_history.jsonl")] == [0, 1, 2, 4, 6, 8, 12]
