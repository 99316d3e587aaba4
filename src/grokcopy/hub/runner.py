"""Analysing one revision of a series: download exactly its files, load it, run the copy test and the
induction analysis, record the numbers, free the memory and delete the weights again."""

from __future__ import annotations

import glob
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from grokcopy.analysis.induction_config import InductionConfig
from grokcopy.copytest.task import CopyTaskConfig
from grokcopy.devices import release_memory
from grokcopy.errors import SeriesError, one_line
from grokcopy.hub.continuity import sample_parameters, save_samples
from grokcopy.hub.listing import http_errors
from grokcopy.hub.revisions import parse_revision
from grokcopy.hub.store import now
from grokcopy.run_dir import (
    CHECKPOINT_COPY_EVAL,
    CHECKPOINT_INDUCTION,
    TRAINER_STATE,
    read_json,
    safetensors_problem,
    trainer_state_file,
)

WEIGHTS_DIR = "weights"
SAMPLES_DIR = "weight_samples"  # per revision, the parameter samples continuity distances are computed from


@contextmanager
def quiet_bars(enabled: bool):
    """Hide huggingface_hub's and transformers' own progress bars when `enabled` is False."""
    if enabled:
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as tf_logging

    hub_was_off, tf_was_on = are_progress_bars_disabled(), tf_logging.is_progress_bar_enabled()
    disable_progress_bars()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not hub_was_off:
            enable_progress_bars()
        if tf_was_on:
            tf_logging.enable_progress_bar()


