"""Model construction: a fresh causal LM from a named shape, or a pretrained one to continue.

Fresh models go through `AutoConfig.for_model` + `AutoModelForCausalLM.from_config`, so any
architecture transformers knows can be pretrained; shape fields use the standard config names
(`hidden_size`, `num_hidden_layers`, ...), which GPT-2 / GPT-NeoX configs map to their own.
"""

from __future__ import annotations

import logging

import torch

from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from grokcopy.errors import one_line
from grokcopy.training.config import ConfigError, ModelArguments
from grokcopy.training.model_shape import PRESETS, knockout_layers, model_config_kwargs  # noqa: F401 (re-exported)
from grokcopy.training.data import load_pretrained

logger = logging.getLogger(__name__)

def build_model(model_args: ModelArguments, tokenizer):
    """Create the model to train; its vocabulary always covers the tokenizer. With `lora_r` > 0, a PEFT
    LoRA adapter on the pretrained model (continued pretraining that trains and saves only the adapter)."""
    model = _build_base_model(model_args, tokenizer)
    knock_out_attention(model, knockout_layers(model_args, model.config.num_hidden_layers))
    drop_attention_layers(model, model_args.attention_layer_drop or 0.0)
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


def knock_out_attention(model: PreTrainedModel, layers: list[int]) -> None:
    """Zero and freeze each listed layer's attention output projection: the layer's heads still compute
    their patterns, but nothing they write reaches the residual stream, and (their output zero) no
    gradient reaches them. Zero weights are saved with the checkpoints, so the knock-out holds for every
    analysis and for anyone loading the model; the freezing is redone whenever the run is built."""
    if not layers:
        return
    from grokcopy.analysis.architectures import attention_output_projections, model_family
    from grokcopy.errors import UnsupportedArchitectureError

    try:
        projections = attention_output_projections(model, model_family(model))
    except UnsupportedArchitectureError as err:
        raise ConfigError(f"knockout_attention_layers: {one_line(err)}") from None
    for layer in layers:
        for param in projections[layer].parameters():
            with torch.no_grad():
                param.zero_()
            param.requires_grad_(False)
    logger.info("Attention of layer%s %s knocked out (output projection zero and frozen)",
                "s" * (len(layers) > 1), ", ".join(map(str, layers)))


def drop_attention_layers(model: PreTrainedModel, p: float) -> None:
    """Stochastic depth on every layer's attention branch (Huang et al. 2016): in training, each sequence loses a
    layer's whole attention output with probability `p` (the input of its output projection zeroed, the kept ones
    scaled by 1 / (1 - p)); in evaluation nothing is dropped. A hook, not a weight: checkpoints hold the plain model,
    and the hook is put back whenever the run is built (resume included)."""
    if not p:
        return
    from grokcopy.analysis.architectures import attention_output_projections, model_family
    from grokcopy.errors import UnsupportedArchitectureError

    try:
        projections = attention_output_projections(model, model_family(model))
    except UnsupportedArchitectureError as err:
        raise ConfigError(f"attention_layer_drop: {one_line(err)}") from None

    def drop(module, args):
        if not module.training:
            return None
        x = args[0]
        keep = (torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= p).to(x.dtype) / (1.0 - p)
        return (x * keep, *args[1:])

    for projection in projections:
        projection.register_forward_pre_hook(drop)
    logger.info("Attention layer drop %.2f: each layer's attention output dropped per sequence in training", p)


def _build_base_model(model_args: ModelArguments, tokenizer) -> PreTrainedModel:
    attn = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    if model_args.model_name_or_path:
        model = load_pretrained(AutoModelForCausalLM, model_args.model_name_or_path, "model_name_or_path",
                                revision=model_args.revision, **attn)
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
