"""The analysis callbacks in trainers that are not CopyTrainer: a plain `transformers.Trainer` and TRL's
`SFTTrainer`, wired with `callbacks=[...]` (no trainer reference) or `attach_analyses(trainer)`, on one
process and under torchrun. Each run is the CopyTrainer reference run (same seed, model, data and order)
trained by the other trainer, so the histories must agree with the reference's record by record."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from hub_server import free_port

from grokcopy.run_dir import read_jsonl
from grokcopy.training.config import parse_args

INDUCTION_KEYS = ("attention", "ep", "induction", "prev_token", "prefix_matching")
RUN = dict(induction_eval_steps=4)  # copy test every 2 steps (linear), induction at 0, 1, 2, 4, 8 and each save


def run_other_trainer(config: dict, kind: str, wiring: str, extra: tuple = (), after: tuple = ()) -> list:
    """Train the run of `config` with a plain Trainer or an SFTTrainer and the two callbacks; return its log_history.

    Model, tokenizer and packed blocks are made exactly as `grokcopy train` makes them; the training
    arguments are plain TrainingArguments (SFTConfig) with the same values."""
    import transformers
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    from grokcopy import CopyEvalCallback, InductionHeadCallback, attach_analyses
    from grokcopy.training.data import prepare_datasets
    from grokcopy.training.modeling import build_model

    model_args, data_args, copy_args = parse_args(config)
    values = {f.name: getattr(copy_args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    copy = {"schedule": "linear", "every": copy_args.copy_eval_steps, "num_samples": copy_args.copy_num_samples}
    induction = {"every": copy_args.induction_eval_steps}
    transformers.set_seed(copy_args.seed)
    with copy_args.main_process_first(local=False):
        tokenizer, blocks = prepare_datasets(data_args, model_args, seed=copy_args.seed)
    model = build_model(model_args, tokenizer)
    seen_logs = []

    class KeepLogs(TrainerCallback):  # listed after the analyses: sees what they add to the Trainer's log
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen_logs.append({**logs, "step": state.global_step})

    callbacks = [CopyEvalCallback(**copy), InductionHeadCallback(**induction)] if wiring == "callbacks" else []
    if kind == "trainer":
        trainer = Trainer(model=model, args=TrainingArguments(**values), train_dataset=blocks["train"],
                          eval_dataset=blocks["validation"], processing_class=tokenizer,
                          data_collator=default_data_collator, callbacks=[*extra, *callbacks, *after, KeepLogs()])
    else:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        # The same corpus as text: each packed block decoded (a lossless round trip for this tokenizer).
        text = {split: Dataset.from_dict({"text": [tokenizer.decode(ids) for ids in blocks[split]["input_ids"]]})
                for split in ("train", "validation")}
        trainer = SFTTrainer(model=model, args=SFTConfig(**values, max_length=data_args.block_size),
                             train_dataset=text["train"], eval_dataset=text["validation"], processing_class=tokenizer,
                             callbacks=[*extra, *callbacks, *after, KeepLogs()])
        assert trainer.train_dataset["input_ids"] == blocks["train"]["input_ids"]  # SFT tokenized it back
    if wiring == "attach":
        assert len(attach_analyses(trainer, copy=copy, induction=induction)) == 2
    trainer.train()
    return trainer.state.log_history, seen_logs


@pytest.fixture(scope="module")
def reference(corpus_file, tmp_path_factory):
    """The CopyTrainer run all others are compared with."""
    from grokcopy.training.pipeline import run_training

    out = tmp_path_factory.mktemp("reference") / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, **RUN)))
    return out


def assert_same_histories(reference: Path, other: Path, atol: float = 1e-6):
    copy_ref, copy_other = (read_jsonl(folder / "copy_history.jsonl") for folder in (reference, other))
    assert [r["step"] for r in copy_other] == [r["step"] for r in copy_ref] == [0, 2, 4, 6, 8]
    assert [r["tokens"] for r in copy_other] == [r["tokens"] for r in copy_ref] == [s * 8 * 128 for s in range(0, 9, 2)]
    for a, b in zip(copy_ref, copy_other):
        assert (a["exact_match"], a["token_accuracy"], a["num_samples"]) == (b["exact_match"], b["token_accuracy"], 8)
        assert a["per_position"] == b["per_position"]
        if b.get("copyable_loss") is not None:  # continuous, where the tiny run's exact match is still 0
            assert abs(a["copyable_loss"] - b["copyable_loss"]) < 10 * atol
            assert abs(a["other_loss"] - b["other_loss"]) < 10 * atol
    ind_ref, ind_other = (read_jsonl(folder / "induction_history.jsonl") for folder in (reference, other))
    assert [r["step"] for r in ind_other] == [r["step"] for r in ind_ref] == [0, 1, 2, 4, 8]
    for a, b in zip(ind_ref, ind_other):
        assert a["seq_len"] == b["seq_len"] == 100
        for key in INDUCTION_KEYS:
            assert np.allclose(a[key], b[key], rtol=0, atol=atol), (a["step"], key)
    for step in (4, 8):  # every checkpoint carries its own analyses
        checkpoint = other / f"checkpoint-{step}"
        assert json.loads((checkpoint / "copy_eval.json").read_text())["step"] == step
        assert json.loads((checkpoint / "induction.json").read_text())["step"] == step
        assert (checkpoint / "induction.png").stat().st_size > 5_000


def logged_at(log_history: list, key: str) -> list[int]:
    return [r["step"] for r in log_history if key in r]


@pytest.mark.parametrize("kind", ["trainer", "sft"])
def test_callbacks_without_a_trainer_reference(reference, corpus_file, tmp_path, kind):
    out = tmp_path / "run"
    log_history, seen_logs = run_other_trainer(tiny_config(corpus_file, out, **RUN), kind, "callbacks")
    assert_same_histories(reference, out)
    # The metrics are in log_history at their own step, once each...
    assert logged_at(log_history, "eval_copy_exact_match") == [0, 2, 4, 6, 8]
    assert logged_at(log_history, "eval_induction_max_layer1") == [0, 1, 2, 4, 8]
    # ...and in the Trainer's next log entry, seen by the callbacks listed after them.
    assert logged_at(seen_logs, "eval_copy_exact_match") == [2, 4, 6, 8]  # step 0's joined step 2's, 8's were logged at 8
    assert all("loss" in r for r in seen_logs if "eval_copy_exact_match" in r)
    # The Trainer keeps logging its own loss on schedule; each record carries the latest loss logged before it.
    losses = {r["step"]: r["loss"] for r in log_history if "loss" in r}
    assert sorted(losses) == [2, 4, 6, 8]
    records = read_jsonl(out / "copy_history.jsonl")
    assert [r["loss"] for r in records] == [None, None, losses[2], losses[4], losses[6]]


@pytest.mark.parametrize("kind", ["trainer", "sft"])
def test_attach_analyses_logs_through_the_trainer(reference, corpus_file, tmp_path, kind):
    out = tmp_path / "run"
    log_history, _ = run_other_trainer(tiny_config(corpus_file, out, report_to="tensorboard", **RUN), kind, "attach")
    assert_same_histories(reference, out)
    assert logged_at(log_history, "eval_copy_exact_match") == [0, 2, 4, 6, 8]
    assert logged_at(log_history, "eval_induction_max_layer1") == [0, 1, 2, 4, 8]
    assert logged_at(log_history, "loss") == [2, 4, 6, 8]  # the analyses' logs did not cancel the Trainer's
    # the held-out split reads trainer.eval_dataset
    assert logged_at(log_history, "eval_copyable_loss") == [0, 2, 4, 6, 8]
    assert all(r.get("copyable_loss") is not None for r in read_jsonl(out / "copy_history.jsonl"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((out / "runs").rglob("events.out.tfevents*")).parent),
                              size_guidance={"images": 0, "scalars": 0})  # keep all (the default samples 4 images)
    events.Reload()
    assert {"eval/copy_exact_match", "eval/induction_max_layer1"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("eval/copy_exact_match")] == [0, 2, 4, 6, 8]
    assert [e.step for e in events.Scalars("eval/induction_layer1_head0")] == [0, 1, 2, 4, 8]
    assert [e.step for e in events.Images("induction/heatmap")] == [0, 1, 2, 4, 8]


TORCHRUN_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_any_trainer import run_other_trainer
run_other_trainer(json.loads(sys.argv[2]), "trainer", "callbacks")
"""


