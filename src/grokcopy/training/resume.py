"""Resuming a run: which checkpoint, and whether the new command may continue what the old one started.

A resumed run is one run only if it keeps training on the same data and measuring the same way. What
changes the data or the measurement (the batch, block size, seed, tokenizer, corpus, model, the copy
test's shape, the induction analysis's s) would silently mix two runs in one history: refused, in one
line naming the fields. What may change mid-run (the learning rate, max_steps, the schedule, ...) is
taken only when asked for (`--resume_allow_changes`), and each change is recorded in run_config.json
with the step it took effect, so a report never attributes the whole run to the new value. Bookkeeping
(where it logs, how often it saves, the Hub) may change freely.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from grokcopy.errors import ConfigError
from grokcopy.run_dir import RUN_CONFIG, RunFolder, checkpoint_problem, last_complete_checkpoint

logger = logging.getLogger(__name__)

# What a resumed run must keep: the data it trains on and how it is measured.
FIXED_DATA = {"dataset_name", "dataset_config_name", "dataset_split", "train_files", "validation_files", "text_column",
              "validation_split_percentage", "block_size", "append_eos", "tokenizer_name_or_path", "train_tokenizer",
              "tokenizer_type", "tokenizer_vocab_size", "max_train_samples", "max_eval_samples", "demo_corpus",
              "demo_corpus_config", "streaming"}
FIXED_MODEL = {"model_name_or_path", "revision", "preset", "model_type", "num_hidden_layers", "hidden_size",
               "num_attention_heads", "num_key_value_heads", "intermediate_size", "max_position_embeddings",
               "vocab_size", "tie_word_embeddings", "lora_r", "lora_alpha", "lora_target_modules",
               "knockout_attention_layers", "attention_layer_drop"}
FIXED_TRAINING = {"seed", "data_seed", "per_device_train_batch_size", "gradient_accumulation_steps", "world_size",
                  "tokens_per_step", "copy_num_samples", "copy_num_sequences", "copy_prefix_length",
                  "copy_suffix_length", "copy_query_stride", "copy_symbols", "copy_symbol_pattern", "copy_separator",
                  "copy_seed", "induction_seq_len", "induction_batch_size", "copyable_loss_blocks",
                  "ablation_num_samples"}
# How a run is placed, logged, saved or shared: never a change of the run.
BOOKKEEPING = {"output_dir", "run_name", "logging_dir", "resume_from_checkpoint", "overwrite_output_dir",
               "resume_allow_changes", "report_to", "disable_tqdm", "per_device_eval_batch_size",
               "copy_eval_batch_size", "local_rank", "preprocessing_num_workers", "cache_dir", "project",
               "skip_memory_metrics", "ddp_timeout", "do_train", "do_eval", "log_on_each_node",
               "torch_empty_cache_steps", "push_to_hub", "induction_threshold"}
BOOKKEEPING_PREFIXES = ("hub_", "logging_", "save_", "eval_", "dataloader_", "log_level", "trackio_")


def resolve_resume(training_args) -> str | None:
    """`resume_from_checkpoint`: a folder; `last`, the newest complete checkpoint in output_dir; `auto`, that
    checkpoint when there is one, else a fresh start (one command for a first start and every requeue).

    A checkpoint left half-written by a crash is never resumed from: with `last` / `auto`, newer broken
    ones are renamed `incomplete-checkpoint-N` (by the main process) and the newest complete one is used.
    """
    value = training_args.resume_from_checkpoint
    if value in (None, "", "false", "False"):
        return None
    if value in ("last", "true", "True", "auto"):
        last = last_complete_checkpoint(training_args.output_dir, set_aside_broken=training_args.should_save)
        if last is None and value == "auto":
            return None
        if last is None:
            raise ConfigError(f"resume_from_checkpoint: no complete checkpoint-* folder in {training_args.output_dir} "
                              "(`--resume_from_checkpoint auto` starts a new run when there is none)")
        return str(last)
    if not Path(value).is_dir():
        raise ConfigError(f"resume_from_checkpoint: not a folder: {value}")
    problem = checkpoint_problem(value)
    if problem:
        last = last_complete_checkpoint(Path(value).parent)
        hint = f"; the newest complete one is {last}" if last else ""
        raise ConfigError(f"resume_from_checkpoint: {value} is incomplete: {problem}{hint}")
    return value


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries of writers that died mid-write (SIGKILL, OOM): `run_dir.atomic_write` names them
    `<file>.<pid>.<thread>.tmp`, so one whose process is gone can never be completed. Returns them."""
    removed = []
    for tmp in Path(folder).glob("*.tmp"):
        parts = tmp.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)  # still alive (another process of this run): leave it
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        except PermissionError:
            pass
    return removed


