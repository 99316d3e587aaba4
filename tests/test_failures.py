"""Never lose a run when it fails from the inside: a process killed mid-run (SIGKILL, a writer killed
mid-line or mid-file), a NaN loss, a full disk (a checkpoint, a history, the datasets cache), damaged
checkpoints, a model an analysis cannot read; and the Trainer's own loss log kept beside the analyses.

Each fault is real (a real SIGKILL, a real file-size limit, real NaN weights) and met through the real
CLI where a user meets it. Signals that ask a run to stop, locks, resumes with changed settings and
sweeps are in test_cluster_faults.py; input refused before a run starts in test_bad_input.py.
"""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import GROKCOPY, assert_one_line_error, last_line, steps, tiny_config, tree, write_config

from grokcopy.run_dir import checkpoint_problem, checkpoints, last_complete_checkpoint, read_jsonl
from grokcopy.training.config import parse_args
from grokcopy.training.pipeline import resolve_resume, run_training

# `python -c FAULTY_TRAIN CONFIG FAULT STEP [LIMIT]`: `grokcopy train CONFIG` with a real fault at STEP.
# nan: the weights turn NaN after step STEP - 1, so the loss of step STEP is NaN (what a diverging run looks like).
# disk: from STEP on no file may grow past LIMIT bytes (`history`: the copy history's size then, so its next
# record cannot be written): a full disk.
FAULTY_TRAIN = """
import os, resource, signal, sys
import torch
from transformers import TrainerCallback
import grokcopy.training.pipeline as pipeline
from grokcopy.cli import main

config, fault, at = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Fault(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if fault == "nan" and state.global_step == at - 1:
            with torch.no_grad():
                model.get_input_embeddings().weight.fill_(float("nan"))
        if fault == "disk" and state.global_step == at:
            limit = sys.argv[4]
            size = os.path.getsize(os.path.join(args.output_dir, "copy_history.jsonl")) + 10
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size if limit == "history" else int(limit),
                                                       resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

build = pipeline.build_trainer
pipeline.build_trainer = lambda *a, callbacks=None: build(*a, callbacks=[Fault()])
sys.exit(main(["train", config]))
"""


def faulty_train(config: Path, fault: str, at: int, *limit: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FAULTY_TRAIN, str(config), fault, str(at), *limit],
                          capture_output=True, text=True, timeout=600)


def disk_fills_up(config: Path, at: int, limit: str) -> subprocess.CompletedProcess:
    return faulty_train(config, "disk", at, limit)


# --- a process killed mid-run ---

