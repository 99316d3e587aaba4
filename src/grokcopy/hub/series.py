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

import logging
import os
import sys
from pathlib import Path

from grokcopy.copytest.task import check_symbol_kind
from grokcopy.devices import default_device
from grokcopy.errors import CopyTaskError, SeriesError, one_line
from grokcopy.hub.listing import list_refs, list_revision, named_revisions
from grokcopy.hub.revisions import default_tokens_per_step, parse_revision, record_tokens, select_revisions
from grokcopy.hub.runner import SeriesRunner
from grokcopy.hub.store import SERIES_CSV, SERIES_JSON, load_state, record_key, write_outputs

logger = logging.getLogger(__name__)

COPY_PLOT = "series_copy.png"
INDUCTION_PLOT = "series_induction.png"
OUTPUTS = (SERIES_JSON, SERIES_CSV, COPY_PLOT, INDUCTION_PLOT)


def _unanalysed_record(name: str, commit: str, **fields) -> dict:
    """The record of a revision with no numbers: a duplicate of another, or one that failed."""
    parsed = parse_revision(name)
    return {"revision": name, "commit": commit, "step": parsed[0] if parsed else None,
            "name_tokens": parsed[1] if parsed else None, "tokens": None, "tokens_source": None, "duplicate_of": None,
            "exact_match": None, "token_accuracy": None, "induction_max": None, **fields}


def check_repo_id(repo_id: str) -> None:
    """A Hub model repo id, or a SeriesError saying why not (a local folder has no checkpoint branches)."""
    from huggingface_hub.utils import validate_repo_id

    if Path(repo_id).expanduser().exists() or repo_id.startswith(("/", "./", "../", "~")):
        raise SeriesError(f"{repo_id}: a local path, not a Hub repo id; series reads a Hub repo's checkpoint "
                          "branches (for a local run: grokcopy report, or copy-test / induction on a checkpoint-N)")
    try:
        validate_repo_id(repo_id)
    except ValueError as err:
        raise SeriesError(f"{repo_id}: not a Hub repo id: {one_line(err)}") from None


def _say(message: str, progress: bool) -> None:
    logger.info(message)
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)


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

    check_repo_id(repo_id)
    if every is not None and every < 1:
        raise SeriesError(f"every: expected a positive integer, got {every}")
    if copy_samples < 1:
        raise SeriesError(f"copy_samples: expected a positive integer, got {copy_samples}")
    try:
        check_symbol_kind(symbols, "symbols")
    except CopyTaskError as err:
        raise SeriesError(str(err)) from None
    api = api or HfApi()
    if tokens_per_step is None:
        tokens_per_step = default_tokens_per_step(repo_id)
    if device is None:
        device = default_device()
    # What defines a measurement: a record made with other settings is redone (batch size and device are not).
    settings = {"copy_samples": copy_samples, "symbols": symbols, "seed": seed, "induction_seq_len": induction_seq_len}

    branches, tags = list_refs(api, repo_id)
    if revisions is not None:
        commits = named_revisions(repo_id, revisions, branches, tags)
    else:
        commits = {name: commit for name, commit in branches.items() if parse_revision(name) is not None}
        if not commits:
            raise SeriesError(f"{repo_id}: no branch is named like a checkpoint (stepN, stepN-tokensXB, "
                              f"stageK-stepN-tokensXB, checkpoint-N); branches: {', '.join(sorted(branches))}; "
                              f"name revisions explicitly")
    selected = select_revisions(list(commits), every)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = load_state(out, repo_id)
    by_name = {r["revision"]: r for r in state["records"]}

    def finished(name: str) -> bool:
        record = by_name.get(name)
        return (record is not None and record.get("duplicate_of") is None and record.get("commit") == commits[name]
                and record.get("settings") == settings)

    # Weights fingerprints of records analysed before (any revision of this folder), then of the selection.
    owner: dict[tuple, str] = {}
    for record in sorted(state["records"], key=record_key):
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
            plans[name] = list_revision(api, repo_id, name, commits[name])

    runner = SeriesRunner(repo_id, out, settings, keep_weights, device, progress, batch_size, base_model, base_revision)
    todo = [name for name in selected if not finished(name)]
    if len(todo) < len(selected):
        _say(f"{repo_id}: {len(selected) - len(todo)} of {len(selected)} revisions already in {out / SERIES_JSON}",
             progress)
    for name in tqdm(todo, desc="revisions", unit="rev", disable=not progress):
        plan = plans[name]
        fingerprint = tuple(plan["weights_sha256"])
        first = owner.get(fingerprint)
        if first is not None and first != name:
            record = _unanalysed_record(name, commits[name], duplicate_of=first, weight_files=plan["weight_files"],
                                        weights_sha256=plan["weights_sha256"])
            if by_name.get(name, {}).get("duplicate_of") != first:
                _say(f"{repo_id}@{name}: same weights (sha256) as {first}; skipped as its duplicate", progress)
        else:
            try:
                if "files" not in plan:  # reused from a duplicate record whose original is gone
                    plan = list_revision(api, repo_id, name, commits[name])
                record = runner.run(name, commits[name], plan)
                owner[fingerprint] = name
            except SeriesError as err:  # one broken checkpoint does not stop the series
                record = _unanalysed_record(name, commits[name], error=one_line(err))
                _say(f"skipped: {one_line(err)} (a rerun retries it)", progress)
        record["tokens"], record["tokens_source"] = record_tokens(record, tokens_per_step)
        by_name[name] = record
        state["records"] = list(by_name.values())
        write_outputs(out, state)

    for record in by_name.values():  # tokens_per_step may be new for records of earlier runs
        if record.get("tokens_source") in (None, "tokens_per_step"):
            record["tokens"], record["tokens_source"] = record_tokens(record, tokens_per_step)
    state["records"] = list(by_name.values())
    write_outputs(out, state)
    from grokcopy.analysis.plots import plot_series

    plot_series(state["records"], out, repo_id, COPY_PLOT, INDUCTION_PLOT)
    return [by_name[name] for name in sorted(selected, key=lambda n: record_key(by_name[n]))]
