"""Invariants of the paper's copy test, independent of any model."""

import numpy as np
import pytest

from grokcopy.copytest.task import CopyTaskConfig, CopyTaskError, build_copy_task, separator_ids
from grokcopy.training.data import train_tokenizer

PAPER = CopyTaskConfig(num_samples=6)


@pytest.fixture(scope="module")
def char_tok():
    text = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n" * 3
    return train_tokenizer([text], kind="char")


@pytest.fixture(scope="module")
def bpe_tok():
    text = ["the quick brown fox jumps over the lazy dog 0123456789 abcdef\n"] * 50
    return train_tokenizer(text, kind="bpe", vocab_size=300)


def test_paper_shape_tokens(char_tok):
    task = build_copy_task(char_tok, PAPER)
    sep = separator_ids(char_tok)
    assert task.num_sequences == 50 and task.query_indices == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    for sample in task.samples:
        assert len(sample.context) == 50 * (12 + 6 + len(sep))
        seqs = [sample.context[k * 19:(k + 1) * 19] for k in range(50)]
        assert all(s[18:] == sep for s in seqs)
        prefixes = {tuple(s[:12]) for s in seqs}
        suffixes = {tuple(s[12:18]) for s in seqs}
        assert len(prefixes) == 50 and len(suffixes) == 50
        for i, prefix, suffix in sample.queries:
            assert prefix == seqs[i - 1][:12] and suffix == seqs[i - 1][12:18]
        specials = set(char_tok.all_special_ids) | set(sep)
        assert not specials & set(sample.context[k] for k in range(len(sample.context)) if k % 19 < 18)


def test_deterministic_for_a_seed(char_tok):
    a = build_copy_task(char_tok, PAPER)
    b = build_copy_task(char_tok, PAPER)
    c = build_copy_task(char_tok, CopyTaskConfig(num_samples=6, seed=99))
    assert [s.context for s in a.samples] == [s.context for s in b.samples]
    assert [s.context for s in a.samples] != [s.context for s in c.samples]
    assert len({tuple(s.context) for s in a.samples}) == 6  # samples differ from each other


def test_symbols_cover_the_vocabulary(char_tok):
    task = build_copy_task(char_tok, CopyTaskConfig(num_samples=40))
    used = {t for s in task.samples for t in s.context}
    eligible = len(char_tok) - len(char_tok.all_special_ids)  # minus newline, plus newline itself
    assert len(used) == eligible


def test_fits_a_short_context_and_says_so(char_tok):
    task = build_copy_task(char_tok, PAPER, max_length=256)
    assert task.num_sequences == 12 and task.query_indices == [5, 10]
    assert "12 of 50 sequences" in task.note
    assert task.max_length <= 256


def test_context_too_short_is_an_error(char_tok):
    explicit = CopyTaskConfig(num_samples=4, num_sequences=50, prefix_length=12, suffix_length=6, query_stride=5)
    with pytest.raises(CopyTaskError, match="^copy_query_stride: .*too short.*use at most 3"):
        build_copy_task(char_tok, explicit, max_length=80)
    with pytest.raises(CopyTaskError, match="too short"):
        build_copy_task(char_tok, CopyTaskConfig(num_samples=4, prefix_length=12, suffix_length=6), max_length=18)


def test_vocabulary_too_small(char_tok):
    tiny = train_tokenizer(["ab\n"], kind="char")
    with pytest.raises(CopyTaskError, match="vocabulary too small"):
        build_copy_task(tiny, CopyTaskConfig(num_samples=2, num_sequences=50))


def test_hex_mode_uses_the_tokenizer(bpe_tok):
    task = build_copy_task(bpe_tok, CopyTaskConfig(num_samples=3, symbols="hex"))
    text = bpe_tok.decode(task.samples[0].context)
    lines = text.split("\n")[:-1]
    assert len(lines) == 50 and all(len(line) == 18 for line in lines)
    assert all(set(line) <= set("0123456789abcdef") for line in lines)
    assert len({line[:12] for line in lines}) == 50 and len({line[12:] for line in lines}) == 50
    i, prefix, suffix = task.samples[0].queries[0]
    assert bpe_tok.decode(prefix + suffix) == lines[i - 1]


def test_config_from_training_args():
    from grokcopy.training.config import parse_args

    _, _, args = parse_args({"copy_num_samples": 7, "copy_symbols": "hex", "output_dir": "/tmp/unused"})
    config = CopyTaskConfig.from_training_args(args)
    assert config.num_samples == 7 and config.symbols == "hex" and config.prefix_length is None  # the paper's, fitted
    assert np.isclose(args.learning_rate, 5e-5)  # every TrainingArguments default untouched


def test_symbol_pattern_restricts_the_symbols(char_tok):
    task = build_copy_task(char_tok, CopyTaskConfig(num_samples=20, symbol_pattern="[0-9a-z]"))
    newline = separator_ids(char_tok)[0]
    used = {char_tok.convert_ids_to_tokens(t) for s in task.samples for t in s.context if t != newline}
    assert used == set("0123456789abcdefghijklmnopqrstuvwxyz")
    with pytest.raises(CopyTaskError, match="^copy_symbol_pattern: '\\[0-9' is not a regular expression"):
        build_copy_task(char_tok, CopyTaskConfig(num_samples=2, symbol_pattern="[0-9"))
    with pytest.raises(CopyTaskError, match=r"^copy_symbol_pattern: '\[01\]' matches 2 usable vocabulary entries, "
                                            "too few for"):  # the field is named, not "vocabulary too small"
        build_copy_task(char_tok, CopyTaskConfig(num_samples=2, symbol_pattern="[01]"))


def test_another_separator_replaces_the_newline_and_is_never_a_symbol(char_tok):
    """copy_separator: for a model whose training data never held a newline (its embedding untrained)."""
    task = build_copy_task(char_tok, CopyTaskConfig(num_samples=10, num_sequences=4, prefix_length=4,
                                                    suffix_length=2, query_stride=1, separator="Z",
                                                    symbol_pattern="[0-9a-z]"))
    z, newline = separator_ids(char_tok, "Z")[0], separator_ids(char_tok)[0]
    for sample in task.samples:
        assert sample.context[6::7] == [z] * 4 and newline not in sample.context
        assert all(z not in prefix + suffix for _, prefix, suffix in sample.queries)
    with pytest.raises(CopyTaskError, match="empty string"):
        build_copy_task(char_tok, CopyTaskConfig(num_samples=2, separator=""))
    with pytest.raises(CopyTaskError, match="cannot encode the copy test's separator '\u00e9'"):
        build_copy_task(char_tok, CopyTaskConfig(num_samples=2, separator="\u00e9"))
    from grokcopy.training.config import parse_args

    args = parse_args({"output_dir": "/tmp/x", "copy_separator": "Z"})[2]
    assert CopyTaskConfig.from_training_args(args).separator == "Z"
