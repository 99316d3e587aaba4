"""The copy test and induction heads across a Hub repo's checkpoint branches (`grokcopy series`).

    grokcopy series EleutherAI/pythia-160m --every 10 --out runs/pythia-160m-series

Public suites publish their checkpoints as branches: Pythia `step1000`, OLMo `step1000-tokens4B`
or `stage1-step1000-tokens5B`, a Trainer run `checkpoint-1000`. For each selected branch we
download only what the analysis needs (config, weights, tokenizer, trainer state, stored results),
run the copy test and the induction analysis, record the numbers and delete the weights again
(unless `keep_weights`). Before any download every branch's weight files are listed with their LFS
sha256: a branch holding exactly the weights of an earlier one is reported as its duplicate and not
analysed twice.

Output folder: `series.json` (every record in full, induction matrices included; rewritten
atomically after each revision, so a crash loses at most the revision being analysed and a rerun
resumes), `series.csv` (one flat row per revision), `series_copy.png` and `series_induction.png`.
"""

from __future__ import annotations

import csv
import gc
import glob
import io
import json
import logging
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from grokcopy.hub.revisions import (
    PYTHIA_TOKENS_PER_STEP,
    SeriesError,
    default_tokens_per_step,
    parse_revision,
    record_tokens,
    revision_sort_key,
    select_revisions,
)
from grokcopy.run_dir import safetensors_problem
from grokcopy.training.data import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["PYTHIA_TOKENS_PER_STEP", "SeriesError", "add_series_parser", "analyze_series", "default_tokens_per_step",
           "parse_revision", "revision_sort_key", "run_series", "select_revisions"]

SERIES_JSON = "series.json"
SERIES_CSV = "series.csv"
COPY_PLOT = "series_copy.png"
INDUCTION_PLOT = "series_induction.png"
WEIGHTS_DIR = "weights"

# Files a revision may hold that the analysis reads (weights are chosen separately).
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model",
                   "chat_template.jinja", "chat_template.json")
RESULT_FILES = ("trainer_state.json", "induction.json", "copy_eval.json")

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_BIN_WEIGHTS_RE = re.compile(r"^(?:pytorch_model|model)(?:-\d+-of-\d+)?\.bin$")


# ----------------------------------------------------------------------------- Hub listing


def _http_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    # huggingface_hub's HTTP client errors (httpx / httpx2: connection refused, timeouts) and OSError.
    return (OSError,) + tuple(c for c in HfHubHTTPError.__mro__ if c.__name__ == "HTTPError")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _list_refs(api, repo_id: str) -> tuple[dict[str, str], dict[str, str]]:
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        refs = api.list_repo_refs(repo_id)
    except RepositoryNotFoundError:
        raise SeriesError(f"{repo_id}: no such model repository on {api.endpoint} (or no access to it)") from None
    except _http_errors() as err:
        raise SeriesError(f"{repo_id}: cannot list the repository's branches: {_one_line(err)}") from None
    return ({b.name: b.target_commit for b in refs.branches}, {t.name: t.target_commit for t in refs.tags})


