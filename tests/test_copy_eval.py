"""Scoring: teacher forcing with a shared context equals greedy decoding, on a model that copies."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grokcopy.copytest.scoring import predict_suffixes, score_copy_task
from grokcopy.copytest.task import CopyTaskConfig, build_copy_task
from grokcopy.experiments.demo import demo_config_path
from grokcopy.training.config import parse_args


def demo_copy_config(**overrides) -> CopyTaskConfig:
    """The copy test exactly as the demo runs it (scaled to the demo model's context)."""
    _, _, args = parse_args(demo_config_path(), ["--output_dir", "/tmp/unused"])
    config = CopyTaskConfig.from_training_args(args)
    return CopyTaskConfig(**{**config.__dict__, **overrides})


@pytest.fixture(scope="module")
def trained(demo_run):
    out, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    return AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)


@pytest.mark.parametrize("symbols", ["tokens", "hex"])
def test_teacher_forcing_equals_generate(trained, symbols):
    model, tokenizer = trained
    task = build_copy_task(tokenizer, demo_copy_config(num_samples=24, symbols=symbols, seed=7),
                           max_length=model.config.max_position_embeddings)
    results = predict_suffixes(model, task, batch_size=5)
    flat = [(s, i, p, q) for s in task.samples for (i, p, q) in s.queries]
    for (sample, i, prefix, suffix), (j, predicted, reference) in zip(flat, results):
        assert (i, reference) == (j, suffix)
        ids = torch.tensor([sample.context + prefix])
        generated = model.generate(ids, max_new_tokens=len(suffix), do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        assert (generated == suffix) == (predicted == suffix)
        assert generated[0] == predicted[0]  # the first step is the same greedy decision


def test_batch_size_does_not_change_predictions(trained):
    model, tokenizer = trained
    task = build_copy_task(tokenizer, demo_copy_config(num_samples=6), max_length=model.config.max_position_embeddings)
    assert predict_suffixes(model, task, batch_size=1) == predict_suffixes(model, task, batch_size=6)


def test_score_matches_the_metric_by_hand(trained):
    model, tokenizer = trained
    task = build_copy_task(tokenizer, demo_copy_config(num_samples=6), max_length=model.config.max_position_embeddings)
    result = score_copy_task(model, task)
    pairs = predict_suffixes(model, task)
    assert result["exact_match"] == pytest.approx(sum(p == r for _, p, r in pairs) / len(pairs))
    tokens = sum(a == b for _, p, r in pairs for a, b in zip(p, r)) / sum(len(r) for _, _, r in pairs)
    assert result["token_accuracy"] == pytest.approx(tokens)
    assert set(result["per_position"]) == {str(i) for i in task.query_indices}
