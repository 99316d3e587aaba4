"""Nothing lost, nothing mixed (issue 18): torn histories, the Trainer's own loss log, one run per folder,
values that cannot train."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from grokcopy.run_dir import read_jsonl
from grokcopy.training.callbacks import History
from grokcopy.training.config import ConfigError, parse_args
from grokcopy.training.pipeline import run_training

TORN_WRITER = """
import json, os, sys, time
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps({"step": 6, "exact_match": 0.5})[:12])
    fh.flush()
    os.fsync(fh.fileno())
    print("torn", flush=True)
    time.sleep(120)
"""


def test_a_history_torn_by_a_killed_writer_loses_no_later_record(tmp_path):
    history = History(str(tmp_path), "copy_history.jsonl")
    for step in (0, 2, 4):
        history.append({"step": step})
    writer = subprocess.Popen([sys.executable, "-c", TORN_WRITER, str(history.path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "torn\n"
    writer.kill()  # mid-line: the file now ends in a fragment
    writer.wait()
    assert not history.path.read_text().endswith("\n")
    assert history.resume_at(4, is_main=True) == {0, 2, 4}
    history.append({"step": 6})
    history.append({"step": 8})
    assert [r["step"] for r in read_jsonl(history.path)] == [0, 2, 4, 6, 8]
    assert history.path.read_text().count("\n") == 5


def test_the_trainer_logs_its_loss_at_every_logging_step_with_the_analyses_on(corpus_file, tmp_path):
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=8, logging_steps=2, copy_eval_steps=2,
                                         induction_eval_steps=2)))
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 6, 8]
    assert [r["step"] for r in log if "eval_copy_exact_match" in r] == [0, 2, 4, 6, 8]
    assert {1, 2, 4, 8} <= {r["step"] for r in log if "eval_induction_max_layer0" in r}


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_fresh_run_refuses_a_folder_holding_a_run_and_overwrite_sets_it_aside(corpus_file, tmp_path):
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=8, seed=1)))
    before = tree(out)
    with pytest.raises(ConfigError, match=r"^output_dir: .*run already holds a run \(checkpoint-4, checkpoint-8, "
                                          r"copy_history.jsonl, \.\.\.\); continue it with --resume_from_checkpoint"):
        run_training(*parse_args(tiny_config(corpus_file, out, max_steps=4)))
    assert tree(out) == before  # nothing written, nothing moved

    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=4, overwrite_output_dir=True)))
    assert tree(tmp_path / "run.previous-1") == before  # the old run, whole, beside the new one
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-4"]
    # resuming the new run picks up its own checkpoint, never the old run's checkpoint-8
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=8, resume_from_checkpoint="last",
                                         resume_allow_changes="max_steps")))
    assert [r["step"] for r in read_jsonl(out / "copy_history.jsonl")] == [0, 2, 4, 6, 8]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run.previous-1"]


def test_output_dir_must_be_a_writable_folder(corpus_file, tmp_path):
    from grokcopy.training.pipeline import check_output_folder

    (tmp_path / "file").write_text("x")
    for where, message in ((tmp_path / "file", r"file is a file, not a folder"),
                           (tmp_path / "file" / "run", r"file is a file, not a folder")):
        with pytest.raises(ConfigError, match=r"^output_dir: .*" + message):
            check_output_folder(parse_args(tiny_config(corpus_file, where))[2])
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
    else:  # root writes through permissions; sysfs refuses new files even to root
        locked = Path("/sys")
    with pytest.raises(ConfigError, match=r"^output_dir: .* is not writable \("):
        check_output_folder(parse_args(tiny_config(corpus_file, locked / "run"))[2])
    assert not (locked / "run").exists()


def test_a_sweep_member_that_died_before_its_first_checkpoint_starts_over(corpus_file, tmp_path, capsys):
    from grokcopy.cli import main

    base = tiny_config(corpus_file, "unused", max_steps=4, save_steps=2, induction_analysis=False)
    del base["output_dir"]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "output_dir": str(tmp_path / "runs"),
                                                         "seeds": [0]}))
    attempt = tmp_path / "runs" / "seed0"
    attempt.mkdir(parents=True)
    (attempt / "run_config.json").write_text("{}")
    (attempt / "copy_history.jsonl").write_text('{"step": 0}\n')
    assert main(["sweep", str(tmp_path / "tiny.yaml")]) == 0
    assert "seed0: done" in capsys.readouterr().out
    assert [r["step"] for r in read_jsonl(attempt / "copy_history.jsonl")] == [0, 2, 4]
    assert sorted(p.name for p in (tmp_path / "runs" / "seed0.previous-1").iterdir()) == [
        "copy_history.jsonl", "run_config.json"]


@pytest.mark.parametrize("flag, value, message", [
    ("per_device_train_batch_size", "0", "per_device_train_batch_size: must be >= 1, got 0"),
    ("learning_rate", "-1", "learning_rate: must be > 0, got -1.0"),
    ("num_attention_heads", "3", "num_attention_heads: 3 does not divide hidden_size 128"),
    ("max_steps", "-3", "max_steps: must be > 0 (or -1: train num_train_epochs), got -3"),
    ("num_key_value_heads", "3", "num_key_value_heads: 3 does not divide num_attention_heads 4"),
    ("validation_split_percentage", "100", "validation_split_percentage: must be between 0 and 100, got 100.0"),
])
def test_values_that_cannot_train_are_refused_naming_the_field(corpus_file, tmp_path, flag, value, message):
    with pytest.raises(ConfigError) as err:
        parse_args(tiny_config(corpus_file, tmp_path / "run", preset="demo"), [f"--{flag}", value])
    assert str(err.value).startswith(message)


def test_a_sweep_validates_its_members_with_the_same_rules(corpus_file, tmp_path):
    from grokcopy.experiments.sweep_runner import run_sweep

    base = tiny_config(corpus_file, "unused")
    del base["output_dir"]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "bs.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "output_dir": str(tmp_path / "runs"),
                                                       "grid": {"per_device_train_batch_size": [8, 0]}}))
    with pytest.raises(ConfigError, match=r"member per_device_train_batch_size0: per_device_train_batch_size: "
                                          r"must be >= 1, got 0$"):
        run_sweep(tmp_path / "bs.yaml", [])
    assert not (tmp_path / "runs").exists()