def _plan_files(repo_id: str, revision: str, entries) -> dict:
    """Which root files of a revision to download, and its weights' fingerprint (sha256 set)."""
    from huggingface_hub.hf_api import RepoFile

    files = {e.path: e for e in entries if isinstance(e, RepoFile) and "/" not in e.path}
    weights = sorted(p for p in files if p.endswith(".safetensors") and not p.startswith("adapter_model"))
    index = [p for p in files if p.endswith(".safetensors.index.json")]
    if not weights:
        weights = sorted(p for p in files if _BIN_WEIGHTS_RE.match(p))
        index = [p for p in files if p.endswith(".bin.index.json")]
    adapter = not weights and "adapter_config.json" in files
    if adapter:  # a PEFT (LoRA) checkpoint: analysed on top of its base model
        weights = [p for p in ("adapter_model.safetensors", "adapter_model.bin") if p in files][:1]
    if not weights:
        raise SeriesError(f"{repo_id}@{revision}: no model weights (*.safetensors, pytorch_model*.bin or a PEFT "
                          f"adapter) in the revision (files: {', '.join(sorted(files)) or 'none'})")
    if not adapter and "config.json" not in files:
        raise SeriesError(f"{repo_id}@{revision}: no config.json in the revision")
    fingerprint = sorted(files[p].lfs.sha256 if files[p].lfs is not None else f"git-sha1:{files[p].blob_id}"
                         for p in weights)
    wanted = set(CONFIG_FILES) | set(TOKENIZER_FILES) | set(RESULT_FILES) | {"adapter_config.json"}
    extra = [p for p in files if p in wanted or p.endswith(".tiktoken")]
    return {"weight_files": weights, "weights_sha256": fingerprint, "adapter": adapter,
            "files": sorted(set(weights) | set(index) | set(extra)),
            "has_tokenizer": any(p in TOKENIZER_FILES[:3] or p in ("tokenizer.model", "vocab.json") for p in files),
            "weights_bytes": sum(files[p].size for p in weights)}


def _list_revision(api, repo_id: str, revision: str, commit: str) -> dict:
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        # The tree entries of LFS files carry their sha256 (RepoFile.lfs.sha256), no expand needed.
        entries = list(api.list_repo_tree(repo_id, revision=commit))
    except RevisionNotFoundError:
        raise SeriesError(f"{repo_id}: revision {revision!r} does not exist") from None
    except _http_errors() as err:
        raise SeriesError(f"{repo_id}@{revision}: cannot list the revision's files: {_one_line(err)}") from None
    return _plan_files(repo_id, revision, entries)


# ----------------------------------------------------------------------------- output files


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _load_state(out_dir: Path, repo_id: str) -> dict:
    path = out_dir / SERIES_JSON
    if not path.is_file():
        return {"repo_id": repo_id, "records": []}
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SeriesError(f"{path}: unreadable ({_one_line(err)}); move it away to start the series over") from None
    if state.get("repo_id") != repo_id:
        raise SeriesError(f"{path} holds the series of {state.get('repo_id')!r}, not {repo_id!r}; "
                          f"choose another output folder")
    return state


def _write_state(out_dir: Path, state: dict) -> None:
    """series.json, one record per line (full induction matrices make indented JSON huge)."""
    head = {k: v for k, v in state.items() if k != "records"}
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    records = ",\n".join("  " + json.dumps(r) for r in state["records"])
    write_text_atomic(out_dir / SERIES_JSON, "{\n" + "\n".join(lines) + '\n "records": [\n' + records + "\n ]\n}\n")


def _record_key(record: dict) -> tuple:
    key = revision_sort_key(record["revision"])
    step = record.get("step")
    return (step is None,) + key[1:3] + (step if step is not None else 0, key[0], record["revision"])


