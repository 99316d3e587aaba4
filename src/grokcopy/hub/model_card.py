"""The model card of a pushed run, rendered from `model_cards/checkpoint_series.md` with `ModelCard`."""

from __future__ import annotations

from pathlib import Path

from grokcopy.analysis.grokking import formation_steps, grokking_stats
from grokcopy.resources import model_card_template
from grokcopy.run_dir import RunFolder

ARCH_FIELDS = ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
               "intermediate_size", "max_position_embeddings", "vocab_size", "tie_word_embeddings",
               "attention_dropout")
TRAIN_FIELDS = ("learning_rate", "lr_scheduler_type", "warmup_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "max_steps", "weight_decay", "adam_beta1", "adam_beta2",
                "max_grad_norm", "bf16", "seed")


def model_lineage(model) -> tuple[str | None, bool]:
    """(base model id or path, is a PEFT adapter): where a continued or adapter run started from."""
    peft_config = getattr(model, "peft_config", None)
    if peft_config:
        return next(iter(peft_config.values())).base_model_name_or_path or None, True
    return getattr(model.config, "name_or_path", None) or None, False


def render_card(repo_id: str, output_dir: Path, branches: list[str], model_config, training_args,
                data_description: str, threshold: float = 0.3, base_model: str | None = None, adapter: bool = False,
                datasets: list[str] | None = None) -> str:
    """The README of a pushed run. `base_model`: what a continued or LoRA run started from (the Hub's
    model tree); `adapter`: a PEFT adapter (library_name peft, as PEFT's own card says); `datasets`:
    Hub datasets trained on."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    run = RunFolder(output_dir)
    histories = run.histories()
    copy, induction = histories["copy_history"], histories["induction_history"]
    stats = grokking_stats(histories)  # the same landmarks as `grokcopy report`
    last = copy[-1] if copy else {"step": 0, "tokens": None, "exact_match": 0.0, "token_accuracy": 0.0,
                                 "num_sequences": None, "num_samples": None}
    name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        library_name="peft" if adapter else "transformers", pipeline_tag="text-generation",
        tags=["grokcopy", "induction-heads"] + (["lora"] if adapter else []), model_name=name,
        # the Hub validates base_model as a model id: a local folder is named in the text only
        base_model=base_model if base_model and not Path(base_model).exists() else None,
        datasets=datasets or None, license=getattr(training_args, "hub_license", None),
        eval_results=[
            EvalResult(task_type="text-generation", dataset_type="grokcopy/copy-test",
                       dataset_name="Copy test (Lv et al. 2025)", metric_type="exact_match",
                       metric_value=float(last["exact_match"]), metric_name="copy exact match"),
            EvalResult(task_type="text-generation", dataset_type="grokcopy/copy-test",
                       dataset_name="Copy test (Lv et al. 2025)", metric_type="accuracy",
                       metric_value=float(last["token_accuracy"]), metric_name="copy token accuracy"),
        ],
    )
    config = model_config.to_dict()
    card = ModelCard.from_template(
        card_data, template_path=str(model_card_template()),
        model_name=name, repo_id=repo_id, architecture=config.get("model_type", "causal LM"),
        base_model=base_model, adapter=adapter,
        architecture_table=[(k, config[k]) for k in ARCH_FIELDS if k in config],
        data_description=data_description,
        training_table=[(k, getattr(training_args, k)) for k in TRAIN_FIELDS if hasattr(training_args, k)],
        last_step=last["step"], last_tokens=last.get("tokens"), exact_match=last["exact_match"],
        token_accuracy=last["token_accuracy"], copy_sequences=last.get("num_sequences"),
        copy_samples=last.get("num_samples"),
        copy_jump_step=stats["jump_step"], jump_censored_at=stats["jump_censored_at"],
        formation=formation_steps(induction, threshold) if induction else [], threshold=threshold,
        plots=[p.name for p in run.figures()],
        branches=branches,
    )
    return str(card)
