"""Which model families the analyses know, and where a family keeps what they read.

One place answers "what is this model?" for every analysis: the transformers model inside a
compile / DDP / PEFT wrapper, its family (LLaMA-like, GPT-NeoX, GPT-2), its layers and final norm,
its context length and its usable vocabulary.
"""

from __future__ import annotations

from torch import nn

from grokcopy.attention import unwrap_model  # noqa: F401 (re-exported: the analyses' import)
from grokcopy.errors import UnsupportedArchitectureError

# LLaMA-layout families.  OLMo-2/3 normalise the attention *output* (post_attention_layernorm)
# and have no norm in front of attention.
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "olmo3"}
POST_NORM_FAMILIES = {"olmo2", "olmo3"}
SUPPORTED_MODEL_TYPES = frozenset(LLAMA_LIKE | {"gpt_neox", "gpt2"})



def model_family(lm: nn.Module) -> str:
    """The model's config.model_type, when the analyses support it (else UnsupportedArchitectureError)."""
    model_type = getattr(getattr(lm, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedArchitectureError(
            f"induction analysis does not support model_type={model_type!r} "
            f"({type(lm).__name__}); supported: {sorted(SUPPORTED_MODEL_TYPES)}"
        )
    return model_type


def layers_and_final_norm(lm: nn.Module, model_type: str) -> tuple[list[nn.Module], nn.Module]:
    base = lm.base_model  # LlamaModel / GPTNeoXModel / GPT2Model
    if model_type == "gpt2":
        return list(base.h), base.ln_f
    if model_type == "gpt_neox":
        return list(base.layers), base.final_layer_norm
    return list(base.layers), base.norm


def model_context_length(model_or_config) -> int | None:
    """Longest sequence the model accepts (None when it has no fixed limit), from whichever of the
    config names the family uses (LLaMA/NeoX `max_position_embeddings`, GPT-2 `n_positions`, ...)."""
    config = getattr(model_or_config, "config", model_or_config)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def embedding_vocab_size(lm: nn.Module) -> int:
    """Rows of the input embedding the config says are vocabulary (a padded embedding has more rows)."""
    rows = lm.get_input_embeddings().weight.shape[0]
    return min(rows, int(getattr(lm.config, "vocab_size", rows) or rows))


def attention_output_projections(lm: nn.Module, model_type: str) -> list[nn.Module]:
    """Each layer's attention output projection (LLaMA-like `o_proj`, GPT-NeoX `dense`, GPT-2 `c_proj`).

    Its input is the heads' outputs side by side, head h in features h * d_head .. (h + 1) * d_head - 1
    (every family concatenates them head-major), and everything attention writes to the residual
    stream passes through it. Under PEFT the module returned is the LoRA layer that replaced the
    projection, so whatever reads its input sees the input of the whole projection, adapter included.
    """
    layers, _ = layers_and_final_norm(lm, model_type)
    if model_type == "gpt2":
        return [layer.attn.c_proj for layer in layers]
    if model_type == "gpt_neox":
        return [layer.attention.dense for layer in layers]
    return [layer.self_attn.o_proj for layer in layers]