def _csv_text(records: list[dict]) -> str:
    n_layers = max((len(r.get("induction_max") or []) for r in records), default=0)
    columns = ["revision", "step", "tokens", "exact_match", "token_accuracy",
               *(f"max_I_layer{k}" for k in range(n_layers)), "duplicate_of", "error"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        maxima = list(r.get("induction_max") or [])
        maxima += [None] * (n_layers - len(maxima))
        row = [r["revision"], r.get("step"), r.get("tokens"), r.get("exact_match"), r.get("token_accuracy"),
               *maxima, r.get("duplicate_of"), r.get("error")]
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def _write_outputs(out_dir: Path, state: dict) -> None:
    state["records"].sort(key=_record_key)
    state["updated_at"] = _now()
    _write_state(out_dir, state)
    write_text_atomic(out_dir / SERIES_CSV, _csv_text(state["records"]))


# ----------------------------------------------------------------------------- one revision


@contextmanager
def _quiet_bars(enabled: bool):
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


def _download(repo_id: str, revision: str, commit: str, files: list[str], local_dir: Path) -> Path:
    """Exactly `files` of the commit into `local_dir` (huggingface_hub resumes a partial folder)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        path = snapshot_download(repo_id, revision=commit, local_dir=local_dir,
                                 allow_patterns=[glob.escape(f) for f in files])
    except RevisionNotFoundError:
        raise SeriesError(f"{repo_id}: revision {revision!r} does not exist") from None
    except _http_errors() as err:
        raise SeriesError(f"{repo_id}@{revision}: download failed: {_one_line(err)}") from None
    missing = [f for f in files if not (Path(path) / f).is_file()]
    if missing:
        raise SeriesError(f"{repo_id}@{revision}: download incomplete, missing {', '.join(missing)}")
    return Path(path)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _analyse_model(model, tokenizer, *, copy_samples: int, symbols: str, seed: int, induction_seq_len: int,
                   batch_size: int, progress: bool) -> dict:
    """Copy test + induction analysis of one loaded model (each failure recorded, the other still run)."""
    from grokcopy.analysis.induction import UnsupportedArchitectureError, analyze_induction
    from grokcopy.copytest.scoring import score_copy_task
    from grokcopy.copytest.task import CopyTaskConfig, CopyTaskError, build_copy_task
    from grokcopy.training.modeling import model_context_length

    out: dict = {"exact_match": None, "token_accuracy": None, "copy": None, "copy_error": None,
                 "induction_max": None, "induction": None, "induction_error": None}
    context = model_context_length(model)
    try:
        task = build_copy_task(tokenizer, CopyTaskConfig(num_samples=copy_samples, symbols=symbols, seed=seed),
                               max_length=context)
        result = score_copy_task(model, task, batch_size=batch_size, progress=progress)
        out.update(exact_match=result["exact_match"], token_accuracy=result["token_accuracy"],
                   copy={**result, "note": task.note})
    except CopyTaskError as err:
        out["copy_error"] = str(err)
    bos = getattr(model.config, "bos_token_id", None)
    with_bos = isinstance(bos, int)
    seq_len = induction_seq_len
    if context is not None:
        seq_len = max(2, min(seq_len, (context - int(with_bos)) // 2))
    try:
        scores = analyze_induction(model, seq_len=seq_len, with_bos=with_bos)
        out["induction"] = scores.to_dict()
        out["induction_max"] = [max(row) for row in out["induction"]["induction"]]
    except UnsupportedArchitectureError as err:
        out["induction_error"] = str(err)
    except ValueError as err:  # e.g. embedding / unembedding of different shapes
        out["induction_error"] = _one_line(err)
    return out


class _Runner:
    """Loads and analyses the revisions of one series (the shared tokenizer fallback lives here)."""

    def __init__(self, repo_id, out_dir, settings, keep_weights, device, progress, batch_size,
                 base_model=None, base_revision="main"):
        self.repo_id, self.out_dir, self.settings, self.batch_size = repo_id, out_dir, settings, batch_size
        self.keep_weights, self.device, self.progress = keep_weights, device, progress
        self.base_model, self.base_revision = base_model, base_revision
        self._main_tokenizer = None

    def load_model(self, path: Path, plan: dict, revision: str):
        """The revision's model; a PEFT adapter on top of its base model (`base_model` or the adapter's own)."""
        from transformers import AutoModelForCausalLM

        where = f"{self.repo_id}@{revision}"
        for name in plan["weight_files"]:
            problem = safetensors_problem(path / name) if name.endswith(".safetensors") else None
            if problem:
                raise SeriesError(f"{where}: corrupt checkpoint: {problem}")
        if not plan.get("adapter"):
            try:
                return AutoModelForCausalLM.from_pretrained(path), None
            except Exception as err:  # noqa: BLE001 (safetensors, torch and config errors all mean: unloadable)
                raise SeriesError(f"{where}: cannot load the model: {_one_line(err)}") from None
        from peft import PeftModel

        adapter_config = _read_json(path / "adapter_config.json") or {}
        base = self.base_model or adapter_config.get("base_model_name_or_path")
        if not base:
            raise SeriesError(f"{where}: adapter without base_model_name_or_path; give --base-model")
        try:
            model = AutoModelForCausalLM.from_pretrained(base, revision=self.base_revision)
        except Exception as err:  # noqa: BLE001
            raise SeriesError(f"{where}: cannot load the adapter's base model {base}: {_one_line(err)}; "
                              "give --base-model") from None
        try:
            return PeftModel.from_pretrained(model, path), base
        except Exception as err:  # noqa: BLE001
            raise SeriesError(f"{where}: cannot load the adapter onto {base}: {_one_line(err)}") from None

    def tokenizer_for(self, folder: Path, plan: dict, revision: str):
        from transformers import AutoTokenizer

        try:
            if plan["has_tokenizer"]:
                return AutoTokenizer.from_pretrained(folder), None
            if self._main_tokenizer is None:  # checkpoints without a tokenizer: the repo's main one
                self._main_tokenizer = AutoTokenizer.from_pretrained(self.repo_id, revision="main")
            return self._main_tokenizer, "main"
        except (OSError, ValueError) as err:
            raise SeriesError(f"{self.repo_id}@{revision}: cannot load the tokenizer: {_one_line(err)}") from None

    def run(self, revision: str, commit: str, plan: dict) -> dict:
        start = time.perf_counter()
        folder = self.out_dir / WEIGHTS_DIR / re.sub(r"[^A-Za-z0-9._-]+", "_", revision)
        try:
            with _quiet_bars(self.progress):
                path = _download(self.repo_id, revision, commit, plan["files"], folder)
                model, base = self.load_model(path, plan, revision)
                tokenizer, tokenizer_revision = self.tokenizer_for(path, plan, revision)
                model.to(self.device)
                analysis = _analyse_model(model, tokenizer, progress=self.progress, batch_size=self.batch_size,
                                          **self.settings)
            record = self._record(revision, commit, plan, path, model, base, tokenizer_revision, analysis, start)
            del model
            return record
        finally:
            self._clean_up(folder)

    def _record(self, revision, commit, plan, path, model, base, tokenizer_revision, analysis, start) -> dict:
        parsed = parse_revision(revision)
        state = _read_json(path / "trainer_state.json") if "trainer_state.json" in plan["files"] else None
        trainer_state = None
        if isinstance(state, dict):
            trainer_state = {k: state.get(k) for k in ("global_step", "num_input_tokens_seen", "epoch")}
        step = parsed[0] if parsed else (trainer_state or {}).get("global_step")
        stored = {name: _read_json(path / name) for name in ("copy_eval.json", "induction.json")
                  if name in plan["files"]}
        record = {
            "revision": revision, "commit": commit, "step": step, "name_tokens": parsed[1] if parsed else None,
            "tokens": None, "tokens_source": None, "trainer_state": trainer_state,
            "model_type": getattr(model.config, "model_type", None),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer_revision": tokenizer_revision,
            "weight_files": plan["weight_files"], "weights_sha256": plan["weights_sha256"], "duplicate_of": None,
            **analysis,
            "checkpoint_results": stored or None, "adapter": bool(plan.get("adapter")), "base_model": base,
            "settings": dict(self.settings), "analysed_at": _now(),
            "seconds": round(time.perf_counter() - start, 3),
        }
        return record

    def _clean_up(self, folder: Path) -> None:
        """Free the model's memory; delete the downloaded files (also after a failure: a retry downloads anew)."""
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if not self.keep_weights:
            shutil.rmtree(folder, ignore_errors=True)
            try:
                folder.parent.rmdir()  # DIR/weights, once empty
            except OSError:
                pass


