"""Model construction: a fresh causal LM from a named shape, or a pretrained one to continue.

Fresh models go through `AutoConfig.for_model` + `AutoModelForCausalLM.from_config`, so any
architecture transformers knows can be pretrained; shape fields use the standard config names
(`hidden_size`, `num_hidden_layers`, ...), which GPT-2 / GPT-NeoX configs map to their own.
"""

from __future__ import annotations

import json
import logging

from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from grokcopy.errors import one_line
from grokcopy.training.config import ConfigError, ModelArguments

logger = logging.getLogger(__name__)

# Named shapes. `paper-162m` is the paper's LLaMA (12 x 768, 12 heads, 3072 MLP, 1024 context,
# untied embeddings); `demo` is the 2-core CPU model of `grokcopy demo`.
PRESETS: dict[str, dict] = {
    "paper-162m": dict(
        model_type="llama", num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
        num_key_value_heads=12, intermediate_size=3072, max_position_embeddings=1024,
        tie_word_embeddings=False,
    ),
    "demo": dict(
        model_type="llama", num_hidden_layers=2, hidden_size=128, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=512, max_position_embeddings=40,
        tie_word_embeddings=False,
    ),
    "tiny": dict(
        model_type="llama", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
        tie_word_embeddings=False,
    ),
}

_SHAPE_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "max_position_embeddings", "attention_dropout", "tie_word_embeddings",
                 "vocab_size")


def model_config_kwargs(model_args: ModelArguments) -> dict:
    """The preset, then explicit shape fields, then the JSON overrides: later wins."""
    if model_args.preset is not None and model_args.preset not in PRESETS:
        raise ConfigError(f"preset: unknown preset {model_args.preset!r}; known: {', '.join(PRESETS)}")
    kwargs = dict(PRESETS.get(model_args.preset, {"model_type": model_args.model_type}))
    if model_args.preset is None or model_args.model_type != "llama":
        kwargs["model_type"] = model_args.model_type
    kwargs.update({k: getattr(model_args, k) for k in _SHAPE_FIELDS if getattr(model_args, k) is not None})
    if model_args.model_config_overrides:
        try:
            overrides = json.loads(model_args.model_config_overrides)
        except json.JSONDecodeError as err:
            raise ConfigError(f"model_config_overrides: not a JSON object ({err.msg})") from None
        if not isinstance(overrides, dict):
            raise ConfigError("model_config_overrides: expected a JSON object")
        kwargs.update(overrides)
    return kwargs


def build_model(model_args: ModelArguments, tokenizer):
    """Create the model to train; its vocabulary always covers the tokenizer. With `lora_r` > 0, a PEFT
    LoRA adapter on the pretrained model (continued pretraining that trains and saves only the adapter)."""
    model = _build_base_model(model_args, tokenizer)
    if model_args.lora_r <= 0:
        return model
    if not model_args.model_name_or_path:
        raise ConfigError("lora_r: a LoRA adapter continues a pretrained model; give model_name_or_path")
    from peft import LoraConfig, get_peft_model

    targets = model_args.lora_target_modules
    config = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                        task_type="CAUSAL_LM",
                        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")])
    try:
        model = get_peft_model(model, config)
    except ValueError as err:
        raise ConfigError(f"lora_target_modules: {one_line(err)}") from None
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("LoRA r=%d on %s: %.3fM of %.2fM parameters train", model_args.lora_r, model_args.model_name_or_path,
                trainable / 1e6, total / 1e6)
    return model


def _build_base_model(model_args: ModelArguments, tokenizer) -> PreTrainedModel:
    attn = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    if model_args.model_name_or_path:
        model = AutoModelForCausalLM.from_pretrained(
            model_args.model_name_or_path, revision=model_args.revision, **attn
        )
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        return model
    kwargs = model_config_kwargs(model_args)
    model_type = kwargs.pop("model_type")
    kwargs.setdefault("vocab_size", len(tokenizer))
    if kwargs["vocab_size"] < len(tokenizer):
        raise ConfigError(f"vocab_size: {kwargs['vocab_size']} is smaller than the tokenizer's {len(tokenizer)} tokens")
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        kwargs.setdefault(name, getattr(tokenizer, name, None))
    try:
        config = AutoConfig.for_model(model_type, **kwargs)
    except ValueError as err:
        raise ConfigError(f"model_type: {one_line(err)}") from None
    model = AutoModelForCausalLM.from_config(config, **attn)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Built %s from scratch: %.2fM parameters", type(model).__name__, n_params / 1e6)
    return model