def download(repo_id: str, revision: str, commit: str, files: list[str], local_dir: Path) -> Path:
    """Exactly `files` of the commit into `local_dir` (huggingface_hub resumes a partial folder)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        path = snapshot_download(repo_id, revision=commit, local_dir=local_dir,
                                 allow_patterns=[glob.escape(f) for f in files])
    except RevisionNotFoundError:
        raise SeriesError(f"{repo_id}: revision {revision!r} does not exist") from None
    except http_errors() as err:
        raise SeriesError(f"{repo_id}@{revision}: download failed: {one_line(err)}") from None
    missing = [f for f in files if not (Path(path) / f).is_file()]
    if missing:
        raise SeriesError(f"{repo_id}@{revision}: download incomplete, missing {', '.join(missing)}")
    return Path(path)


def analyse_model(model, tokenizer, *, copy: CopyTaskConfig, induction: InductionConfig, batch_size: int,
                  progress: bool, task_for=None) -> dict:
    """Copy test + induction analysis of one loaded model (each failure recorded, the other still run), both
    fitted to the model's context by their one rule (copytest.task.fit_shape, InductionConfig.fit): an explicit
    setting that does not fit is that analysis's error, never a silent change. `task_for(config, tokenizer,
    context)` builds (or reuses) the copy task: it depends on the tokenizer and the context only, so a series
    builds it once, not once per revision."""
    from grokcopy.analysis.architectures import model_context_length
    from grokcopy.analysis.induction import UnsupportedArchitectureError, analyze_induction
    from grokcopy.copytest.scoring import score_copy_task
    from grokcopy.copytest.task import CopyTaskError, build_copy_task

    out: dict = {"exact_match": None, "token_accuracy": None, "copy": None, "copy_error": None,
                 "induction_max": None, "induction": None, "induction_error": None}
    context = model_context_length(model)
    try:
        task = (task_for or (lambda c, t, n: build_copy_task(t, c, max_length=n)))(copy, tokenizer, context)
        result = score_copy_task(model, task, batch_size=batch_size, progress=progress)
        out.update(exact_match=result["exact_match"], token_accuracy=result["token_accuracy"],
                   copy={**result, "note": task.note})
    except CopyTaskError as err:
        out["copy_error"] = str(err)
    bos = getattr(model.config, "bos_token_id", None)
    with_bos = isinstance(bos, int)
    try:
        fitted, note = induction.fit(model, with_bos=with_bos, name="induction_seq_len")
        scores = analyze_induction(model, seq_len=fitted.seq_len, batch_size=fitted.batch_size, with_bos=with_bos)
        out["induction"] = scores.to_dict()
        out["induction_max"] = [max(row) for row in out["induction"]["induction"]]
        out["induction_note"] = note
    except UnsupportedArchitectureError as err:
        out["induction_error"] = str(err)
    except ValueError as err:  # an s that does not fit the context; embedding / unembedding of different shapes
        out["induction_error"] = one_line(err)
    return out


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class SeriesRunner:
    """Loads and analyses the revisions of one series. What does not change between revisions is made
    once: the tokenizer (per set of tokenizer files, by their hashes) and the copy task built from it."""

    def __init__(self, repo_id, out_dir, settings, keep_weights, device, progress, batch_size,
                 base_model=None, base_revision="main", *, copy: CopyTaskConfig, induction: InductionConfig):
        self.repo_id, self.out_dir, self.settings, self.batch_size = repo_id, out_dir, settings, batch_size
        self.copy, self.induction = copy, induction
        self.keep_weights, self.device, self.progress = keep_weights, device, progress
        self.base_model, self.base_revision = base_model, base_revision
        self.dtype = torch_dtype(settings.get("dtype", "float32"))
        self._tokenizers: dict = {}
        self._tasks: dict = {}

    def load_model(self, path: Path, plan: dict, revision: str):
        """The revision's model; a PEFT adapter on top of its base model (`base_model` or the adapter's own)."""
        from transformers import AutoModelForCausalLM

        where = f"{self.repo_id}@{revision}"
        for name in plan["weight_files"]:
            problem = safetensors_problem(path / name) if name.endswith(".safetensors") else None
            if problem:
                raise SeriesError(f"{where}: corrupt checkpoint: {problem}")
        if not plan.get("adapter"):
            try:  # safetensors, sharded with an index, pytorch_model.bin or sharded .bin: from_pretrained reads all
                return AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype), None
            except Exception as err:  # noqa: BLE001 (safetensors, torch and config errors all mean: unloadable)
                raise SeriesError(f"{where}: cannot load the model: {one_line(err)}") from None
        from peft import PeftModel

        adapter_config = read_json(path / "adapter_config.json") or {}
        base = self.base_model or adapter_config.get("base_model_name_or_path")
        if not base:
            raise SeriesError(f"{where}: adapter without base_model_name_or_path; give --base-model")
        try:
            model = AutoModelForCausalLM.from_pretrained(base, revision=self.base_revision, dtype=self.dtype)
        except Exception as err:  # noqa: BLE001
            raise SeriesError(f"{where}: cannot load the adapter's base model {base}: {one_line(err)}; "
                              "give --base-model") from None
        try:
            return PeftModel.from_pretrained(model, path), base
        except Exception as err:  # noqa: BLE001
            raise SeriesError(f"{where}: cannot load the adapter onto {base}: {one_line(err)}") from None

    def tokenizer_for(self, folder: Path, plan: dict, revision: str):
        """The revision's tokenizer (the one loaded for the same files before, if any), or main's."""
        from transformers import AutoTokenizer

        key = tuple(map(tuple, plan.get("tokenizer_key") or ())) if plan["has_tokenizer"] else "main"
        try:
            if key not in self._tokenizers:
                source = (folder, {}) if key != "main" else (self.repo_id, {"revision": "main"})
                self._tokenizers[key] = AutoTokenizer.from_pretrained(source[0], **source[1])
        except (OSError, ValueError) as err:
            raise SeriesError(f"{self.repo_id}@{revision}: cannot load the tokenizer: {one_line(err)}") from None
        return self._tokenizers[key], ("main" if key == "main" else None)

    def task_for(self, config, tokenizer, context):
        """The copy task of this tokenizer and context, built once (samples depend on nothing else)."""
        from grokcopy.copytest.task import CopyTaskError, build_copy_task

        key = (id(tokenizer), context)
        if key not in self._tasks:
            try:
                self._tasks[key] = build_copy_task(tokenizer, config, max_length=context)
            except CopyTaskError as err:
                self._tasks[key] = err
        if isinstance(self._tasks[key], Exception):
            raise self._tasks[key]
        return self._tasks[key]

    def run(self, revision: str, commit: str, plan: dict) -> dict:
        start = time.perf_counter()
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", revision)
        folder = self.out_dir / WEIGHTS_DIR / safe
        try:
            with quiet_bars(self.progress):
                path = download(self.repo_id, revision, commit, plan["files"], folder)
                loading = time.perf_counter()
                model, base = self.load_model(path, plan, revision)
                tokenizer, tokenizer_revision = self.tokenizer_for(path, plan, revision)
                model.to(self.device)
                save_samples(self.out_dir / SAMPLES_DIR / f"{safe}.safetensors", sample_parameters(model))
                analysis = analyse_model(model, tokenizer, copy=self.copy, induction=self.induction,
                                         progress=self.progress, batch_size=self.batch_size, task_for=self.task_for)
            record = self._record(revision, commit, plan, path, model, base, tokenizer_revision, analysis, start)
            record["seconds_without_download"] = round(time.perf_counter() - loading, 3)
            record["samples_file"] = f"{SAMPLES_DIR}/{safe}.safetensors"
            del model
            return record
        finally:
            self._clean_up(folder)

    def _record(self, revision, commit, plan, path, model, base, tokenizer_revision, analysis, start) -> dict:
        parsed = parse_revision(revision)
        state = read_json(trainer_state_file(path)) if TRAINER_STATE in plan["files"] else None
        trainer_state = None
        if isinstance(state, dict):
            trainer_state = {k: state.get(k) for k in ("global_step", "num_input_tokens_seen", "epoch")}
        step = parsed[0] if parsed else (trainer_state or {}).get("global_step")
        stored = {name: read_json(path / name) for name in (CHECKPOINT_COPY_EVAL, CHECKPOINT_INDUCTION)
                  if name in plan["files"]}
        record = {
            "revision": revision, "commit": commit, "step": step, "name_tokens": parsed[1] if parsed else None,
            "tokens": None, "tokens_source": None, "trainer_state": trainer_state,
            "model_type": getattr(model.config, "model_type", None),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer_revision": tokenizer_revision,
            "weight_files": plan["weight_files"], "weights_sha256": plan["weights_sha256"],
            "weight_shards": plan.get("weight_shards"), "duplicate_of": None,
            **analysis,
            "checkpoint_results": stored or None, "adapter": bool(plan.get("adapter")), "base_model": base,
            "settings": dict(self.settings), "device": str(self.device),
            "analysed_at": now(),
            "seconds": round(time.perf_counter() - start, 3),
        }
        return record

    def _clean_up(self, folder: Path) -> None:
        """Free the model's memory; delete the downloaded files (also after a failure: a retry downloads anew)."""
        release_memory()
        if not self.keep_weights:
            shutil.rmtree(folder, ignore_errors=True)
            try:
                folder.parent.rmdir()  # DIR/weights, once empty
            except OSError:
                pass