def test_plain_trainer_under_torchrun_matches_one_process(reference, corpus_file, tmp_path):
    """2 processes x 4 rows = the reference's 8 rows a step: the same copy and induction histories, one writer."""
    out = tmp_path / "ddp"
    config = tiny_config(corpus_file, out, per_device_train_batch_size=4, use_cpu=True, **RUN)
    script = tmp_path / "run_plain.py"
    script.write_text(TORCHRUN_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(script), str(Path(__file__).parent), json.dumps(config)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_same_histories(reference, out, atol=1e-5)


def test_divergence_guard_in_a_plain_trainer(corpus_file, tmp_path):
    """Weights turned NaN after step 3: the guard sees step 4's logged grad_norm, stops before checkpoint-4."""
    import torch
    from transformers import TrainerCallback

    from grokcopy import DivergenceGuard

    class PoisonAfterStep3(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 3:
                with torch.no_grad():
                    model.get_input_embeddings().weight.fill_(float("nan"))

    guard = DivergenceGuard()
    out = tmp_path / "run"
    log_history, _ = run_other_trainer(tiny_config(corpus_file, out, save_steps=2, **RUN), "trainer", "callbacks",
                                       extra=(guard, PoisonAfterStep3()))
    assert guard.diverged_at == 4
    assert max(r["step"] for r in log_history) == 4  # stopped at the logging step
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-4").exists()
    # the analyses of step 4 (scheduled before the Trainer logged) found the weights NaN and measured nothing
    assert [r["step"] for r in read_jsonl(out / "copy_history.jsonl")] == [0, 2]
    assert [r["step"] for r in read_jsonl(out / "induction_history.jsonl")] == [0, 1, 2]


def test_attach_analyses_refuses_a_second_copy(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    from grokcopy import CopyEvalCallback, attach_analyses

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"),
                      callbacks=[CopyEvalCallback()])
    with pytest.raises(ValueError, match="already has a CopyEvalCallback"):
        attach_analyses(trainer)
    assert [type(cb).__name__ for cb in attach_analyses(trainer, copy=False)] == ["InductionHeadCallback"]