def settings_record(model_args, data_args, training_args, tokens_per_step) -> dict:
    """Every argument of the run as run_config.json stores it (tokens masked by TrainingArguments.to_dict)."""
    record = {"model": asdict(model_args), "data": asdict(data_args), "training": training_args.to_dict(),
              "world_size": training_args.world_size, "tokens_per_step": tokens_per_step}
    return json.loads(json.dumps(record, default=str))


# Unset (None) means the paper's value, which is what runs of earlier versions stored explicitly: the same test.
UNSET_MEANS = {"copy_num_sequences": 50, "copy_prefix_length": 12, "copy_suffix_length": 6, "copy_query_stride": 5,
               "induction_seq_len": 100}


def _flat(record: dict) -> dict:
    flat = {}
    for part in ("model", "data", "training"):
        section = record.get(part)
        flat.update(section if isinstance(section, dict) else {})
    flat.update({k: record.get(k) for k in ("world_size", "tokens_per_step")})
    return {k: UNSET_MEANS[k] if v is None and k in UNSET_MEANS else v for k, v in flat.items()}


def _kind(name: str) -> str:
    if name in FIXED_DATA | FIXED_MODEL | FIXED_TRAINING:
        return "fixed"
    if name in BOOKKEEPING or name.startswith(BOOKKEEPING_PREFIXES):
        return "bookkeeping"
    return "changeable"


def setting_changes(stored: dict, new: dict) -> dict[str, tuple]:
    """Fields whose value differs between two run_config records: name -> (stored, new)."""
    old, now = _flat(stored), _flat(new)
    if old.get("demo_corpus") and now.get("demo_corpus"):
        old.pop("train_files", None)  # the generated corpus's cache path: its config and seed are compared
        now.pop("train_files", None)
    return {k: (old.get(k), now.get(k)) for k in sorted(set(old) | set(now))
            if k in old and old.get(k) != now.get(k) and _kind(k) != "bookkeeping"}


def _shown(changes: dict) -> str:
    return ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in changes.items())


def check_resume_settings(output_dir, new: dict, allow: str | None, step: int) -> dict | None:
    """The run_config.json to write when resuming at `step`: the stored one, plus a record of the allowed
    changes. Raises ConfigError (one line) for a change the run cannot take. None: no stored config."""
    run = RunFolder(output_dir)
    path, stored = run.run_config, run.read_run_config()
    if not isinstance(stored, dict):
        logger.warning("resuming without %s (not a grokcopy run, or an old one): the settings cannot be compared",
                       path)
        return None
    changes = setting_changes(stored, new)
    fixed = {k: v for k, v in changes.items() if _kind(k) == "fixed"}
    if fixed:
        raise ConfigError(f"resume_from_checkpoint: {_shown(fixed)} differ from the run in {output_dir}: they change "
                          "the data or the measurement, and one history would hold two runs. Resume with the stored "
                          "values, or start a new run in another output_dir")
    allowed = {a.strip() for a in (allow or "").split(",") if a.strip()}
    asked = {k: v for k, v in changes.items() if "all" in allowed or k in allowed}
    refused = {k: v for k, v in changes.items() if k not in asked}
    if refused:
        names = ",".join(refused)
        raise ConfigError(f"resume_from_checkpoint: {_shown(refused)} differ from the run in {output_dir}; to change "
                          f"them from step {step} on, add --resume_allow_changes {names} (recorded in {RUN_CONFIG})")
    if asked:
        logger.warning("resumed at step %d with %s (recorded in %s)", step, _shown(asked), RUN_CONFIG)
        stored.setdefault("changes", []).append({"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                 "fields": {k: {"from": a, "to": b} for k, (a, b) in asked.items()}})
    return stored


def tokenizer_change(checkpoint: str | Path, tokenizer) -> str | None:
    """How `tokenizer` differs from the one saved with `checkpoint` (None: same, or none saved there)."""
    from transformers import AutoTokenizer

    folder = Path(checkpoint)
    if tokenizer is None or not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        return None
    try:
        saved = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError):
        return None
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    a, b = saved.get_vocab(), tokenizer.get_vocab()
    if a == b:
        return None
    differ = sum(a.get(k) != v for k, v in b.items()) + len(set(a) - set(b))
    return f"the tokenizer differs from the one saved in {folder} ({len(a)} vs {len(b)} tokens, {differ} entries differ)"


def write_settings(output_dir, record: dict) -> None:
    RunFolder(output_dir).write_run_config(record)
