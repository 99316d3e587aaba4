"""Nothing lost, nothing mixed (issue 18): torn histories, the Trainer's own loss log, one run per folder,
values that cannot train."""

import json
import subprocess
import sys

from conftest import tiny_config

from grokcopy.run_dir import read_jsonl
from grokcopy.training.callbacks import History
from grokcopy.training.config import parse_args
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
    assert [r["step"] for r in log if "copy_exact_match" in r] == [0, 2, 4, 6, 8]
    assert {1, 2, 4, 8} <= {r["step"] for r in log if "induction_max_layer0" in r}
