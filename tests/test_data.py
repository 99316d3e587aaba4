"""Data: local files of each kind, packing into blocks, caching, and bad input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_config

from grokcopy.training.config import ConfigError, parse_args
from grokcopy.training.data import prepare_datasets
from grokcopy.training.pipeline import build_trainer

TEXTS = [f"line {i}: the quick brown fox {i * 7} jumps over the lazy dog\n" * 3 for i in range(200)]


def write(tmp_path, kind, texts=TEXTS, column="text"):
    path = tmp_path / f"data.{kind}"
    if kind == "txt":
        path.write_text("\n".join(texts))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({column: t}) + "\n" for t in texts))
    else:
        pq.write_table(pa.table({column: texts}), path)
    return path


def args_for(path, tmp_path, **extra):
    config = tiny_config(path, tmp_path / "out", tokenizer_type="bpe", tokenizer_vocab_size=300, **extra)
    return parse_args(config)


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_files_pack_into_full_blocks(tmp_path, kind):
    model_args, data_args, _ = args_for(write(tmp_path, kind), tmp_path)
    tokenizer, blocks = prepare_datasets(data_args, model_args)
    assert len(blocks["train"]) > 10 and len(blocks["validation"]) >= 1
    assert all(len(ids) == 128 for ids in blocks["train"]["input_ids"])
    assert blocks["train"][0]["labels"] == blocks["train"][0]["input_ids"]
    n_eos = sum(ids.count(tokenizer.eos_token_id) for ids in blocks["train"]["input_ids"])
    assert n_eos > 0  # documents are separated by EOS


def test_streaming_and_workers(tmp_path):
    path = write(tmp_path, "jsonl")
    model_args, data_args, _ = args_for(path, tmp_path, streaming=True, max_eval_samples=10)
    _, blocks = prepare_datasets(data_args, model_args)
    first = next(iter(blocks["train"]))
    assert len(first["input_ids"]) == 128 and first["labels"] == first["input_ids"]
    assert sum(1 for _ in blocks["validation"]) >= 1
    model_args, data_args, _ = args_for(path, tmp_path, preprocessing_num_workers=2)
    _, blocks = prepare_datasets(data_args, model_args)
    assert all(len(ids) == 128 for ids in blocks["train"]["input_ids"])


def test_text_column_is_configurable(tmp_path):
    path = write(tmp_path, "jsonl", column="content")
    model_args, data_args, _ = args_for(path, tmp_path, text_column="content")
    _, blocks = prepare_datasets(data_args, model_args)
    assert len(blocks["train"]) > 0


def test_second_run_loads_tokenized_data_from_cache(tmp_path):
    model_args, data_args, _ = args_for(write(tmp_path, "jsonl"), tmp_path)
    _, first = prepare_datasets(data_args, model_args)
    files = [f["filename"] for f in first["train"].cache_files]
    _, second = prepare_datasets(data_args, model_args)
    assert files and [f["filename"] for f in second["train"].cache_files] == files


def test_missing_text_column(tmp_path):
    path = write(tmp_path, "jsonl", column="body")
    model_args, data_args, _ = args_for(path, tmp_path)
    with pytest.raises(ConfigError, match="text_column: 'text' is not a column.*body"):
        prepare_datasets(data_args, model_args)


def test_only_empty_rows(tmp_path):
    model_args, data_args, _ = args_for(write(tmp_path, "jsonl", texts=[""] * 50), tmp_path)
    with pytest.raises(ConfigError, match="only empty texts"):
        prepare_datasets(data_args, model_args)


def test_no_rows(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    model_args, data_args, _ = args_for(path, tmp_path)
    with pytest.raises(ConfigError, match="train_files: empty file"):
        prepare_datasets(data_args, model_args)


def test_texts_shorter_than_a_block(tmp_path):
    model_args, data_args, _ = args_for(write(tmp_path, "jsonl", texts=["tiny"] * 20), tmp_path)
    with pytest.raises(ConfigError, match="fewer than one block"):
        prepare_datasets(data_args, model_args)


def test_block_size_over_model_context(tmp_path):
    model_args, data_args, args = args_for(write(tmp_path, "jsonl"), tmp_path, block_size=512)
    with pytest.raises(ConfigError, match="longer than the model's context of 256"):
        build_trainer(model_args, data_args, args)
    assert not (tmp_path / "out").exists()


def test_vocabulary_too_small_for_copy_test(tmp_path):
    path = write(tmp_path, "jsonl", texts=["a\n" * 400] * 30)
    model_args, data_args, args = parse_args(tiny_config(path, tmp_path / "out"))
    with pytest.raises(ConfigError, match="vocabulary too small"):
        build_trainer(model_args, data_args, args)
    assert not (tmp_path / "out").exists()
