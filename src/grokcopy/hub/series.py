"""The copy test and induction heads across a Hub repo's checkpoint branches (`grokcopy series`).

    grokcopy series EleutherAI/pythia-160m --every 10 --out runs/pythia-160m-series

Public suites publish their checkpoints as branches: Pythia `step1000`, OLMo `step1000-tokens4B`
or `stage1-step1000-tokens5B`, a Trainer run `checkpoint-1000`. For each selected branch we
download only what the analysis needs (config, weights, tokenizer, trainer state, stored results),
run the copy test and the induction analysis, record the numbers and delete the weights again
(unless `keep_weights`). Before any download every branch's weight files (safetensors, sharded
with an index, pytorch_model.bin, sharded .bin, a PEFT adapter) are listed with their LFS sha256,
and compared with main's and with the other branches' (`suspects.py`): a branch holding exactly
the weights of another is its `duplicate_of` and not analysed twice; one holding the final model's
weights (whole or one shard) under an earlier name is `suspect`, recorded with the reason and left
out of the curves and landmarks unless `include_suspect`. While each revision's weights are loaded
a seeded sample of every tensor is kept, and the distances between revisions per tensor group
(`continuity.py`) flag a revision off the path of its neighbours or a run that does not descend
from its first checkpoint.

Under `torchrun` / `accelerate launch` each process analyses its share of the revisions on its
own device (`workers.py`) and the main process merges; a rerun resumes from what any process wrote.

Output folder: `series.json` (every record in full, induction matrices included; rewritten
atomically after each revision, so a crash loses at most the revision being analysed and a rerun
resumes; with the series' `suspects`, `discontinuities` and `landmarks`), `series.csv` (one flat
row per revision), `series_copy.png`, `series_induction.png`, and `weight_samples/` (each analysed
revision's parameter sample, ~4 KB per tensor, from which the distances are recomputed on a rerun).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from grokcopy.analysis.induction_config import InductionConfig
from grokcopy.copytest.task import COPY_BATCH_SIZE, CopyTaskConfig, check_symbol_kind
from grokcopy.devices import default_device
from grokcopy.errors import CopyTaskError, SeriesError, one_line
from grokcopy.hub.continuity import discontinuities, group_distances, load_samples
from grokcopy.hub.listing import checkpoint_refs, list_refs, list_revision, named_revisions
from grokcopy.hub.revisions import default_tokens_per_step, parse_revision, record_tokens, select_revisions
from grokcopy.hub.runner import SeriesRunner
from grokcopy.hub.store import (
    SERIES_CSV,
    SERIES_JSON,
    load_state,
    merge_records,
    now,
    part_path,
    read_part,
    record_key,
    usable,
    write_outputs,
    write_part,
)
from grokcopy.hub.suspects import classify
from grokcopy.hub.workers import finish, launch_process, my_share

logger = logging.getLogger(__name__)

COPY_PLOT = "series_copy.png"
INDUCTION_PLOT = "series_induction.png"
OUTPUTS = (SERIES_JSON, SERIES_CSV, COPY_PLOT, INDUCTION_PLOT)
DTYPES = ("float32", "bfloat16", "float16")


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
    copy: CopyTaskConfig = CopyTaskConfig(),
    induction: InductionConfig = InductionConfig(),
    keep_weights: bool = False,
    tokens_per_step: int | None = None,
    batch_size: int = COPY_BATCH_SIZE,
    device: str | None = None,
    dtype: str | None = None,
    include_suspect: bool = False,
    progress: bool = True,
    api=None,
    base_model: str | None = None,
    base_revision: str = "main",
) -> list[dict]:
    """Copy test + induction analysis of a Hub repo's checkpoint revisions; returns the selected records.

    `revisions`: names (a list or "a,b,c"; branches, tags or commit ids, any naming) or None for
    every branch and tag named like a checkpoint (see :func:`parse_revision`); `every`: keep every
    K-th of them in training order, always with the last. `copy` and `induction`: the analyses' settings
    (the same fields and defaults as a training run's `copy_*` / `induction_*`), each fitted to the model's
    context by its one rule. Records already in `out_dir/series.json` for the same commit and settings are
    reused, not recomputed; `batch_size` is the copy test's. Duplicates (``duplicate_of``) and
    suspects (``suspect``: a reason) come from the listing, see :mod:`grokcopy.hub.suspects`;
    ``continuity`` (distances per tensor group to the previous analysed revision and to the first)
    and ``discontinuity`` from the loaded weights, see :mod:`grokcopy.hub.continuity`.
    `tokens_per_step` (default: Pythia's 2,097,152 for EleutherAI/pythia*) gives tokens where
    neither the name (OLMo) nor trainer_state.json's num_input_tokens_seen does. `dtype`: float32,
    bfloat16 or float16 (default: bfloat16 on a GPU, else float32); `device`: default cuda (each
    process its own under torchrun) when present. A PEFT adapter checkpoint is analysed on top of
    `base_model` (default: the adapter's `base_model_name_or_path`). A revision that cannot be
    downloaded or loaded (e.g. truncated weights) gets an ``error`` and no numbers; the others go on.
    Under torchrun, processes other than the main one return only the records they analysed.
    Raises :class:`SeriesError` when the series itself cannot be read.
    """
    from huggingface_hub import HfApi
    from tqdm.auto import tqdm

    check_repo_id(repo_id)
    if every is not None and every < 1:
        raise SeriesError(f"every: expected a positive integer, got {every}")
    try:
        check_symbol_kind(copy.symbols, "symbols")
    except CopyTaskError as err:
        raise SeriesError(str(err)) from None
    index, count, local_index = launch_process()
    device = str(device or default_device())
    if device == "cuda" and count > 1:
        device = f"cuda:{local_index}"
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    if dtype not in DTYPES:
        raise SeriesError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    api = api or HfApi()
    if tokens_per_step is None:
        tokens_per_step = default_tokens_per_step(repo_id)
    # What defines a measurement, named as in a run's run_config.json: a record made with other settings is
    # redone (the copy test's batch size and the device are not).
    settings = {**copy.settings("copy_"), **induction.settings("induction_"), "dtype": dtype}

    branches, tags = list_refs(api, repo_id)
    commits = _selection(repo_id, revisions, branches, tags)
    selected = select_revisions(list(commits), every)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = load_state(out, repo_id)
    by_name = {r["revision"]: r for r in state["records"]}

    def finished(name: str) -> bool:
        record = by_name.get(name)
        return (record is not None and record.get("duplicate_of") is None and record.get("commit") == commits[name]
                and record.get("settings") == settings)

    plans: dict[str, dict] = {}
    for name in tqdm(selected, desc="listing revisions", unit="rev", disable=not progress, leave=False):
        old = by_name.get(name) or {}
        if old.get("commit") == commits[name] and old.get("weight_shards"):
            plans[name] = {k: old.get(k) for k in ("weight_files", "weights_sha256", "weight_shards")}
        else:
            plans[name] = list_revision(api, repo_id, name, commits[name])
    verdicts = classify(selected, {n: p["weight_shards"] for n, p in plans.items()},
                        _final_weights(api, repo_id, branches, commits, plans))

    todo = [n for n in selected if verdicts[n]["duplicate_of"] is None and not finished(n)]
    if len(todo) < len(selected) and index == 0:
        _say(f"{repo_id}: {len(selected) - len(todo)} of {len(selected)} revisions already in {out / SERIES_JSON} "
             "or duplicates", progress)
    runner = SeriesRunner(repo_id, out, settings, keep_weights, device, progress, batch_size, base_model, base_revision,
                          copy=copy, induction=induction)
    mine = []
    # A killed multi-process run's part file keeps what it held (not merged into series.json yet) until merged.
    earlier = {r["revision"]: r for r in read_part(out, index)} if count > 1 else {}
    for name in tqdm(my_share(todo, index, count), desc="revisions", unit="rev", disable=not progress):
        try:
            plan = plans[name] if "files" in plans[name] else list_revision(api, repo_id, name, commits[name])
            record = runner.run(name, commits[name], plan)
        except SeriesError as err:  # one broken checkpoint does not stop the series
            record = _unanalysed_record(name, commits[name], error=one_line(err), failed_at=now())
            _say(f"skipped: {one_line(err)} (a rerun retries it)", progress)
        record["process"], record["suspect"] = index, verdicts[name]["suspect"]
        record["tokens"], record["tokens_source"] = record_tokens(record, tokens_per_step)
        by_name[name] = record
        mine.append(record)
        if count > 1:  # each process its own file; the main one merges them once all are done
            write_part(out, index, list(merge_records(dict(earlier), mine).values()))
        else:
            state["records"] = list(by_name.values())
            write_outputs(out, state)

    finish(index, count, repo_id)
    if index != 0:
        return mine
    if count > 1:  # what this process loaded at the start (series.json, old parts) and every part now
        merge_records(by_name, load_state(out, repo_id)["records"])
    for name in selected:
        verdict = verdicts[name]
        if verdict["duplicate_of"]:
            if by_name.get(name, {}).get("duplicate_of") != verdict["duplicate_of"]:
                _say(f"{repo_id}@{name}: same weights (sha256) as {verdict['duplicate_of']}; skipped as its duplicate"
                     + (f"; suspect: {verdict['suspect']}" if verdict["suspect"] else ""), progress)
            by_name[name] = _unanalysed_record(name, commits[name], duplicate_of=verdict["duplicate_of"],
                                               **{k: plans[name][k] for k in ("weight_files", "weights_sha256",
                                                                              "weight_shards")})
        if name in by_name:
            by_name[name]["suspect"] = verdict["suspect"]
    for record in by_name.values():  # tokens_per_step may be new for records of earlier runs
        if record.get("tokens_source") in (None, "tokens_per_step"):
            record["tokens"], record["tokens_source"] = record_tokens(record, tokens_per_step)
    _continuity(out, by_name)
    state["records"] = list(by_name.values())
    _summarise(state, include_suspect)
    write_outputs(out, state)
    for process in range(count if count > 1 else 0):
        part_path(out, process).unlink(missing_ok=True)
    from grokcopy.analysis.plots import plot_series

    plot_series([r for r in state["records"] if usable(r, include_suspect)], out, repo_id, COPY_PLOT, INDUCTION_PLOT)
    return [by_name[name] for name in sorted(selected, key=lambda n: record_key(by_name[n]))]


def _selection(repo_id: str, revisions, branches: dict, tags: dict) -> dict[str, str]:
    if revisions is not None:
        return named_revisions(repo_id, revisions, branches, tags)
    commits = checkpoint_refs(branches, tags)
    if not commits:
        raise SeriesError(f"{repo_id}: no branch or tag is named like a checkpoint (stepN, stepN-tokensXB, "
                          f"stageK-stepN-tokensXB, checkpoint-N); branches: {', '.join(sorted(branches))}; "
                          f"name revisions explicitly")
    return commits


def _final_weights(api, repo_id: str, branches: dict, commits: dict, plans: dict) -> dict | None:
    """main's {weight file: sha256} (the final model): from a listed revision at main's commit, else listed."""
    commit = branches.get("main")
    if commit is None:
        return None
    for name, plan in plans.items():
        if commits.get(name) == commit:
            return plan["weight_shards"]
    try:
        return list_revision(api, repo_id, "main", commit)["weight_shards"]
    except SeriesError:  # a main without weights (only a README): nothing to compare with
        return None


def _continuity(out: Path, by_name: dict) -> None:
    """Distances per tensor group between the analysed revisions, in training order, from their samples."""
    samples = {}
    for name, record in by_name.items():
        if record.get("samples_file") and not record.get("error"):
            loaded = load_samples(out / record["samples_file"])
            if loaded is not None:
                samples[name] = loaded
    chain = sorted(samples, key=lambda n: record_key(by_name[n]))
    memo: dict[tuple, dict] = {}

    def distance(a: str, b: str) -> dict:
        if (a, b) not in memo:
            memo[(a, b)] = group_distances(samples[a], samples[b])
        return memo[(a, b)]

    flags = discontinuities(chain, distance)
    for i, name in enumerate(chain):
        by_name[name]["continuity"] = {
            "previous": chain[i - 1] if i else None, "to_previous": distance(chain[i - 1], name) if i else None,
            "first": chain[0], "to_first": distance(chain[0], name) if i else None}
        by_name[name]["discontinuity"] = flags.get(name)


def _summarise(state: dict, include_suspect: bool) -> None:
    """The series' own summary in series.json: suspects, discontinuities and landmarks of the usable curve."""
    from grokcopy.analysis.grokking import formation_steps, jump_step

    records = sorted(state["records"], key=record_key)
    curve = [r for r in records if usable(r, include_suspect)]
    copy = [{"step": r["step"], "exact_match": r["exact_match"]} for r in curve if r.get("exact_match") is not None]
    history = [{**r["induction"], "step": r["step"], "tokens": r.get("tokens")} for r in curve if r.get("induction")]
    state["include_suspect"] = include_suspect
    state["suspects"] = {r["revision"]: r["suspect"] for r in records if r.get("suspect")}
    state["discontinuities"] = {r["revision"]: r["discontinuity"] for r in records if r.get("discontinuity")}
    jump, censored = jump_step(copy)  # the landmarks of grokcopy report (grokcopy.analysis.grokking)
    state["landmarks"] = {"jump_step": jump, "jump_censored_at": censored,
                          "induction_formation": formation_steps(history), "revisions_on_curve": len(curve)}
