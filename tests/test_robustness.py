"""Never lose a run: a real SIGKILL and resume, a NaN loss, a full disk, broken checkpoints, bad input."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import GROKCOPY, tiny_config
from test_cluster_faults import disk_fills_up
from transformers import TrainerCallback

from grokcopy.run_dir import checkpoint_problem, checkpoints, read_jsonl
from grokcopy.training.config import ConfigError, parse_args
from grokcopy.training.pipeline import resolve_resume, run_training


def write_config(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config))
    return path


def steps(path: Path) -> list[int]:
    return [r["step"] for r in read_jsonl(path)]


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


class PoisonWeights(TrainerCallback):
    """Makes the model produce NaN from step `at` on (what a diverging run looks like)."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.at - 1:
            with torch.no_grad():
                model.get_input_embeddings().weight.fill_(float("nan"))


def test_nan_loss_stops_naming_the_step_and_last_good_checkpoint(corpus_file, tmp_path):
    from grokcopy.training.trainer import TrainingDivergedError

    out = tmp_path / "run"
    args = parse_args(tiny_config(corpus_file, out, max_steps=12, save_steps=4, logging_steps=3))
    with pytest.raises(TrainingDivergedError, match=r"not finite.* at step 6;.*checkpoint-4"):
        run_training(*args, callbacks=[PoisonWeights(at=6)])
    assert [p.name for p in checkpoints(out)] == ["checkpoint-4"]  # nothing saved from the NaN steps
    assert checkpoint_problem(out / "checkpoint-4") is None
    assert steps(out / "copy_history.jsonl") == [0, 2, 4]  # no analysis of a NaN model
    assert not (out / "model.safetensors").exists()


def test_nan_loss_cli_is_one_line(corpus_file, tmp_path):
    path = write_config(tmp_path / "c.json", tiny_config(corpus_file, tmp_path / "run", max_steps=30,
                                                         learning_rate=1e38, max_grad_norm=0, warmup_steps=0))
    proc = subprocess.run([*GROKCOPY, "train", str(path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("grokcopy: error: training loss is not finite") and "Traceback" not in proc.stderr


def test_full_disk_while_saving_keeps_the_previous_checkpoint(corpus_file, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    path = write_config(tmp_path / "c.json", tiny_config(corpus_file, out, max_steps=12))
    proc = disk_fills_up(path, 5, "20000")  # after checkpoint-4: no file may grow past 20 kB
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("grokcopy: error: saving checkpoint-8 failed") and "checkpoint-4 is intact" in last
    assert "Traceback" not in proc.stderr
    assert [p.name for p in checkpoints(out)] == ["checkpoint-4"] and not list(out.glob("*checkpoint-8*"))
    AutoModelForCausalLM.from_pretrained(out / "checkpoint-4")  # loads
    # with space again, the run resumes from it and completes
    config = tiny_config(corpus_file, out, max_steps=12, resume_from_checkpoint="last")
    run_training(*parse_args(config))
    assert steps(out / "copy_history.jsonl") == list(range(0, 13, 2))


def test_broken_checkpoints_are_never_resumed_from(corpus_file, tmp_path):
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=12)))
    weights = out / "checkpoint-12" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    (out / "checkpoint-8" / "trainer_state.json").write_text('{"global_step": 8, "log_hi')  # torn
    assert "truncated" in checkpoint_problem(out / "checkpoint-12")
    with pytest.raises(ConfigError, match=r"checkpoint-12 is incomplete: model.safetensors is truncated.*checkpoint-4"):
        resolve_resume(parse_args(tiny_config(corpus_file, out, resume_from_checkpoint=str(out / "checkpoint-12")))[2])
    _, _, args = parse_args(tiny_config(corpus_file, out, max_steps=16, resume_from_checkpoint="last"))
    assert resolve_resume(args) == str(out / "checkpoint-4")
    assert (out / "incomplete-checkpoint-12").is_dir() and (out / "incomplete-checkpoint-8").is_dir()
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=16, resume_from_checkpoint="last",
                                         resume_allow_changes="max_steps")))
    assert steps(out / "copy_history.jsonl") == list(range(0, 17, 2))
    assert [p.name for p in checkpoints(out)] == ["checkpoint-4", "checkpoint-8", "checkpoint-12", "checkpoint-16"]


def test_tokenizer_without_eos(corpus_file, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({c: i for i, c in enumerate("abcdefghij")} | {"[UNK]": 10}, "[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    config = tiny_config(corpus_file, tmp_path / "out", train_tokenizer=False, tokenizer_name_or_path=str(tmp_path / "tok"))
    path = write_config(tmp_path / "c.json", config)
    proc = subprocess.run([*GROKCOPY, "train", str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "has no EOS token" in proc.stderr and "append_eos false" in proc.stderr
    assert not (tmp_path / "out").exists()


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


def test_the_first_ctrl_c_stops_at_the_step_boundary_and_the_second_at_once():
    """A KeyboardInterrupt raised inside a finalizer is swallowed by Python; a flag cannot be."""
    import os

    from transformers import TrainerControl

    from grokcopy.training.callbacks import StopOnInterrupt

    before = signal.getsignal(signal.SIGINT)
    with StopOnInterrupt() as interrupt:
        control = TrainerControl()
        interrupt.on_step_end(None, None, control)
        assert not control.should_training_stop
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs in the main thread between bytecodes
        assert interrupt.requested
        interrupt.on_step_end(None, None, control)
        assert control.should_training_stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back
