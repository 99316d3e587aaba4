"""Pretraining data: raw text -> tokenizer -> packed `block_size` blocks, all through `datasets`.

The recipe is `run_clm.py`'s: batched tokenization (`num_proc` workers), an EOS after every
document, concatenation and slicing into equal blocks (no padding, the tail is dropped), labels =
inputs. Tokenized datasets carry a fingerprint derived from the raw data, the tokenizer's
vocabulary and the block size, so a second run loads them from the `datasets` cache instead of
re-tokenizing.
"""

from __future__ import annotations

import hashlib
import logging
from itertools import chain
from pathlib import Path

from datasets import DatasetDict, IterableDataset, load_dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from grokcopy.errors import one_line
from grokcopy.training.config import ConfigError, DataArguments, ModelArguments

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
_BUILDERS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet",
             ".csv": "csv"}


def _builder_for(files: list[str], field_name: str) -> str:
    builders = set()
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"{field_name}: file not found: {name}")
        if path.suffix not in _BUILDERS:
            raise ConfigError(f"{field_name}: unsupported file type {path.suffix!r} ({name}); "
                              f"use one of {', '.join(sorted(_BUILDERS))}")
        if path.stat().st_size == 0:
            raise ConfigError(f"{field_name}: empty file: {name}")
        if _BUILDERS[path.suffix] != "parquet":
            _check_utf8(path, field_name)
        builders.add(_BUILDERS[path.suffix])
    if len(builders) > 1:
        raise ConfigError(f"{field_name}: mixes file types ({', '.join(sorted(builders))}); use one kind")
    return builders.pop()


def _check_utf8(path: Path, field_name: str) -> None:
    """Text, JSON and CSV files must be UTF-8: say so, instead of datasets' "an error occurred while
    generating the dataset". The first 64 KiB are checked here, the rest by the error it causes."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not merely a character cut by the 64 KiB boundary
            raise ConfigError(f"{field_name}: {path} is not UTF-8 text (byte {head[err.start]:#04x} at offset "
                              f"{err.start})") from None


def _decode_error(err: BaseException) -> UnicodeDecodeError | None:
    while err is not None and not isinstance(err, UnicodeDecodeError):
        err = err.__cause__ or err.__context__
    return err


def _load_files(files: list[str], field_name: str, cache_dir: str | None, streaming: bool = False):
    builder = _builder_for(files, field_name)
    try:
        return load_dataset(builder, data_files={"train": files}, split="train", cache_dir=cache_dir,
                            streaming=streaming)
    except Exception as err:  # datasets raises many kinds; the user needs the file and the reason
        written = _write_error(err)
        if written is not None:  # the files were read; writing the cache failed (a full disk, a read-only cache)
            raise ConfigError(f"cache_dir: could not write the datasets cache ({written.strerror}: "
                              f"{written.filename or cache_dir or 'HF_DATASETS_CACHE'}); free space there or set "
                              "--cache_dir / HF_DATASETS_CACHE to another folder") from err
        reason = "not UTF-8 text" if _decode_error(err) else one_line(err)
        raise ConfigError(f"{field_name}: could not read {', '.join(files)}: {reason}") from err


def _write_error(err: BaseException) -> OSError | None:
    """An OSError of writing (no space, quota, read-only, permission) anywhere in the exception's chain."""
    import errno

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
            return err
        err = err.__cause__ or err.__context__
    return None


def load_raw_datasets(data_args: DataArguments, seed: int = 42) -> DatasetDict | dict:
    """Train and validation splits of raw text (IterableDatasets when streaming)."""
    if bool(data_args.dataset_name) == bool(data_args.train_files):
        raise ConfigError("dataset_name / train_files: give exactly one source of training text")
    if data_args.dataset_name:
        try:
            train = load_dataset(data_args.dataset_name, data_args.dataset_config_name,
                                 split=data_args.dataset_split, streaming=data_args.streaming,
                                 cache_dir=data_args.cache_dir)
        except Exception as err:  # offline, unknown, gated, bad config or split: datasets raises many kinds
            raise ConfigError(f"dataset_name: could not load {data_args.dataset_name!r}: {one_line(err)}") from None
    else:
        train = _load_files(data_args.train_files, "train_files", data_args.cache_dir, data_args.streaming)
    columns = train.column_names or []
    if columns and data_args.text_column not in columns:
        raise ConfigError(f"text_column: {data_args.text_column!r} is not a column of the data "
                          f"(columns: {', '.join(columns)})")
    if data_args.validation_files:
        validation = _load_files(data_args.validation_files, "validation_files", data_args.cache_dir)
    elif isinstance(train, IterableDataset):
        n_eval = data_args.max_eval_samples or 1000
        validation, train = train.take(n_eval), train.skip(n_eval)
    else:
        if len(train) == 0:
            raise ConfigError("the training data has no rows")
        n_eval = max(1, int(len(train) * data_args.validation_split_percentage / 100))
        if len(train) < 2:
            raise ConfigError("the training data has a single row: nothing left to hold out for evaluation")
        split = train.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
        train, validation = split["train"], split["test"]
    if data_args.max_train_samples is not None and not isinstance(train, IterableDataset):
        train = train.select(range(min(len(train), data_args.max_train_samples)))
    if data_args.max_eval_samples is not None and not isinstance(validation, IterableDataset):
        validation = validation.select(range(min(len(validation), data_args.max_eval_samples)))
    return {"train": train, "validation": validation}


