"""Every bad input of issue 18, as a new user would type it, through the real CLI in a subprocess.

Each must exit non-zero (2 for bad input) with no traceback and exactly one `grokcopy: error:` line
naming the field or file, and leave nothing behind that a later run could mistake for a run.
"""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import GROKCOPY, tiny_config

from grokcopy.run_dir import read_jsonl


def grokcopy(*args, env=None, timeout=300):
    return subprocess.run([*GROKCOPY, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(proc, *needles, code=2):
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("grokcopy: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def probe_env(corpus_file, tmp_path_factory):
    """A finished tiny run (a model folder with checkpoints), a train config, and the broken inputs."""
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    root = tmp_path_factory.mktemp("probe")
    run = root / "finished-run"
    run_training(*parse_args(tiny_config(corpus_file, run, max_steps=8)))
    truncated = root / "truncated-checkpoint"
    shutil.copytree(run / "checkpoint-8", truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    (root / "not-a-model").mkdir()
    (root / "not-a-model" / "notes.txt").write_text("hello")
    (root / "a-file").write_text("not a folder")
    (root / "tokens.txt").write_text("1 2 3")
    (root / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 4096)
    config = root / "config.json"
    config.write_text(json.dumps(tiny_config(corpus_file, root / "new-run")))
    return root


def train_probes(root: Path) -> list:
    """(id, args, needles, env): `grokcopy train CONFIG ARGS` into the never-created root/new-run."""
    ro = Path("/sys") if os.geteuid() == 0 else root / "read-only"  # root writes through permissions
    return [
        ("batch-size-0", ["--per_device_train_batch_size", "0"], ["per_device_train_batch_size: must be >= 1"], {}),
        ("learning-rate-negative", ["--learning_rate", "-1"], ["learning_rate: must be > 0"], {}),
        ("heads-3-of-hidden-128", ["--hidden_size", "128", "--num_attention_heads", "3"],
         ["num_attention_heads: 3 does not divide hidden_size 128"], {}),
        ("max-steps-negative", ["--max_steps", "-3"], ["max_steps: must be > 0"], {}),
        ("abbreviated-field", ["--learning_rat", "1e-3"], ["unknown field: learning_rat"], {}),
        ("missing-model", ["--model_name_or_path", "/nonexistent", "--train_tokenizer", "false"],
         ["model_name_or_path: no such folder: /nonexistent"], {}),
        ("unreachable-dataset", ["--dataset_name", "nobody/no-such-dataset"],
         ["dataset_name: could not load 'nobody/no-such-dataset'"],
         {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}),
        ("report-to-wandb-not-installed", ["--report_to", "wandb"], ["report_to: wandb"], {}),
        ("symbol-pattern-matching-nothing", ["--copy_symbol_pattern", "ZZZ+"], ["copy_symbol_pattern: 'ZZZ+'"], {}),
        ("binary-train-file", ["--train_files", root / "binary.txt"], ["train_files:", "binary.txt is not UTF-8 text"],
         {}),
        ("output-dir-is-a-file", ["--output_dir", root / "a-file"], ["output_dir:", "a-file is a file"], {}),
        ("output-dir-read-only", ["--output_dir", ro / "run"], ["output_dir:", "is not writable"], {}),
    ]


TRAIN_PROBES = [p[0] for p in train_probes(Path("."))]


@pytest.mark.parametrize("probe", TRAIN_PROBES)
def test_train_refuses_bad_input_in_one_line_leaving_nothing(probe_env, probe):
    _, args, needles, env = next(p for p in train_probes(probe_env) if p[0] == probe)
    if probe == "report-to-wandb-not-installed":
        from transformers.integrations import get_available_reporting_integrations

        if "wandb" in get_available_reporting_integrations():
            pytest.skip("wandb is installed here")
    if probe == "output-dir-read-only" and os.geteuid() != 0:
        (probe_env / "read-only").mkdir(mode=0o555, exist_ok=True)
    if probe == "unreachable-dataset":  # exactly one source of text: the config's train_files go
        config = json.loads((probe_env / "config.json").read_text())
        del config["train_files"]
        (probe_env / "config-hub.json").write_text(json.dumps(config))
        proc = grokcopy("train", probe_env / "config-hub.json", *args, env=env)
    else:
        proc = grokcopy("train", probe_env / "config.json", *args, env=env)
    assert_one_line_error(proc, *needles)
    assert not (probe_env / "new-run").exists()
    assert not (Path("/sys") / "run").exists() and not list(probe_env.rglob("*.tmp"))


def probe(command, args, needles, label):
    return pytest.param(command, args, needles, id=f"{command}-{label}")


RUN = "{root}/finished-run"


@pytest.mark.parametrize("command, args, needles", [
    probe("copy-test", ["{root}/truncated-checkpoint"], ["truncated-checkpoint: model.safetensors is truncated"],
          "truncated-checkpoint"),
    probe("copy-test", ["{root}/not-a-model"], ["not-a-model: not a model folder (no config.json)"], "not-a-model"),
    probe("copy-test", ["{root}/nowhere"], ["nowhere: no such folder"], "missing-folder"),
    probe("induction", ["{root}/truncated-checkpoint"], ["truncated-checkpoint: model.safetensors is truncated"],
          "truncated-checkpoint"),
    probe("induction", ["{root}/not-a-model"], ["not-a-model: not a model folder"], "not-a-model"),
    probe("copy-test", [RUN, "--num_samples", "0"], ["--num_samples: must be >= 1, got 0"], "num-samples-0"),
    probe("copy-test", [RUN, "--batch_size", "0"], ["--batch_size: must be >= 1, got 0"], "batch-size-0"),
    probe("copy-test", [RUN, "--num_sampl", "5"], ["unrecognized arguments: --num_sampl"], "abbreviated-flag"),
    probe("induction", [RUN, "--seq_len", "0"], ["--seq_len: must be >= 1, got 0"], "seq-len-0"),
    probe("induction", [RUN, "--icl_tokens", "{root}/missing.pt"], ["--icl_tokens: file not found"],
          "icl-tokens-missing"),
    probe("induction", [RUN, "--icl_tokens", "{root}/tokens.txt"], ["tokens.txt is not a .pt file"],
          "icl-tokens-not-pt"),
    probe("series", ["not a//repo", "--out", "{root}/series"], ["not a//repo: not a Hub repo id"], "malformed-repo-id"),
    probe("series", ["/a/local/path", "--out", "{root}/series"], ["/a/local/path: a local path, not a Hub repo id"],
          "local-path"),
    probe("report", [RUN, "--out", "{root}/a-file"], ["--out:", "a-file is a file, not a folder"], "out-is-a-file"),
    probe("push", ["{root}/no-such-run"], ["no-such-run: not a folder"], "missing-run-folder"),
])
def test_commands_refuse_bad_input_in_one_line_leaving_nothing(probe_env, command, args, needles):
    before = tree(probe_env)
    proc = grokcopy(command, *[a.format(root=probe_env) for a in args])
    assert_one_line_error(proc, *needles)
    assert tree(probe_env) == before


def test_a_fresh_run_into_a_folder_holding_a_run_is_one_line_and_touches_nothing(probe_env):
    run = probe_env / "finished-run"
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    proc = grokcopy("train", probe_env / "config.json", "--output_dir", run)
    assert_one_line_error(proc, "output_dir:", "already holds a run", "--resume_from_checkpoint auto",
                          "--overwrite_output_dir true")
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_a_sweep_value_that_cannot_train_is_refused_before_any_member_runs(probe_env):
    base = json.loads((probe_env / "config.json").read_text())
    del base["output_dir"]
    (probe_env / "sweep-base.yaml").write_text(yaml.safe_dump(base))
    sweep = probe_env / "bs.yaml"
    sweep.write_text(yaml.safe_dump({"base": "sweep-base.yaml", "output_dir": str(probe_env / "sweep"),
                                     "grid": {"per_device_train_batch_size": [8, 0]}, "names": {
                                         "per_device_train_batch_size": "bs"}}))
    assert_one_line_error(grokcopy("sweep", sweep), "member bs0: per_device_train_batch_size: must be >= 1, got 0")
    assert not (probe_env / "sweep").exists()


def test_report_marks_an_unfinished_run_and_names_a_failed_sweep_member(probe_env):
    sweep = probe_env / "report-sweep"
    shutil.copytree(probe_env / "finished-run", sweep / "complete", ignore=shutil.ignore_patterns("checkpoint-*"))
    stopped = sweep / "stopped"
    shutil.copytree(probe_env / "finished-run", stopped, ignore=shutil.ignore_patterns("checkpoint-*"))
    run_config = json.loads((stopped / "run_config.json").read_text())
    run_config["training"]["max_steps"] = 16  # killed at step 8 of 16: no summary.json
    (stopped / "run_config.json").write_text(json.dumps(run_config))
    (stopped / "summary.json").unlink()
    (sweep / "sweep.json").write_text(json.dumps({"members": [
        {"name": "complete", "status": "complete"}, {"name": "stopped", "status": "running"},
        {"name": "broken", "status": "failed", "error": "train_files: could not read x.jsonl"}]}))
    proc = grokcopy("report", sweep, "--out", probe_env / "report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: run stopped is unfinished (stopped at step 8 of 16)" in proc.stdout
    assert "note: run complete is unfinished" not in proc.stdout
    assert "note: sweep member broken has no run to report (failed: train_files: could not read x.jsonl)" in proc.stdout
    record = json.loads((probe_env / "report" / "report.json").read_text())
    assert {r["name"]: r["unfinished"] for r in record["runs"]} == {"complete": None,
                                                                    "stopped": "stopped at step 8 of 16"}
    assert [m["name"] for m in record["missing"]] == ["broken"]
    markdown = (probe_env / "report" / "report.md").read_text()
    assert "stopped (**unfinished**: stopped at step 8 of 16)" in markdown and "**broken**" in markdown


def test_ctrl_c_says_where_to_resume_from(probe_env):
    out = probe_env / "interrupted"
    proc = subprocess.Popen([*GROKCOPY, "train", str(probe_env / "config.json"), "--output_dir", str(out),
                             "--max_steps", "2000", "--save_steps", "4"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    saved = out / "checkpoint-4" / "trainer_state.json"
    while time.time() < deadline and proc.poll() is None and not saved.is_file():
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    last = assert_one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr),
                                 "SIGINT: training stopped at step", "--resume_from_checkpoint auto", code=130)
    assert "checkpoint-" in last
    steps = [r["step"] for r in read_jsonl(out / "copy_history.jsonl")]
    assert steps == sorted(set(steps))  # what it wrote is whole