# ----------------------------------------------------------------------------- the series


class _OncePerMessage(logging.Filter):
    """Lets each distinct log message through once (the copy test's context note, per revision)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def _say(message: str, progress: bool) -> None:
    logger.info(message)
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)


def _named_revisions(repo_id: str, revisions, branches: dict, tags: dict) -> dict[str, str]:
    """{name: commit} of explicitly named revisions (branches, tags or full commit ids)."""
    if isinstance(revisions, str):
        revisions = revisions.split(",")
    names = [r.strip() for r in revisions if r and r.strip()]
    if not names:
        raise SeriesError(f"{repo_id}: no revisions given")
    out = {}
    for name in dict.fromkeys(names):
        if name in branches:
            out[name] = branches[name]
        elif name in tags:
            out[name] = tags[name]
        elif _COMMIT_RE.match(name):
            out[name] = name
        else:
            known = sorted(branches, key=revision_sort_key)
            shown = ", ".join(known[:8]) + (f", ... ({len(known)} branches)" if len(known) > 8 else "")
            raise SeriesError(f"{repo_id}: revision {name!r} does not exist (branches: {shown})")
    return out


def analyze_series(
    repo_id: str,
    revisions: list[str] | str | None = None,
    every: int | None = None,
    *,
    out_dir: str | os.PathLike,
    copy_samples: int = 100,
    symbols: str = "tokens",
    seed: int = 1234,
    keep_weights: bool = False,
    tokens_per_step: int | None = None,
    induction_seq_len: int = 100,
    batch_size: int = 16,
    device: str | None = None,
    progress: bool = True,
    api=None,
    base_model: str | None = None,
    base_revision: str = "main",
) -> list[dict]:
    """Copy test + induction analysis of a Hub repo's checkpoint branches; returns the selected records.

    `revisions`: names (a list or "a,b,c"; branches, tags or commit ids, any naming) or None for
    every branch named like a checkpoint (see :func:`parse_revision`); `every`: keep every K-th of
    them in training order, always with the last. Records already in `out_dir/series.json` for the
    same commit and settings are reused, not recomputed. A revision whose weight files have the
    sha256 set of one analysed before gets ``duplicate_of`` and no numbers. `tokens_per_step`
    (default: Pythia's 2,097,152 for EleutherAI/pythia*) gives tokens where neither the name (OLMo)
    nor trainer_state.json's num_input_tokens_seen does. A PEFT adapter checkpoint is analysed on
    top of `base_model` (default: the adapter's `base_model_name_or_path`). A revision that cannot be
    downloaded or loaded (e.g. truncated weights) gets an ``error`` and no numbers; the others go on.
    Raises :class:`SeriesError` when the series itself cannot be read.
    """
    from huggingface_hub import HfApi
    from tqdm.auto import tqdm

    if every is not None and every < 1:
        raise SeriesError(f"every: expected a positive integer, got {every}")
    if copy_samples < 1:
        raise SeriesError(f"copy_samples: expected a positive integer, got {copy_samples}")
    if symbols not in ("tokens", "hex"):
        raise SeriesError(f"symbols: expected tokens or hex, got {symbols!r}")
    api = api or HfApi()
    if tokens_per_step is None:
        tokens_per_step = default_tokens_per_step(repo_id)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    # What defines a measurement: a record made with other settings is redone (batch size and device are not).
    settings = {"copy_samples": copy_samples, "symbols": symbols, "seed": seed, "induction_seq_len": induction_seq_len}

    branches, tags = _list_refs(api, repo_id)
    if revisions is not None:
        commits = _named_revisions(repo_id, revisions, branches, tags)
    else:
        commits = {name: commit for name, commit in branches.items() if parse_revision(name) is not None}
        if not commits:
            raise SeriesError(f"{repo_id}: no branch is named like a checkpoint (stepN, stepN-tokensXB, "
                              f"stageK-stepN-tokensXB, checkpoint-N); branches: {', '.join(sorted(branches))}; "
                              f"name revisions explicitly")
    selected = select_revisions(list(commits), every)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(out, repo_id)
    by_name = {r["revision"]: r for r in state["records"]}

    def finished(name: str) -> bool:
        record = by_name.get(name)
        return (record is not None and record.get("duplicate_of") is None and record.get("commit") == commits[name]
                and record.get("settings") == settings)

    # Weights fingerprints of records analysed before (any revision of this folder), then of the selection.
    owner: dict[tuple, str] = {}
    for record in sorted(state["records"], key=_record_key):
        if record.get("duplicate_of") is None and record.get("settings") == settings and record.get("weights_sha256"):
            owner.setdefault(tuple(record["weights_sha256"]), record["revision"])
    plans: dict[str, dict] = {}
    for name in tqdm(selected, desc="listing revisions", unit="rev", disable=not progress, leave=False):
        old = by_name.get(name)
        if finished(name):
            continue
        if old is not None and old.get("duplicate_of") and old.get("commit") == commits[name]:
            plans[name] = {"weights_sha256": old["weights_sha256"], "weight_files": old.get("weight_files")}
        else:
            plans[name] = _list_revision(api, repo_id, name, commits[name])

    runner = _Runner(repo_id, out, settings, keep_weights, device, progress, batch_size, base_model, base_revision)
    todo = [name for name in selected if not finished(name)]
    if len(todo) < len(selected):
        _say(f"{repo_id}: {len(selected) - len(todo)} of {len(selected)} revisions already in {out / SERIES_JSON}",
             progress)
    copy_logger, once = logging.getLogger("grokcopy.copytest.task"), _OncePerMessage()
    copy_logger.addFilter(once)  # the copy test's "context fits N sequences" note: once, not per revision
    try:
        for name in tqdm(todo, desc="revisions", unit="rev", disable=not progress):
            plan = plans[name]
            fingerprint = tuple(plan["weights_sha256"])
            first = owner.get(fingerprint)
            if first is not None and first != name:
                parsed = parse_revision(name)
                record = {"revision": name, "commit": commits[name], "step": parsed[0] if parsed else None,
                          "name_tokens": parsed[1] if parsed else None, "tokens": None, "tokens_source": None,
                          "weight_files": plan["weight_files"], "weights_sha256": plan["weights_sha256"],
                          "duplicate_of": first, "exact_match": None, "token_accuracy": None, "induction_max": None}
                if by_name.get(name, {}).get("duplicate_of") != first:
                    _say(f"{repo_id}@{name}: same weights (sha256) as {first}; skipped as its duplicate", progress)
            else:
                try:
                    if "files" not in plan:  # reused from a duplicate record whose original is gone
                        plan = _list_revision(api, repo_id, name, commits[name])
                    record = runner.run(name, commits[name], plan)
                    owner[fingerprint] = name
                except SeriesError as err:  # one broken checkpoint does not stop the series
                    parsed = parse_revision(name)
                    record = {"revision": name, "commit": commits[name], "step": parsed[0] if parsed else None,
                              "name_tokens": parsed[1] if parsed else None, "tokens": None, "tokens_source": None,
                              "duplicate_of": None, "exact_match": None, "token_accuracy": None,
                              "induction_max": None, "error": _one_line(err)}
                    _say(f"skipped: {_one_line(err)} (a rerun retries it)", progress)
            record["tokens"], record["tokens_source"] = record_tokens(record, tokens_per_step)
            by_name[name] = record
            state["records"] = list(by_name.values())
            _write_outputs(out, state)
    finally:
        copy_logger.removeFilter(once)

    for record in by_name.values():  # tokens_per_step may be new for records of earlier runs
        if record.get("tokens_source") in (None, "tokens_per_step"):
            record["tokens"], record["tokens_source"] = record_tokens(record, tokens_per_step)
    state["records"] = list(by_name.values())
    _write_outputs(out, state)
    from grokcopy.analysis.plots import plot_series

    plot_series(state["records"], out, repo_id, COPY_PLOT, INDUCTION_PLOT)
    return [by_name[name] for name in sorted(selected, key=lambda n: _record_key(by_name[n]))]


# ----------------------------------------------------------------------------- command line


def add_series_parser(subparsers):
    """`grokcopy series REPO [--revisions A,B | --all | --every K] --out DIR [...]` on an argparse subparsers."""
    parser = subparsers.add_parser(
        "series", help="copy test + induction heads across a Hub repo's checkpoint branches",
        description="Run the copy test and the induction analysis on every checkpoint branch of a Hub repo "
                    "(Pythia stepN, OLMo stepN-tokensXB, Trainer checkpoint-N); writes series.json, series.csv, "
                    "series_copy.png and series_induction.png to --out and resumes there.")
    parser.add_argument("repo", help="Hub model repo id, e.g. EleutherAI/pythia-160m")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--revisions", help="comma-separated branches / tags to analyse (any naming)")
    which.add_argument("--all", action="store_true", help="every checkpoint branch (the default)")
    which.add_argument("--every", type=int, metavar="K", help="every K-th checkpoint branch (and the last)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (a rerun resumes there)")
    parser.add_argument("--copy-samples", type=int, default=100, help="copy-test samples per revision")
    parser.add_argument("--symbols", choices=["tokens", "hex"], default="tokens", help="copy-test symbols")
    parser.add_argument("--seed", type=int, default=1234, help="copy-test seed")
    parser.add_argument("--tokens-per-step", type=int, help="tokens per optimizer step where the name and "
                        "trainer_state.json give none (default: 2097152 for EleutherAI/pythia*)")
    parser.add_argument("--induction-seq-len", type=int, default=100, help="random tokens repeated twice")
    parser.add_argument("--batch-size", type=int, default=16, help="copy-test batch size")
    parser.add_argument("--device", help="torch device for the analysis (default: cuda if available, else cpu)")
    parser.add_argument("--keep-weights", action="store_true", help="keep downloaded files in DIR/weights")
    parser.add_argument("--base-model", help="base model of a PEFT adapter series (default: each adapter's own "
                        "base_model_name_or_path)")
    parser.add_argument("--base-revision", default="main", help="revision of --base-model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_series)
    return parser


def _summary_line(record: dict) -> str:
    head = f"{record['revision']}: step {record.get('step')}"
    if record.get("tokens") is not None:
        head += f", {record['tokens']:,} tokens"
    if record.get("duplicate_of"):
        return f"{head}: duplicate of {record['duplicate_of']} (not analysed)"
    if record.get("error"):
        return f"{head}: FAILED: {record['error']}"
    parts = []
    if record.get("exact_match") is not None:
        parts.append(f"copy exact {record['exact_match']:.3f}, token acc {record['token_accuracy']:.3f}")
    else:
        parts.append(f"copy test failed: {record.get('copy_error')}")
    if record.get("induction_max"):
        parts.append("max I per layer " + " ".join(f"{v:.2f}" for v in record["induction_max"]))
    else:
        parts.append(f"induction: {record.get('induction_error')}")
    return f"{head}: " + "; ".join(parts)


def run_series(ns) -> int:
    """The `series` subcommand: errors as one `grokcopy: error: ...` line and exit status 2."""
    from grokcopy.training.config import main_error

    try:
        records = analyze_series(
            ns.repo, revisions=ns.revisions, every=ns.every, out_dir=ns.out, copy_samples=ns.copy_samples,
            symbols=ns.symbols, seed=ns.seed, keep_weights=ns.keep_weights, tokens_per_step=ns.tokens_per_step,
            induction_seq_len=ns.induction_seq_len, batch_size=ns.batch_size, device=ns.device,
            progress=not ns.no_progress, base_model=ns.base_model, base_revision=ns.base_revision)
    except SeriesError as err:
        main_error(_one_line(err))
    for record in records:
        print(_summary_line(record))
    out = Path(ns.out)
    written = [out / name for name in (SERIES_JSON, SERIES_CSV, COPY_PLOT, INDUCTION_PLOT) if (out / name).is_file()]
    print("wrote " + ", ".join(str(p) for p in written))
    failed = [r["revision"] for r in records if r.get("error")]
    if failed:
        print(f"grokcopy: error: {len(failed)} revision(s) could not be analysed ({', '.join(failed)}); "
              "the others are recorded; rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0