def test_sigkill_mid_training_then_resume_has_no_gap_duplicate_or_half_file(corpus_file, tmp_path, api):
    out = tmp_path / "run"
    config = tiny_config(corpus_file, out, max_steps=60, save_steps=20, copy_eval_steps=5, induction_eval_steps=20,
                         hub_checkpoint_series=True, hub_model_id="user/killed", hub_push_wait=120)
    path = write_config(tmp_path / "config.json", config)
    proc = subprocess.Popen([*GROKCOPY, "train", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # past checkpoint-20, before the run ends
        if (out / "checkpoint-20" / "trainer_state.json").is_file() and max(steps(out / "copy_history.jsonl")) >= 30:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(steps(out / "copy_history.jsonl"))
    assert 30 <= killed_at < 60

    config["resume_from_checkpoint"] = "last"
    write_config(path, config)
    resumed = subprocess.run([*GROKCOPY, "train", str(path)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps(out / "copy_history.jsonl") == list(range(0, 61, 5))
    assert steps(out / "induction_history.jsonl") == [0, 1, 2, 4, 8, 16, 20, 40, 60]
    for folder in checkpoints(out):
        assert checkpoint_problem(folder) is None, folder
        for name in ("copy_eval.json", "induction.json"):
            assert json.loads((folder / name).read_text())["step"] == int(folder.name.split("-")[1])
    assert not list(out.rglob("*.tmp"))
    # every checkpoint reached the Hub, including those the killed run had not pushed yet
    branches = {b.name for b in api.list_repo_refs("user/killed").branches}
    assert {"step20", "step40", "step60", "main"} <= branches
    assert sorted(json.loads((out / "hub_pushes.json").read_text())["pushed"]) == [20, 40, 60]


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
    from grokcopy.training.callbacks import History

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


def test_a_killed_writers_temporary_is_removed_on_resume(tmp_path):
    """atomic_write's temporary of a process that died mid-write is deleted; a live process's is kept."""
    import os

    from grokcopy.training.resume import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"hub_pushes.json.{int(dead.stdout)}.140000.tmp"
    live = tmp_path / f"copy_history.jsonl.{os.getppid()}.140000.tmp"
    other = tmp_path / "notes.tmp"
    for path in (stale, live, other):
        path.write_text("half")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


# --- a NaN loss ---

@pytest.mark.parametrize("at, overrides, saved, analysed, needle", [
    (6, {"max_steps": 12, "save_steps": 4, "logging_steps": 3}, ["checkpoint-4"], [0, 2, 4],
     "Last good checkpoint: checkpoint-4; resume from it with --resume_from_checkpoint auto"),
    (2, {"max_steps": 8}, [], [0], "No checkpoint was saved before it: start over"),
], ids=["after-a-checkpoint", "before-the-first-checkpoint"])
def test_a_nan_loss_stops_in_one_line_naming_the_step_and_the_last_good_checkpoint(corpus_file, tmp_path, at,
                                                                                  overrides, saved, analysed, needle):
    out = tmp_path / "run"
    proc = faulty_train(write_config(tmp_path / "c.json", tiny_config(corpus_file, out, **overrides)), "nan", at)
    assert_one_line_error(proc, f"grokcopy: error: training loss is not finite (nan/inf) at step {at};", needle,
                          code=1)
    assert [p.name for p in checkpoints(out)] == saved  # nothing saved from the NaN steps
    assert all(checkpoint_problem(folder) is None for folder in checkpoints(out))
    assert steps(out / "copy_history.jsonl") == analysed  # no analysis of a NaN model
    assert not (out / "model.safetensors").exists()


# --- a full disk ---

def test_full_disk_while_saving_keeps_the_previous_checkpoint(corpus_file, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    path = write_config(tmp_path / "c.json", tiny_config(corpus_file, out, max_steps=12))
    proc = disk_fills_up(path, 5, "20000")  # after checkpoint-4: no file may grow past 20 kB
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = last_line(proc.stderr)
    assert last.startswith("grokcopy: error: saving checkpoint-8 failed") and "checkpoint-4 is intact" in last
    assert "Traceback" not in proc.stderr
    assert [p.name for p in checkpoints(out)] == ["checkpoint-4"] and not list(out.glob("*checkpoint-8*"))
    AutoModelForCausalLM.from_pretrained(out / "checkpoint-4")  # loads
    # with space again, the run resumes from it and completes
    config = tiny_config(corpus_file, out, max_steps=12, resume_from_checkpoint="last")
    run_training(*parse_args(config))
    assert steps(out / "copy_history.jsonl") == list(range(0, 13, 2))


def test_a_first_save_that_fails_says_there_is_no_earlier_checkpoint(corpus_file, tmp_path):
    path = write_config(tmp_path / "c.json", tiny_config(corpus_file, tmp_path / "run", max_steps=8))
    proc = disk_fills_up(path, 1, "20000")  # before checkpoint-4: its weights cannot be written
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    assert "saving checkpoint-4 failed" in line and "There is no earlier checkpoint" in line
    assert "(none)" not in line and "--resume_from_checkpoint auto (it starts over)" in line


def test_a_full_disk_between_checkpoints_is_one_line_naming_the_file_and_the_checkpoint(corpus_file, tmp_path):
    out = tmp_path / "run"
    path = write_config(tmp_path / "c.json", tiny_config(corpus_file, out, max_steps=12))
    proc = disk_fills_up(path, 5, "history")  # after checkpoint-4
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    assert line.startswith("grokcopy: error: could not write ") and "copy_history.jsonl at step 6" in line
    assert "File too large" in line and "continue from checkpoint-4" in line


FULL_CACHE = """
import resource, signal, sys
from grokcopy.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sys.exit(main(["train", sys.argv[1]]))
"""


def test_a_full_datasets_cache_is_named_as_such(corpus_file, tmp_path):
    cache = tmp_path / "cache"
    path = write_config(tmp_path / "c.json", tiny_config(corpus_file, tmp_path / "run", cache_dir=str(cache)))
    proc = subprocess.run([sys.executable, "-c", FULL_CACHE, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    assert line.startswith("grokcopy: error: cache_dir: could not write the datasets cache (File too large")
    assert "train_files" not in line


# --- damaged checkpoints ---

@pytest.fixture(scope="module")
def twelve_step_run(corpus_file, tmp_path_factory):
    """A finished 12-step run (checkpoint-4, -8, -12) to copy and damage."""
    out = tmp_path_factory.mktemp("damaged") / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=12)))
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def explicit_resume(corpus_file, tmp_path, out, checkpoint) -> subprocess.CompletedProcess:
    path = write_config(tmp_path / "c.json", tiny_config(corpus_file, out, max_steps=12,
                                                         resume_from_checkpoint=str(checkpoint)))
    return subprocess.run([*GROKCOPY, "train", str(path)], capture_output=True, text=True, timeout=300)


def truncate(path: Path, by: int) -> None:
    path.write_bytes(path.read_bytes()[:-by])


DAMAGES = {
    "state-empty": (lambda c: (c / "trainer_state.json").write_text("{}"),
                    "trainer_state.json holds no Trainer state"),
    "state-null": (lambda c: (c / "trainer_state.json").write_text("null"),
                   "trainer_state.json holds no Trainer state"),
    "state-torn": (lambda c: (c / "trainer_state.json").write_text('{"global_step": 12, "log_hi'),
                   "trainer_state.json is truncated or unreadable"),
    "optimizer-truncated": (lambda c: truncate(c / "optimizer.pt", 200), "optimizer.pt is truncated"),
    "weights-truncated": (lambda c: truncate(c / "model.safetensors", 100), "model.safetensors is truncated"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_named_refused_and_skipped(twelve_step_run, corpus_file, tmp_path, damage):
    damaging, problem = DAMAGES[damage]
    out = copy_of(twelve_step_run, tmp_path)
    damaging(out / "checkpoint-12")
    assert problem in checkpoint_problem(out / "checkpoint-12")
    before = tree(out)
    assert_one_line_error(explicit_resume(corpus_file, tmp_path, out, out / "checkpoint-12"),
                          f"resume_from_checkpoint: {out / 'checkpoint-12'} is incomplete: {problem}",
                          f"the newest complete one is {out / 'checkpoint-8'}")
    assert tree(out) == before  # refused before anything was written
    # `last` and `auto` skip it, setting it aside
    assert last_complete_checkpoint(out, set_aside_broken=True) == out / "checkpoint-8"
    assert [p.name for p in checkpoints(out)] == ["checkpoint-4", "checkpoint-8"]
    assert (out / "incomplete-checkpoint-12").is_dir()


def test_two_damaged_checkpoints_are_set_aside_and_the_run_goes_on_from_the_one_before(twelve_step_run, corpus_file,
                                                                                       tmp_path):
    out = copy_of(twelve_step_run, tmp_path)
    DAMAGES["weights-truncated"][0](out / "checkpoint-12")
    (out / "checkpoint-8" / "trainer_state.json").write_text('{"global_step": 8, "log_hi')  # torn
    assert_one_line_error(explicit_resume(corpus_file, tmp_path, out, out / "checkpoint-12"),
                          "checkpoint-12 is incomplete: model.safetensors is truncated",
                          f"the newest complete one is {out / 'checkpoint-4'}")
    _, _, args = parse_args(tiny_config(corpus_file, out, max_steps=16, resume_from_checkpoint="last"))
    assert resolve_resume(args) == str(out / "checkpoint-4")
    assert (out / "incomplete-checkpoint-12").is_dir() and (out / "incomplete-checkpoint-8").is_dir()
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=16, resume_from_checkpoint="auto",
                                         resume_allow_changes="max_steps")))
    assert steps(out / "copy_history.jsonl") == list(range(0, 17, 2))
    assert [p.name for p in checkpoints(out)] == ["checkpoint-4", "checkpoint-8", "checkpoint-12", "checkpoint-16"]
    assert all(checkpoint_problem(folder) is None for folder in checkpoints(out))


# --- a model an analysis cannot read; the Trainer's own log ---

def test_unknown_architecture_still_gets_the_copy_test(corpus_file, tmp_path, caplog):
    """An OPT model: the induction analysis names the architecture and steps aside; copy eval runs."""
    from transformers import OPTConfig, OPTForCausalLM

    from grokcopy.training.pipeline import build_trainer

    model_args, data_args, args = parse_args(tiny_config(corpus_file, tmp_path / "run", induction_eval_steps=4))
    trainer = build_trainer(model_args, data_args, args)
    vocab = trainer.model.config.vocab_size
    trainer.model = trainer.model_wrapped = OPTForCausalLM(OPTConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_attention_heads=2,
        max_position_embeddings=256, word_embed_proj_dim=32))
    with caplog.at_level("WARNING"):
        trainer.train()
    assert "does not support model_type='opt'" in caplog.text
    assert steps(tmp_path / "run" / "copy_history.jsonl") == [0, 2, 4, 6, 8]
    assert not (tmp_path / "run" / "induction_history.jsonl").exists()


def test_the_trainer_logs_its_loss_at_every_logging_step_with_the_analyses_on(corpus_file, tmp_path):
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=8, logging_steps=2, copy_eval_steps=2,
                                         induction_eval_steps=2)))
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 6, 8]
    assert [r["step"] for r in log if "eval_copy_exact_match" in r] == [0, 2, 4, 6, 8]
    assert {1, 2, 4, 8} <= {r["step"] for r in log if "eval_induction_max_layer0" in r}