def _text_iterator(dataset, text_column: str, limit: int = 200_000):
    for i, row in enumerate(dataset):
        if i >= limit:
            break
        if row[text_column]:
            yield row[text_column]


def train_tokenizer(texts, kind: str = "bpe", vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Train a tokenizer with the `tokenizers` library: byte-level BPE, or one token per character."""
    specials = list(SPECIAL_TOKENS.values())
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    elif kind == "char":
        # A BPE with no room for merges is exactly a character vocabulary of the training text.
        tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
        tok.decoder = decoders.Fuse()
        # The newline is always in the vocabulary: the copy test separates its sequences with it.
        trainer = trainers.BpeTrainer(vocab_size=len(specials), special_tokens=specials, show_progress=False,
                                      initial_alphabet=["\n"])
    else:
        raise ConfigError(f"tokenizer_type: expected bpe or char, got {kind!r}")
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def load_tokenizer(data_args: DataArguments, model_args: ModelArguments, raw_train=None):
    """The tokenizer named in the config, the model's own, or one trained on the training text."""
    if data_args.train_tokenizer:
        if raw_train is None:
            raise ConfigError("train_tokenizer: needs training text")
        tokenizer = train_tokenizer(_text_iterator(raw_train, data_args.text_column), data_args.tokenizer_type,
                                    data_args.tokenizer_vocab_size)
        logger.info("Trained a %s tokenizer with %d tokens", data_args.tokenizer_type, len(tokenizer))
        return tokenizer
    name = data_args.tokenizer_name_or_path or model_args.model_name_or_path
    if not name:
        raise ConfigError("tokenizer_name_or_path: give a tokenizer, a model_name_or_path, or train_tokenizer true")
    field_name = "model_name_or_path" if name == model_args.model_name_or_path else "tokenizer_name_or_path"
    revision = model_args.revision if name == model_args.model_name_or_path else "main"
    tokenizer = load_pretrained(AutoTokenizer, name, field_name, revision=revision)
    if data_args.append_eos and tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer_name_or_path: {name} has no EOS token to end each document with; "
                          "give a tokenizer with an eos_token, or set append_eos false")
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_pretrained(auto_class, name: str, field_name: str, **kwargs):
    """`auto_class.from_pretrained(name)`, its failure one line naming the field (a missing folder, a
    Hub id that does not exist or cannot be reached, a folder that is not a model)."""
    path = Path(name).expanduser()
    if name.startswith(("/", "./", "../", "~")) and not path.is_dir():
        raise ConfigError(f"{field_name}: no such folder: {name}")
    try:
        return auto_class.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{field_name}: cannot load {name}: {one_line(err)}") from None


def tokenizer_fingerprint(tokenizer) -> str:
    """Stable hash of what tokenization depends on (vocabulary, merges, normalisation)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def pack_into_blocks(raw: dict, tokenizer, block_size: int, text_column: str = "text",
                     num_proc: int | None = None, append_eos: bool = True) -> dict:
    """Tokenize (EOS after each document), concatenate and cut into `block_size` blocks with labels."""
    eos = tokenizer.eos_token_id if append_eos else None
    tok_key = tokenizer_fingerprint(tokenizer)

    def tokenize(batch):
        ids = tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]
        return {"input_ids": [x + [eos] if (x and eos is not None) else x for x in ids]}

    def group(batch):
        joined = list(chain.from_iterable(batch["input_ids"]))
        total = len(joined) // block_size * block_size
        blocks = [joined[i:i + block_size] for i in range(0, total, block_size)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}

    out = {}
    for split, ds in raw.items():
        if isinstance(ds, IterableDataset):
            cols = ds.column_names
            out[split] = (ds.map(tokenize, batched=True, remove_columns=cols)
                          .map(group, batched=True, batch_size=1000))
            continue
        key = hashlib.sha256(f"{ds._fingerprint}|{tok_key}|{block_size}|{text_column}|eos{eos}".encode()).hexdigest()
        tokenized = ds.map(tokenize, batched=True, num_proc=num_proc, remove_columns=ds.column_names,
                           new_fingerprint=key[:16] + "t", desc=f"Tokenizing {split}")
        out[split] = tokenized.map(group, batched=True, batch_size=1000, num_proc=num_proc,
                                   new_fingerprint=key[:16] + "g", desc=f"Packing {split} into {block_size}-token blocks")
        if len(out[split]) == 0:
            n_tokens = sum(len(x) for x in tokenized["input_ids"])
            what = "has only empty texts" if n_tokens == 0 else f"holds {n_tokens} tokens, fewer than one block"
            raise ConfigError(f"block_size: the {split} data {what} (block_size={block_size}); "
                              "add text or lower block_size")
    return out


def prepare_datasets(data_args: DataArguments, model_args: ModelArguments, seed: int = 42):
    """Everything data: (tokenizer, {'train': blocks, 'validation': blocks})."""
    if data_args.block_size < 2:
        raise ConfigError(f"block_size: must be >= 2, got {data_args.block_size}")
    raw = load_raw_datasets(data_args, seed=seed)
    tokenizer = load_tokenizer(data_args, model_args, raw["train"])
    blocks = pack_into_blocks(raw, tokenizer, data_args.block_size, data_args.text_column,
                              data_args.preprocessing_num_workers, data_args.append_eos)
    return tokenizer, blocks
