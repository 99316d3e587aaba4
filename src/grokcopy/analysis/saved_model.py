"""The analyses of one saved model: a run's folder, one of its checkpoints, or a Hub id.

`grokcopy copy-test`, `induction` and `ablate` are these functions. On a grokcopy run every setting not
given is the run's own (its run_config.json), so the model is measured as the run measured it; else the
setting's default (`CopyTaskConfig`, `InductionConfig`); then each analysis is fitted to the model's
context by its one rule. Each function returns the record and notes saying where the settings came
from, for the caller to show. Nothing here imports torch until a model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from grokcopy.analysis.induction_config import InductionConfig
from grokcopy.copytest.task import COPY_BATCH_SIZE, CopyTaskConfig
from grokcopy.errors import ConfigError
from grokcopy.run_dir import model_folder_problem, run_analysis_settings

# Head ablation's copy test: a drop from 0.95 to 0.6 is many standard errors on 100 samples, and the
# ablation costs about one copy test per head (benchmarks/RESULTS.md), so not the 500 of a score.
ABLATION_SAMPLES = 100


@dataclass(frozen=True)
class SavedModel:
    """A model to analyse: a local folder (a run, a checkpoint, any save_pretrained folder) or a Hub id."""

    path: str
    revision: str = "main"

    def load(self):
        """The model on the default device; a local folder is checked first (no config, missing or
        truncated weights), in one line naming it."""
        from transformers import AutoModelForCausalLM

        from grokcopy.devices import default_device

        folder = Path(self.path).expanduser()
        if folder.exists() or self.path.startswith(("/", "./", "../", "~")):
            problem = model_folder_problem(folder) if folder.exists() else "no such folder"
            if problem:
                raise ConfigError(f"{self.path}: {problem}")
        model = AutoModelForCausalLM.from_pretrained(self.path, revision=self.revision)
        return model.to(default_device())

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path, revision=self.revision)

    def run_settings(self) -> dict:
        """The `copy_*` / `induction_*` settings of the grokcopy run this model belongs to ({} for none)."""
        return run_analysis_settings(self.path)


@dataclass
class Analysis:
    """An analysis's record, and notes on how it was set up (the run's own settings, what was fitted)."""

    record: dict
    notes: list[str] = field(default_factory=list)


def _settings(config_cls, given: Mapping[str, Any] | None, run: dict, prefix: str) -> tuple[Any, list[str]]:
    """`config_cls` with each field as given, else the run's own (`prefix` + name), else its default; and the
    names of the fields taken from the run."""
    names = [f.name for f in fields(config_cls)]
    given = {k: v for k, v in (given or {}).items() if v is not None}
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"{unknown[0]}: not a setting of {config_cls.__name__} ({', '.join(names)})")
    own = {k: run[prefix + k] for k in names if run.get(prefix + k) is not None and k not in given}
    return config_cls(**{**own, **given}), list(own)


def copy_task_for(model: SavedModel, loaded, given: Mapping[str, Any] | None = None):
    """The copy test to run on `model` (loaded as `loaded`), fitted to its context, and the notes."""
    from grokcopy.analysis.architectures import model_context_length
    from grokcopy.copytest.task import build_copy_task

    run = model.run_settings()
    config, from_run = _settings(CopyTaskConfig, given, run, "copy_")
    notes = [f"copy test: the run's own settings where not given ({', '.join(from_run)})"] if run else []
    task = build_copy_task(model.tokenizer(), config, max_length=model_context_length(loaded))
    return task, notes + ([task.note] if task.note else [])


def copy_test(model: SavedModel, given: Mapping[str, Any] | None = None, *, batch_size: int = COPY_BATCH_SIZE,
              progress: bool = False) -> Analysis:
    """The paper's copy test on `model`: `given` CopyTaskConfig fields, the others the run's own or the default."""
    from grokcopy.copytest.scoring import score_copy_task

    loaded = model.load()
    task, notes = copy_task_for(model, loaded, given)
    return Analysis(score_copy_task(loaded, task, batch_size=batch_size, progress=progress), notes)


def induction(model: SavedModel, given: Mapping[str, Any] | None = None, *, seed: int = 0, with_bos: bool = True,
              icl_input_ids=None) -> Analysis:
    """Induction-head scores of `model`: `given` InductionConfig fields, the others the run's own or the default;
    s fitted to the context (an s that does not fit is refused, naming `seq_len`)."""
    from grokcopy.analysis.induction import analyze_induction

    loaded = model.load()
    config, from_run = _settings(InductionConfig, given, model.run_settings(), "induction_")
    try:  # positions past the context were never trained: scores read there say nothing
        fitted, note = config.fit(loaded, with_bos=with_bos, name="seq_len")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    note = f"s = {fitted.seq_len} (the run's own induction_seq_len)" if "seq_len" in from_run else note
    scores = analyze_induction(loaded, seq_len=fitted.seq_len, batch_size=fitted.batch_size, seed=seed,
                               with_bos=with_bos, icl_input_ids=icl_input_ids)
    return Analysis({"model": model.path, "revision": model.revision, **scores.to_dict()}, [f"induction: {note}"])


INDUCTION_THRESHOLD = 0.3  # I of a formed induction head, as the report's formation landmark


def run_induction_heads(model: SavedModel, threshold: float = INDUCTION_THRESHOLD) -> tuple[list, int | None]:
    """The heads with I >= `threshold` at a run folder's last induction analysis, and that step ([] and None
    for a model that is not a grokcopy run folder or has no induction history)."""
    from grokcopy.run_dir import RunFolder

    folder = Path(model.path).expanduser()
    history = RunFolder(folder).read_induction_history() if folder.is_dir() else []
    if not history:
        return [], None
    last = max(history, key=lambda r: r["step"])
    return [[layer, head] for layer, row in enumerate(last["induction"]) for head, value in enumerate(row)
            if value >= threshold], last["step"]


def ablate(model: SavedModel, *, num_samples: int | None = None, batch_size: int = COPY_BATCH_SIZE,
           ablations_per_pass: int | None = None, progress: bool = False, per_head: bool = True,
           layers_together: list[list[int]] | None = None) -> Analysis:
    """The run's own copy test (`num_samples` of it; default ABLATION_SAMPLES, or the run's number if smaller)
    with each head and each layer's attention zero-ablated (grokcopy.analysis.ablation); on a run folder with
    induction analyses also with all its induction heads (I >= 0.3 at its last analysis) ablated together, and
    whether it copies by induction (`copies_by_induction`, the rule of grokcopy.analysis.ablation).
    `per_head=False` scores only that joint ablation. `layers_together`: sets of layers whose whole attention is
    ablated at once (`layers 1+2`, ...): a backup that takes over only when one layer is gone shows there alone."""
    from grokcopy.analysis.ablation import ablate_heads, copies_by_induction, layer_groups
    from grokcopy.analysis.architectures import model_family, unwrap_model

    loaded = model.load()
    model_family(unwrap_model(loaded))  # an architecture the analyses do not know: said before any work
    run_samples = model.run_settings().get("copy_num_samples")
    samples = num_samples or min(ABLATION_SAMPLES, run_samples or ABLATION_SAMPLES)
    task, notes = copy_task_for(model, loaded, {"num_samples": samples})
    notes.append(f"head ablation: {samples} samples" + (f" (the run's copy test has {run_samples})"
                                                        if run_samples else ""))
    heads, step = run_induction_heads(model)
    groups = {"induction_heads": [tuple(h) for h in heads]} if heads else {}
    if layers_together:
        config = unwrap_model(loaded).config
        groups.update(layer_groups(layers_together, config.num_hidden_layers, config.num_attention_heads,
                                   "--layers-together"))
    result = ablate_heads(loaded, task, batch_size=batch_size, ablations_per_pass=ablations_per_pass,
                          progress=progress, per_head=per_head, groups=groups or None)
    if step is not None:  # a run with induction analyses: its induction heads, together
        ablated = result["group_ablated_exact_match"]["induction_heads"] if heads else result["exact_match"]
        result.update(induction_heads=heads, induction_heads_step=step, induction_threshold=INDUCTION_THRESHOLD,
                      induction_heads_ablated_exact_match=ablated,
                      copies_by_induction=copies_by_induction(result["exact_match"], heads, ablated))
    return Analysis({"model": model.path, "revision": model.revision, **result}, notes)


def ablate_checkpoints(run: str | Path, every: int | None = None, progress: bool = True, **settings):
    """`ablate` on every complete `checkpoint-N` of a local run folder (those at multiples of `every` when set),
    oldest first: yields one record per checkpoint with its `step`, the fields of `ablate`'s record otherwise.
    Read after training, this is the ablation a run made without `ablation_eval_steps` never recorded, as far
    as its kept checkpoints reach. A folder without checkpoints is a ConfigError."""
    from grokcopy.run_dir import RunFolder, checkpoint_problem, checkpoint_step

    folder = RunFolder(run)
    chosen = [c for c in folder.checkpoints() if (every is None or checkpoint_step(c) % every == 0)
              and checkpoint_problem(c) is None]
    if not chosen:
        raise ConfigError(f"{run}: no complete checkpoint-N folder" + (f" at a multiple of {every}" if every else ""))
    if progress:
        from tqdm.auto import tqdm

        chosen = tqdm(chosen, desc="checkpoints", unit="ckpt")
    for checkpoint in chosen:
        analysis = ablate(SavedModel(str(checkpoint)), **settings)
        yield {"step": checkpoint_step(checkpoint), **analysis.record}
