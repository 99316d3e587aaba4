"""One fitting rule for both analyses: unset settings are fitted to the model's context (and say how),
explicit ones that cannot fit are refused before training in one line, nothing is analysed past the context."""

import dataclasses

import pytest
from conftest import tiny_config

from grokcopy.copytest.task import CopyTaskConfig, CopyTaskError, fit_shape
from grokcopy.run_dir import read_jsonl
from grokcopy.training.config import ConfigError, parse_args
from grokcopy.training.pipeline import run_training

SHORT = {"max_position_embeddings": 64, "block_size": 64}


def test_unset_shape_gives_way_in_order_and_set_fields_are_refused_naming_them():
    paper, note = fit_shape(CopyTaskConfig(), 1, None)
    assert (paper.num_sequences, paper.prefix_length, paper.suffix_length, paper.query_stride) == (50, 12, 6, 5)
    assert note == ""
    fewer, note = fit_shape(CopyTaskConfig(), 1, 256)  # 12 sequences fit, queries 5, 10
    assert (fewer.num_sequences, fewer.query_stride) == (12, 5) and "12 of 50 sequences" in note
    every, note = fit_shape(CopyTaskConfig(), 1, 64)  # 2 sequences: every one queried
    assert (every.num_sequences, every.prefix_length, every.query_stride) == (2, 12, 1)
    assert "every sequence queried" in note and "queries at i = 1, 2" in note
    short, note = fit_shape(CopyTaskConfig(), 1, 20)  # even one 12 + 6 sequence and its query is too long
    assert short.prefix_length < 12 and short.suffix_length < 6 and short.query_stride == 1
    assert short.num_sequences * (short.prefix_length + short.suffix_length + 1) + short.prefix_length \
        + short.suffix_length <= 20
    with pytest.raises(CopyTaskError, match=r"^copy_query_stride: .* one query needs 5 sequences of 12 \+ 6 symbols "
                                            r"\(113 tokens\); use at most 2 \(or leave it unset"):
        fit_shape(CopyTaskConfig(query_stride=5, prefix_length=12), 1, 64)
    # an explicit stride alone is kept: the unset prefix and suffix give way
    kept, _ = fit_shape(CopyTaskConfig(query_stride=5), 1, 64)
    assert kept.query_stride == 5 and kept.num_sequences >= 5 and kept.prefix_length < 12
    with pytest.raises(CopyTaskError, match=r"^copy_prefix_length: .* use a shorter one"):
        fit_shape(CopyTaskConfig(prefix_length=30), 1, 40)


@pytest.mark.parametrize("kind", ["trainer", "sft"])
def test_the_bare_callbacks_train_in_a_plain_trainer_on_a_64_token_model_and_record_what_they_fitted(corpus_file,
                                                                                                       tmp_path, kind):
    """`CopyEvalCallback()` and `InductionHeadCallback()`, no arguments at all, in a plain Trainer and in TRL's
    SFTTrainer on a model whose context is 64 tokens: both fit themselves to it and record what they fitted."""
    import transformers
    from transformers import Trainer, TrainingArguments, default_data_collator

    from grokcopy import CopyEvalCallback, InductionHeadCallback
    from grokcopy.training.data import prepare_datasets
    from grokcopy.training.modeling import build_model

    out = tmp_path / "run"
    model_args, data_args, copy_args = parse_args(tiny_config(corpus_file, out, max_steps=2, **SHORT))
    values = {f.name: getattr(copy_args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    transformers.set_seed(0)
    tokenizer, blocks = prepare_datasets(data_args, model_args, seed=0)
    model = build_model(model_args, tokenizer)
    assert model.config.max_position_embeddings == 64
    callbacks = [CopyEvalCallback(), InductionHeadCallback()]
    if kind == "trainer":
        trainer = Trainer(model=model, args=TrainingArguments(**values), train_dataset=blocks["train"],
                          processing_class=tokenizer, data_collator=default_data_collator, callbacks=callbacks)
    else:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        text = Dataset.from_dict({"text": [tokenizer.decode(ids) for ids in blocks["train"]["input_ids"]]})
        trainer = SFTTrainer(model=model, args=SFTConfig(**values, max_length=data_args.block_size),
                             train_dataset=text, processing_class=tokenizer, callbacks=callbacks)
    trainer.train()
    copy = read_jsonl(out / "copy_history.jsonl")
    assert [r["step"] for r in copy] == [0, 1, 2]  # the default log schedule
    assert copy[0]["copy_shape"]["query_stride"] == 1 and copy[0]["copy_shape"]["num_sequences"] == 2
    induction = read_jsonl(out / "induction_history.jsonl")
    assert induction and {r["seq_len"] for r in induction} == {31}  # (64 - BOS) // 2: never past the context


def test_copytrainer_fits_an_unset_induction_s_and_refuses_an_explicit_one_that_does_not_fit(corpus_file, tmp_path):
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=4, induction_eval_steps=2, **SHORT)))
    assert {r["seq_len"] for r in read_jsonl(out / "induction_history.jsonl")} == {31}
    with pytest.raises(ConfigError, match=r"^induction_seq_len: 40 needs 81 tokens, more than the model's context "
                                          r"of 64; use at most 31"):
        run_training(*parse_args(tiny_config(corpus_file, tmp_path / "other", induction_seq_len=40, **SHORT)))
    assert not (tmp_path / "other").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match=r"^copy_query_stride: .*; use at most 2"):
        run_training(*parse_args(tiny_config(corpus_file, tmp_path / "other", copy_query_stride=5,
                                             copy_prefix_length=12, **SHORT)))


def test_copytrainer_takes_plain_training_arguments_converted_with_the_copy_defaults(corpus_file, tmp_path):
    import transformers
    from transformers import TrainingArguments, default_data_collator

    from grokcopy import CopyTrainer
    from grokcopy.training.config import CopyTrainingArguments
    from grokcopy.training.data import prepare_datasets
    from grokcopy.training.modeling import build_model

    out = tmp_path / "run"
    model_args, data_args, copy_args = parse_args(tiny_config(corpus_file, out, max_steps=2, **SHORT))
    transformers.set_seed(0)
    tokenizer, blocks = prepare_datasets(data_args, model_args, seed=0)
    args = TrainingArguments(output_dir=str(out), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
                             report_to="none", disable_tqdm=True, save_strategy="no", use_cpu=True)
    trainer = CopyTrainer(build_model(model_args, tokenizer), args, train_dataset=blocks["train"],
                          eval_dataset=blocks["validation"], processing_class=tokenizer,
                          data_collator=default_data_collator)
    assert isinstance(trainer.args, CopyTrainingArguments) and trainer.args.learning_rate == 1e-3
    assert trainer.args.copy_eval_schedule == CopyTrainingArguments.copy_eval_schedule  # the same defaults
    trainer.train()
    metrics = trainer.evaluate()  # the copy test in evaluate(): no AttributeError with converted arguments
    assert "eval_copy_exact_match" in metrics
    assert [r["step"] for r in read_jsonl(out / "copy_history.jsonl")] == [0, 1, 2]
    with pytest.raises(TypeError, match="CopyTrainer: args must be CopyTrainingArguments"):
        CopyTrainer(build_model(model_args, tokenizer), {"learning_rate": 1e-3})
