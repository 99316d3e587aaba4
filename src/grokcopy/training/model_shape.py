"""The model's shape: named presets, explicit shape fields and JSON overrides merged into one transformers
config, and the checks that refuse a shape (or a knocked-out layer) that could not build or run, in one line."""

from __future__ import annotations

import json

from grokcopy.errors import ConfigError


def _check(ok: bool, name: str, rule: str, value) -> None:
    if not ok:
        raise ConfigError(f"{name}: {rule}, got {value}")


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

SHAPE_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "max_position_embeddings", "attention_dropout", "tie_word_embeddings",
                 "vocab_size")


def model_config_kwargs(model_args) -> dict:
    """The preset, then explicit shape fields, then the JSON overrides: later wins."""
    if model_args.preset is not None and model_args.preset not in PRESETS:
        raise ConfigError(f"preset: unknown preset {model_args.preset!r}; known: {', '.join(PRESETS)}")
    kwargs = dict(PRESETS.get(model_args.preset, {"model_type": model_args.model_type}))
    if model_args.preset is None or model_args.model_type != "llama":
        kwargs["model_type"] = model_args.model_type
    kwargs.update({k: getattr(model_args, k) for k in SHAPE_FIELDS if getattr(model_args, k) is not None})
    if model_args.model_config_overrides:
        try:
            overrides = json.loads(model_args.model_config_overrides)
        except json.JSONDecodeError as err:
            raise ConfigError(f"model_config_overrides: not a JSON object ({err.msg})") from None
        if not isinstance(overrides, dict):
            raise ConfigError("model_config_overrides: expected a JSON object")
        kwargs.update(overrides)
    return kwargs


def knockout_layers(model_args, num_layers: int | None = None) -> list[int]:
    """`knockout_attention_layers` as sorted layer indices; with `num_layers`, each checked to exist."""
    text = model_args.knockout_attention_layers
    if not text:
        return []
    try:
        layers = sorted({int(part) for part in str(text).split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"knockout_attention_layers: expected comma-separated layer numbers, e.g. '1', "
                          f"got {text!r}") from None
    bad = [layer for layer in layers if layer < 0 or (num_layers is not None and layer >= num_layers)]
    if bad:
        raise ConfigError(f"knockout_attention_layers: no layer {bad[0]} in a model with "
                          f"{num_layers if num_layers is not None else 'its'} layers (0-based)")
    return layers


def validate_shape(shape: dict) -> None:
    """A model shape (preset + fields + overrides) that transformers can build and run."""
    for name in SHAPE_FIELDS:
        value = shape.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            _check(value >= 1, name, "must be >= 1", value)
    hidden, heads, kv_heads = (shape.get(k) for k in ("hidden_size", "num_attention_heads", "num_key_value_heads"))
    if isinstance(hidden, int) and isinstance(heads, int) and hidden % heads:
        raise ConfigError(f"num_attention_heads: {heads} does not divide hidden_size {hidden} "
                          "(each head gets hidden_size / num_attention_heads dimensions)")
    if isinstance(heads, int) and isinstance(kv_heads, int) and heads % kv_heads:
        raise ConfigError(f"num_key_value_heads: {kv_heads} does not divide num_attention_heads {heads} "
                          "(grouped-query attention shares each key/value head among a whole group)")
