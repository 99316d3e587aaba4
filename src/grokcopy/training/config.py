"""Argument dataclasses and the config-file + command-line parser.

Every `TrainingArguments` field works unchanged: `CopyTrainingArguments` extends it (as TRL's
configs do) with the copy-evaluation schedule, and `ModelArguments` / `DataArguments` describe
what to train on. A config is a YAML or JSON file of any of these fields; command-line
`--field value` pairs override it. Both go through the same argparse types, so a wrong type in
the file is caught exactly like a wrong type on the command line.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml
from transformers import HfArgumentParser, TrainingArguments
from transformers.utils import is_torch_bf16_gpu_available

from grokcopy.analysis.induction_config import InductionConfig
from grokcopy.copytest.task import COPY_BATCH_SIZE, CopyTaskConfig, check_minimums, with_settings
from grokcopy.devices import has_accelerator
from grokcopy.errors import ConfigError, main_error, one_line  # noqa: F401 (re-exported)
from grokcopy.training.model_shape import _check, knockout_layers, model_config_kwargs, validate_shape

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Which model to train: a fresh one from a preset/shape, or a pretrained one to continue."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue from this model (local folder or Hub id) instead of from scratch."}
    )
    revision: str = field(default="main", metadata={"help": "Hub revision of model_name_or_path (e.g. step1000)."})
    preset: str | None = field(
        default=None, metadata={"help": "Named model shape from grokcopy.training.model_shape.PRESETS (e.g. demo, paper-162m)."}
    )
    model_type: str = field(default="llama", metadata={"help": "transformers model_type for a model from scratch."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Layers (overrides the preset)."})
    hidden_size: int | None = field(default=None, metadata={"help": "Residual width (overrides the preset)."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Query heads (overrides the preset)."})
    num_key_value_heads: int | None = field(default=None, metadata={"help": "Key/value heads (grouped-query)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "MLP width (overrides the preset)."})
    max_position_embeddings: int | None = field(default=None, metadata={"help": "Context length of the model."})
    vocab_size: int | None = field(default=None, metadata={"help": "Defaults to the tokenizer's length."})
    attention_dropout: float | None = field(default=None, metadata={"help": "Attention dropout (paper: 0.1)."})
    tie_word_embeddings: bool | None = field(default=None, metadata={"help": "Tie input and output embeddings."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa or flash_attention_2."})
    knockout_attention_layers: str | None = field(
        default=None, metadata={"help": "Comma-separated layers whose attention output projection is zeroed and frozen "
                                        "for the whole run, e.g. '1': nothing these layers' attention computes reaches "
                                        "the residual stream (a knock-out: can deeper layers take the circuit?)."}
    )
    attention_layer_drop: float | None = field(
        default=None, metadata={"help": "Training only: the probability that one layer's whole attention output is "
                                        "dropped for one sequence (stochastic depth on the attention branch; the kept "
                                        "ones scaled by 1 / (1 - p)). A circuit carried by one layer then fails on "
                                        "those sequences, so other layers are pushed to hold it too. Unset or 0: off."}
    )
    model_config_overrides: str | None = field(
        default=None, metadata={"help": "JSON object of further config fields, e.g. '{\"rope_theta\": 500000}'."}
    )
    lora_r: int = field(default=0, metadata={"help": "Train a PEFT LoRA adapter of this rank on model_name_or_path "
                                                     "(0: train all weights)."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "Comma-separated module names, or all-linear (PEFT's own choice)."}
    )


@dataclass
class DataArguments:
    """Where the pretraining text comes from and how it becomes fixed-size blocks."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset config."})
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    streaming: bool = field(default=False, metadata={"help": "Stream the Hub dataset instead of downloading it."})
    train_files: list[str] | None = field(default=None, metadata={"help": "Local .txt/.jsonl/.json/.parquet files."})
    validation_files: list[str] | None = field(default=None, metadata={"help": "Held-out files (else a split)."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    validation_split_percentage: float = field(default=1.0, metadata={"help": "Percent held out for eval_loss."})
    block_size: int = field(default=1024, metadata={"help": "Tokens per training block (texts are packed)."})
    append_eos: bool = field(default=True, metadata={"help": "End every document with EOS before packing."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "num_proc for tokenization."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer (else the model's)."})
    train_tokenizer: bool = field(default=False, metadata={"help": "Train a tokenizer on the training text."})
    tokenizer_type: Literal["bpe", "char"] = field(default="bpe", metadata={"help": "bpe (byte-level BPE) or char (one symbol each)."})
    tokenizer_vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size of a trained BPE tokenizer."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the eval set."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache directory."})
    demo_corpus: bool = field(default=False, metadata={"help": "Train on the generated demo corpus (grokcopy demo)."})
    demo_corpus_config: str | None = field(
        default=None, metadata={"help": "JSON of DemoCorpusConfig fields, e.g. '{\"spans_per_document\": 4}'."}
    )


# The analyses' settings the training arguments carry, each field as prefix + name (copy_num_samples, ...).
ANALYSIS_SETTINGS = ((CopyTaskConfig, "copy_"), (InductionConfig, "induction_"))


@dataclass
@with_settings(InductionConfig, "induction_", after="induction_eval_steps")
@with_settings(CopyTaskConfig, "copy_", after="copy_eval_steps")
class CopyTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the paper's copy test and the induction analysis, and when to run them. Their
    settings are `CopyTaskConfig`'s fields as `copy_*` and `InductionConfig`'s as `induction_*` (with_settings);
    shape fields left unset are the paper's values fitted to the model's context (copytest.task.fit_shape)."""

    copy_eval_schedule: Literal["log", "linear", "none"] = field(
        default="log",
        metadata={"help": "log: steps 0,1,2,4,...,copy_eval_steps then every copy_eval_steps; linear; or none."},
    )
    copy_eval_steps: int = field(default=500, metadata={"help": "Copy-test interval in optimizer steps."})
    copy_eval_batch_size: int = field(
        default=COPY_BATCH_SIZE, metadata={"help": "Samples per forward pass in the copy test (the numbers do not "
                                                   "depend on it)."}
    )
    copy_stop_exact_match: float | None = field(
        default=None, metadata={"help": "Stop training at the first copy test whose exact match reaches this (a "
                                        "sweep's stop rule; a run that never does stops at max_steps, censored)."}
    )
    gradient_noise_scale: bool = field(
        default=False, metadata={"help": "Log McCandlish's simple gradient noise scale (needs "
                                         "gradient_accumulation_steps >= 2; grokcopy.training.noise_scale)."}
    )
    copyable_loss_blocks: int = field(
        default=64, metadata={"help": "Held-out blocks whose loss is split into copyable tokens (the bigram occurred "
                                      "earlier in the block) and the rest, at every copy test (0: off)."}
    )
    induction_analysis: bool = field(
        default=True, metadata={"help": "Analyse induction heads at every checkpoint save (induction.json/png)."}
    )
    induction_eval_steps: int | None = field(
        default=None, metadata={"help": "Also analyse every N steps (log-spaced below N), besides saves."}
    )
    ablation_eval_steps: int | None = field(
        default=None, metadata={"help": "Ablate every head and each layer's attention on the copy test every N steps "
                                        "(log-spaced below N): ablation_history.jsonl, eval_ablation_* in the log "
                                        "(grokcopy.training.ablation_callback). Off when unset."}
    )
    ablation_num_samples: int = field(
        default=32, metadata={"help": "Copy-test samples each ablation during training scores (the same ones for all)."}
    )
    ablation_layer_sets: str | None = field(
        default=None, metadata={"help": "Sets of layers also ablated together during training, e.g. '1+2,1+3'."}
    )
    copy_forecast: bool = field(
        default=True, metadata={"help": "Forecast the copy jump at each copy test / induction analysis (logged as "
                                        "forecast_*; grokcopy.training.forecast_callback)."}
    )
    induction_threshold: float = field(default=0.3, metadata={"help": "I above which a layer's head has formed."})
    hub_checkpoint_series: bool = field(
        default=False,
        metadata={"help": "Push every checkpoint to branch step{N} of hub_model_id (with its analyses and card)."},
    )
    save_schedule: Literal["steps", "log"] = field(
        default="steps", metadata={"help": "log: also save checkpoints at steps 0, 1, 2, 4, ... below save_steps "
                                           "(Pythia's early grid: a pushed series then has step0 and the early "
                                           "dynamics); steps: every save_steps only (the Trainer's own)."}
    )
    hub_license: str | None = field(
        default="apache-2.0", metadata={"help": "License of the pushed checkpoints, in the model card's metadata."}
    )
    hub_push_timeout: float = field(
        default=60.0, metadata={"help": "HTTP timeout (s) of one Hub request; a hanging request is retried."}
    )
    hub_push_wait: float = field(
        default=600.0, metadata={"help": "Seconds to wait at the end of training for pending pushes to land."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start a new run in an output_dir that holds one: the old run is moved to "
                                         "OUTPUT_DIR.previous-N first (nothing is deleted). Without it such a folder "
                                         "is refused unless resuming."}
    )
    resume_allow_changes: str | None = field(
        default=None, metadata={"help": "Settings a resumed run may change, comma-separated (e.g. learning_rate,max_steps; "
                                        "`all` for every one that does not change the data or the measurement); each "
                                        "change is recorded in run_config.json with the step it took effect."}
    )
    fast_path: bool = field(
        default=True, metadata={"help": "On a CUDA GPU: bf16 mixed precision and TF32 matmuls unless fp16/bf16/tf32 "
                                        "are set (fused AdamW and sdpa attention are already the defaults)."}
    )

    def __post_init__(self):
        if self.fast_path and is_torch_bf16_gpu_available() and not self.fp16 and not self.bf16:
            self.bf16 = True
            self.tf32 = True if self.tf32 is None else self.tf32
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not self.use_cpu and not has_accelerator():
            # Without this, Trainer on a CPU-only machine ignores torchrun's process group and every
            # process trains alone, all writing into one output_dir.
            logger.info("torchrun on a machine without an accelerator: use_cpu=True (DDP over gloo)")
            self.use_cpu = True
        super().__post_init__()
        if self.hub_checkpoint_series and not self.hub_model_id:
            raise ConfigError("hub_checkpoint_series: needs hub_model_id (the repo that gets one branch per checkpoint)")
        for name in ("copy_eval_steps", "copy_eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for config_cls, prefix in ANALYSIS_SETTINGS:
            check_minimums(config_cls, self, prefix, error=ConfigError)
        if self.copyable_loss_blocks < 0:
            raise ConfigError(f"copyable_loss_blocks: must be >= 0 (0: off), got {self.copyable_loss_blocks}")
        for name in ("ablation_eval_steps", "ablation_num_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.ablation_layer_sets:
            from grokcopy.analysis.ablation import parse_layer_sets

            try:
                parse_layer_sets(self.ablation_layer_sets)
            except ValueError as err:
                raise ConfigError(f"ablation_layer_sets: {err}") from None


ARGUMENT_CLASSES = (ModelArguments, DataArguments, CopyTrainingArguments)


def validate_arguments(model_args: ModelArguments, data_args: DataArguments, args: CopyTrainingArguments) -> None:
    """Values that cannot train, refused in one line before anything runs (`grokcopy train` and
    every sweep member alike): without this they pass argparse and fail minutes later, or worse,
    silently do something else (max_steps -3 trains a whole epoch)."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        _check(getattr(args, name) >= 1, name, "must be >= 1", getattr(args, name))
    _check(args.learning_rate > 0, "learning_rate", "must be > 0", args.learning_rate)
    _check(args.max_steps > 0 or args.max_steps == -1, "max_steps",
           "must be > 0 (or -1: train num_train_epochs)", args.max_steps)
    if args.max_steps == -1:
        _check(args.num_train_epochs > 0, "num_train_epochs", "must be > 0 (or set max_steps)", args.num_train_epochs)
    for name in ("weight_decay", "warmup_steps", "max_grad_norm"):
        value = getattr(args, name)
        _check(value is None or value >= 0, name, "must be >= 0", value)
    _check(0 < data_args.validation_split_percentage < 100, "validation_split_percentage",
           "must be between 0 and 100", data_args.validation_split_percentage)
    _check(data_args.block_size >= 2, "block_size", "must be >= 2", data_args.block_size)
    for name in ("max_train_samples", "max_eval_samples", "preprocessing_num_workers"):
        value = getattr(data_args, name)
        _check(value is None or value >= 1, name, "must be >= 1", value)
    _check(data_args.tokenizer_vocab_size >= 1, "tokenizer_vocab_size", "must be >= 1", data_args.tokenizer_vocab_size)
    _check(model_args.lora_r >= 0, "lora_r", "must be >= 0 (0: train all weights)", model_args.lora_r)
    for name in ("attention_dropout", "lora_dropout", "attention_layer_drop"):
        value = getattr(model_args, name)
        _check(value is None or 0 <= value < 1, name, "must be in [0, 1)", value)
    knockout_layers(model_args)  # parses, or says which entry is not a layer
    if not model_args.model_name_or_path:  # a fresh model: its shape must build
        validate_shape(model_config_kwargs(model_args))


class GrokcopyArgumentParser(HfArgumentParser):
    """HfArgumentParser whose errors are exceptions carrying one line, not a page of usage, and that
    takes no abbreviations (argparse would read `--learning_rat` as `--learning_rate`)."""

    def __init__(self):
        super().__init__(ARGUMENT_CLASSES, prog="grokcopy train", allow_abbrev=False)
        # A field whose default is None takes `None` / `null` back: a sweep's `null` (or `--save_total_limit None`)
        # then unsets what its base config set, instead of being dropped and leaving the base's value in force.
        self.nullable = set()
        for action in self._actions:
            if action.default is None and action.type is not None and not action.choices:
                action.type = _or_none(action.type)
                self.nullable.add(action.dest)

    def error(self, message):
        raise ConfigError(message)

    @property
    def field_names(self) -> set[str]:
        return {f.name for cls in ARGUMENT_CLASSES for f in fields(cls) if f.init}


def _or_none(convert):
    def parse(text):
        return None if str(text) in ("None", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in its errors
    return parse


@functools.cache
def nullable_fields() -> frozenset[str]:
    """The fields `null` can set (default None): the others take their default when a config says null."""
    return frozenset(GrokcopyArgumentParser().nullable)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config into a flat dict of field -> value."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                          f"{one_line(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value at the top level")
    return data


def config_to_argv(config: dict[str, Any]) -> list[str]:
    """Turn typed config values into argv so argparse checks their types like command-line ones."""
    argv = []
    for key, value in config.items():
        if value is None:  # null: None where the field takes it (it may unset a base config's value), else default
            if key in nullable_fields():
                argv += [f"--{key}", "None"]
            continue
        argv.append(f"--{key}")
        if isinstance(value, (list, tuple)):
            argv.extend(json.dumps(v) if isinstance(v, dict) else str(v) for v in value)
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        else:
            argv.append(str(value))
    return argv


def parse_args(config: dict[str, Any] | str | Path | None = None, overrides: list[str] | None = None):
    """Parse a config (dict or file) plus command-line overrides into the three argument dataclasses.

    Raises ConfigError with a one-line message for unknown fields, wrong types and invalid values.
    """
    parser = GrokcopyArgumentParser()
    source = ""
    if isinstance(config, (str, Path)):
        source = f"{config}: "
        config = load_config_file(config)
    config = dict(config or {})
    unknown = sorted(set(config) - parser.field_names)
    if unknown:
        raise ConfigError(f"{source}unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    argv = config_to_argv(config) + list(overrides or [])
    namespace_args, remaining = parser.parse_known_args(argv)
    if remaining:
        flags = [a for a in remaining if a.startswith("-")] or remaining
        raise ConfigError(f"unknown field{'s' if len(flags) > 1 else ''}: {', '.join(a.lstrip('-') for a in flags)}")
    try:
        parsed = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(one_line(err)) from None
    validate_arguments(*parsed)
    return parsed
