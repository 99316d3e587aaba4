"""Scoring: teacher forcing with a shared context equals greedy decoding, on a model that copies, and
the packed pass (every query of a sample in one row on its context's cache) equals one full forward per
query, token for token."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from grokcopy.copytest.scoring import pack_queries, predict_suffixes, score_copy_task
from grokcopy.copytest.task import CopySample, CopyTaskConfig, build_copy_task
from grokcopy.experiments.demo import demo_config_path
from grokcopy.training.config import parse_args
from grokcopy.training.data import train_tokenizer


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


@torch.inference_mode()
def one_forward_per_query(model, task):
    """The reference: context + prefix + suffix of each query as its own sequence, argmax at the suffix."""
    out = []
    for sample in task.samples:
        for i, prefix, suffix in sample.queries:
            logits = model(input_ids=torch.tensor([sample.context + prefix + suffix])).logits[0]
            start = len(sample.context) + len(prefix) - 1
            out.append((i, logits[start:start + len(suffix)].argmax(-1).tolist(), suffix))
    return out


SHAPE = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=200)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("symbols", ["tokens", "hex"])
def test_packed_queries_equal_one_forward_per_query(model_type, attention, symbols):
    """Absolute (GPT-2) and rotary positions, both mask kinds, and hex queries of unequal token lengths
    (a BPE tokenizer), so rows of one batch are padded to different lengths."""
    text = ["the quick brown fox jumps over the lazy dog 0123456789 abcdef\n"] * 50
    tokenizer = train_tokenizer(text, kind="bpe", vocab_size=300)
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **SHAPE)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()
    copy_config = CopyTaskConfig(num_samples=5, num_sequences=8, prefix_length=4, suffix_length=3, query_stride=2,
                                 symbols=symbols, seed=3)
    task = build_copy_task(tokenizer, copy_config, max_length=200)
    if symbols == "hex":
        assert len({len(p) + len(q) for s in task.samples for _, p, q in s.queries}) > 1  # unequal queries
    assert predict_suffixes(model, task, batch_size=3) == one_forward_per_query(model, task)
    assert model.config._attn_implementation == attention  # restored


def test_pack_queries_lets_a_query_see_the_context_and_itself_only():
    sample = CopySample([7, 8, 9], [(1, [1, 2], [3]), (2, [4], [5, 6])])
    contexts, queries, positions, allowed, wanted = pack_queries([sample], "cpu")
    assert contexts.tolist() == [[7, 8, 9]] and queries.tolist() == [[1, 2, 3, 4, 5, 6]]
    assert positions.tolist() == [[3, 4, 5, 3, 4, 5]]  # every query starts where the context ends
    assert wanted.tolist() == [[False, True, False, True, True, False]]
    seen = allowed[0, 0]  # keys: the 3 context tokens, then the 6 query tokens
    assert seen[2].tolist() == [True] * 6 + [False] * 3  # query 1's suffix: the context and query 1
    assert seen[5].tolist() == [True] * 3 + [False] * 3 + [True] * 3  # query 2: never query 1


def test_a_separator_the_model_never_trained_on_is_warned_about(corpus_file, tmp_path, caplog):
    """The copy test's newline is an untrained embedding for a model whose data has none (measured on the
    demo: exact match 0.20 with it vs 0.97 without, same model); the callback says so at the start."""
    import json

    from conftest import tiny_config
    from datasets import Dataset

    from grokcopy.training.config import parse_args
    from grokcopy.training.copy_callback import separator_in_training_data
    from grokcopy.training.demo_corpus import DemoCorpusConfig, generate_documents
    from grokcopy.training.pipeline import run_training

    assert separator_in_training_data(Dataset.from_dict({"input_ids": [[1, 2], [3, 4]]}), [4]) is True
    assert separator_in_training_data([{"input_ids": torch.tensor([1, 2])}], [4]) is False
    assert separator_in_training_data(Dataset.from_dict({"input_ids": [[1, 2]]}).to_iterable_dataset(), [4]) is None

    with caplog.at_level("WARNING", logger="grokcopy.training.copy_callback"):
        run_training(*parse_args(tiny_config(corpus_file, tmp_path / "plain", max_steps=2, save_strategy="no")))
    assert "does not occur in the first" in caplog.text
    caplog.clear()
    lines = tmp_path / "lines.jsonl"
    config = DemoCorpusConfig(num_documents=600, document_chars=127, newline_share=0.125, seed=1)
    lines.write_text("".join(json.dumps({"text": d}) + "\n" for d in generate_documents(config)))
    with caplog.at_level("WARNING", logger="grokcopy.training.copy_callback"):
        run_training(*parse_args(tiny_config(lines, tmp_path / "lines", max_steps=2, save_strategy="no")))
    assert "does not occur in the first" not in caplog.text
