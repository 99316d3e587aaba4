"""Bad input, as a new user would type it, through the real CLI in a subprocess: each value that cannot
train (the same rules for `grokcopy train` and every sweep member), each missing, foreign or damaged
file or folder, each malformed flag of every command.

Each must exit 2 with no traceback and exactly one `grokcopy: error:` line naming the field or file,
and leave nothing behind that a later run could mistake for a run. Failures met while a run trains
(NaN, a full disk, damaged checkpoints) are in test_failures.py; a run's records (histories,
run_config.json, sweep.json) left torn, mixed or foreign and handed to the report or an analysis are
in test_cluster_faults.py.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import GROKCOPY, assert_one_line_error, tiny_config, tree


def grokcopy(*args, env=None, timeout=300):
    return subprocess.run([*GROKCOPY, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def save_tokenizer_without_eos(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({c: i for i, c in enumerate("abcdefghij")} | {"[UNK]": 10}, "[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(folder)


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
    save_tokenizer_without_eos(root / "tokenizer-without-eos")
    config = root / "config.json"
    config.write_text(json.dumps(tiny_config(corpus_file, root / "new-run")))
    return root


def train_probes(root: Path) -> list:
    """(id, args, needles, env): `grokcopy train CONFIG ARGS` into the never-created root/new-run."""
    ro = Path("/sys") if os.geteuid() == 0 else root / "read-only"  # root writes through permissions
    return [
        ("batch-size-0", ["--per_device_train_batch_size", "0"], ["per_device_train_batch_size: must be >= 1, got 0"],
         {}),
        ("learning-rate-negative", ["--learning_rate", "-1"], ["learning_rate: must be > 0, got -1.0"], {}),
        ("heads-3-of-hidden-128", ["--hidden_size", "128", "--num_attention_heads", "3"],
         ["num_attention_heads: 3 does not divide hidden_size 128"], {}),
        ("kv-heads-3-of-heads-4", ["--num_key_value_heads", "3"],
         ["num_key_value_heads: 3 does not divide num_attention_heads 4"], {}),
        ("max-steps-negative", ["--max_steps", "-3"],
         ["max_steps: must be > 0 (or -1: train num_train_epochs), got -3"], {}),
        ("validation-split-100", ["--validation_split_percentage", "100"],
         ["validation_split_percentage: must be between 0 and 100, got 100.0"], {}),
        ("abbreviated-field", ["--learning_rat", "1e-3"], ["unknown field: learning_rat"], {}),
        ("missing-model", ["--model_name_or_path", "/nonexistent", "--train_tokenizer", "false"],
         ["model_name_or_path: no such folder: /nonexistent"], {}),
        ("tokenizer-without-eos", ["--train_tokenizer", "false", "--tokenizer_name_or_path",
                                   root / "tokenizer-without-eos"],
         ["tokenizer_name_or_path:", "has no EOS token", "append_eos false"], {}),
        ("unreachable-dataset", ["--dataset_name", "nobody/no-such-dataset"],
         ["dataset_name: could not load 'nobody/no-such-dataset'"],
         {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}),
        ("report-to-wandb-not-installed", ["--report_to", "wandb"], ["report_to: wandb"], {}),
        ("symbol-pattern-matching-nothing", ["--copy_symbol_pattern", "ZZZ+"], ["copy_symbol_pattern: 'ZZZ+'"], {}),
        ("binary-train-file", ["--train_files", root / "binary.txt"], ["train_files:", "binary.txt is not UTF-8 text"],
         {}),
        ("output-dir-is-a-file", ["--output_dir", root / "a-file"], ["output_dir:", "a-file is a file, not a folder"],
         {}),
        ("output-dir-under-a-file", ["--output_dir", root / "a-file" / "run"],
         ["output_dir:", "a-file is a file, not a folder"], {}),
        ("output-dir-read-only", ["--output_dir", ro / "run"], ["output_dir:", "is not writable ("], {}),
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
        config = probe_env / "config-hub.json"
    else:
        config = probe_env / "config.json"
    before = tree(probe_env)
    assert_one_line_error(grokcopy("train", config, *args, env=env), *needles)
    assert tree(probe_env) == before  # no new-run, no read-only/run, no temporary
    assert not (Path("/sys") / "run").exists()


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
    assert_one_line_error(proc, "output_dir:", "finished-run already holds a run (checkpoint-4, checkpoint-8, "
                          "copy_history.jsonl, ...); continue it with --resume_from_checkpoint auto",
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

