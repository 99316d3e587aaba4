"""Runs into conditions: which runs are the same experiment but for the seed, and their statistics.

Runs are grouped by their run_config.json: runs that differ only in bookkeeping (output folder,
logging, ...) and in `seed` are one condition. `family` picks the conditions that differ in exactly
the fields a claim is about, so a claim never compares runs that differ in something else too.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from grokcopy.analysis.grokking import grokking_stats, shared_loss_target
from grokcopy.analysis.survival import (
    landmark_summary,
    mean_interval,
    median_interval,
    median_lower_bound,
    proportion_interval,
)
from grokcopy.errors import ConfigError
from grokcopy.hub.store import is_series, series_histories
from grokcopy.experiments.run_checks import check_histories, sweep_members
from grokcopy.run_dir import SUMMARY, RunFolder, experiment_settings, load_histories

# run_config fields that do not change what a run learns (or are the seed): never split conditions.
# Bookkeeping: how a run was named, placed, logged or restarted, not what it trained (a member the sweep
# restarted from scratch carries overwrite_output_dir=True, and is the same condition as its seeds).
IGNORED = {"output_dir", "run_name", "logging_dir", "seed", "data_seed", "resume_from_checkpoint", "push_to_hub",
           "overwrite_output_dir",
           "report_to", "disable_tqdm", "per_device_eval_batch_size", "copy_eval_batch_size", "induction_batch_size",
           "induction_analysis", "induction_eval_steps", "local_rank", "cache_dir", "preprocessing_num_workers",
           "max_eval_samples", "project", "skip_memory_metrics", "ddp_timeout", "do_train", "do_eval",
           "torch_empty_cache_steps", "log_on_each_node", "copy_eval_steps", "copy_eval_schedule",
           "copyable_loss_blocks", "resume_allow_changes", "copy_forecast", "ablation_eval_steps",
           "ablation_num_samples", "ablation_layer_sets"}
IGNORED_PREFIXES = ("hub_", "logging_", "save_", "eval_", "dataloader_", "log_level", "trackio_")
SHORT = {"per_device_train_batch_size": "bs", "learning_rate": "lr", "gradient_accumulation_steps": "accum"}
CLAIM_FIELDS = ("tokens_per_step", "per_device_train_batch_size", "gradient_accumulation_steps", "world_size",
                "learning_rate", "attention_dropout", "weight_decay")
# Censored landmarks of a run: (value key, censoring key). Summarised over seeds by Kaplan-Meier.
LANDMARKS = {"jump_step": "jump_censored_at", "jump_tokens": "jump_censored_at",
             "loss_target_step": "loss_censored_at", "loss_target_tokens": "loss_censored_at"}
# --- Runs and conditions ----------------------------------------------------------------------

def _is_run(path: Path) -> bool:
    """A training run with at least one copy test, or a `grokcopy series` output (its revisions are the
    run's evaluations). A run killed before its first copy test has nothing to report: a sweep's report
    lists it with the members that did not run, rather than count it as a run that never jumped."""
    history = RunFolder(path).copy_history
    return (history.is_file() and history.stat().st_size > 0 and bool(history.read_text().strip())) or is_series(path)


def _runs_below(path: Path) -> list[Path]:
    """Runs in a folder of runs, or of folders of runs (e.g. demo-seeds/<recipe>/seed-N), at any depth;
    a run's own folders (checkpoints) are not searched."""
    runs = []
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        runs += [child] if _is_run(child) else _runs_below(child)
    return runs


def find_runs(paths) -> list[Path]:
    """Run folders from the arguments: a run, a sweep folder (its sweep.json members), or a folder of runs."""
    found = []
    for arg in paths:
        path = Path(arg)
        if not path.is_dir():
            raise ConfigError(f"not a folder: {path}")
        members = None if _is_run(path) else sweep_members(path)
        if _is_run(path):
            runs = [path]
        elif members is not None:
            runs = [path / m["name"] for m in members if _is_run(path / m["name"])]
        else:
            runs = _runs_below(path)
        if not runs:
            raise ConfigError(f"{path}: no run in it (no copy_history.jsonl with a copy test, or series.json, in it "
                              "or in its sweep members)")
        found += [r for r in runs if r.resolve() not in {f.resolve() for f in found}]
    return found


def missing_members(paths) -> list[dict]:
    """Members of the sweep folders among `paths` that have no run to report (failed before their first
    copy test, or not run yet), with their status and error from sweep.json: a report says so."""
    missing = []
    for arg in paths:
        for member in sweep_members(Path(arg)) or []:
            if not _is_run(Path(arg) / member["name"]):
                missing.append({"name": member["name"], "status": member.get("status") or "not run",
                                "error": member.get("error")})
    return missing


def unfinished(run_dir: Path, run_config: dict, steps: int | None) -> str | None:
    """Why a run is not a finished one ("10 of 20 steps", "no summary.json"), or None when it is."""
    planned = (run_config.get("training") or {}).get("max_steps")
    if isinstance(planned, int) and planned > 0 and (steps or 0) < planned:
        return f"stopped at step {steps or 0} of {planned}"
    if not RunFolder(run_dir).summary.is_file():
        return f"stopped at step {steps or 0} (no {SUMMARY})"
    return None


def flat_config(run_config: dict, copy_history: list[dict] | None = None) -> dict:
    """The run's fields that can make a condition (section names dropped; bookkeeping left out). An unset
    field (None) is left out, so a field a later version of grokcopy added, unset, does not split a run from
    the same experiment run before it; the copy test's number of sequences is the one the test used (its
    first record's), since an unset or larger value is fitted to the model's context."""
    flat = {k: run_config[k] for k in ("world_size", "tokens_per_step") if k in run_config}
    for section in ("model", "data", "training"):
        for key, value in (run_config.get(section) or {}).items():
            if key not in IGNORED and not key.startswith(IGNORED_PREFIXES) and value is not None:
                flat[key] = value
    first = (copy_history or [{}])[0]
    used = (first.get("copy_shape") or {}).get("num_sequences") or first.get("num_sequences")
    if used is not None:
        flat["copy_num_sequences"] = used
    if "attention_dropout" in (run_config.get("model") or {}) and "attention_dropout" not in flat:
        flat["attention_dropout"] = 0.0  # unset: the models' own default
    if flat.get("demo_corpus"):  # generated from demo_corpus_config and the seed: its file name is no condition
        flat.pop("train_files", None)
    elif flat.get("train_files"):  # the same files under another machine's cache folder are the same data
        flat["train_files"] = [Path(f).name for f in flat["train_files"]]
    return flat


def load_runs(dirs: list[Path], loss_target: float | None = None, loss_window: int = 5, **settings) -> list[dict]:
    """Each run's histories, flattened config, seed and landmarks. Steps and tokens to a loss are measured
    to one target per experiment, so that they compare across its runs and do not move with the other runs
    a report holds: `loss_target` when given; else the one the run's experiment fixes (`report:
    loss_target` in its sweep file, archived as experiment.json); else, for runs of no such experiment,
    `shared_loss_target` of their losses (`loss_target_source` says which)."""
    names = [d.name for d in dirs]
    for d in dirs:
        if not is_series(d):
            check_histories(d)
    histories = [series_histories(d) if is_series(d) else load_histories(d) for d in dirs]
    fixed = [loss_target if loss_target is not None else experiment_settings(d).get("loss_target") for d in dirs]
    shared = shared_loss_target([h["losses"] for h, t in zip(histories, fixed) if t is None], loss_window)
    runs = []
    for d, data, target in zip(dirs, histories, fixed):
        stats = grokking_stats(data, loss_target=shared if target is None else target, loss_window=loss_window,
                               **settings)
        stats["loss_target_source"] = ("given" if loss_target is not None else "experiment" if target is not None
                                       else "shared by the report's runs")
        runs.append({"name": d.name if names.count(d.name) == 1 else f"{d.parent.name}/{d.name}", "path": str(d),
                     "config": flat_config(data["run_config"], data.get("copy_history")), "seed": (data["run_config"].get("training") or {})
                     .get("seed"), "data": data, "induction": data["induction_history"], "stats": stats,
                     "unfinished": None if is_series(d) or stats["finished"] else unfinished(d, data["run_config"],
                                                                                            stats["steps"])})
    return runs


def _key(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _fmt_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _as_object(value) -> dict | None:
    """A field holding a JSON object (e.g. demo_corpus_config), parsed; None for anything else."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _fmt_field(k: str, value, conditions: list[dict], departures: bool = False) -> str:
    """`k=value`; for a JSON-object field only its keys that differ between conditions (`k.key=value`), so
    a label says what changed instead of repeating the whole object."""
    obj = _as_object(value)
    objects = [_as_object(c["config"].get(k)) for c in conditions]
    if obj is None or any(o is None for o in objects):
        return f"{SHORT.get(k, k)}={_fmt_value(value)}"
    keys = sorted({key for o in objects for key in o if len({_key(x.get(key)) for x in objects}) > 1})
    def common(key):  # the value most conditions share; none without a strict majority (as for whole fields)
        value, n = Counter(_key(o.get(key)) for o in objects).most_common(1)[0]
        return value if n * 2 > len(objects) else object()

    shown = [key for key in keys if _key(obj.get(key)) != common(key)] if departures else keys
    return ", ".join(f"{k}.{key}={_fmt_value(obj[key]) if key in obj else 'default'}" for key in shown)


def _order(value):
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


SPLIT = ("per_device_train_batch_size", "gradient_accumulation_steps", "world_size")
BATCH = "B"  # sequences per optimizer step, the label of a batch sweep


def _label_fields(shown: list[str], conditions: list[dict]) -> list[str]:
    """A batch sweep is labelled by its batch, `B=` sequences per optimizer step, not by how each batch is
    split into micro-batches and processes (when the split is one per batch), and a budget that follows the
    batch (max_steps of a token budget) is left out of the label. Adds `B` to the conditions' configs."""
    if not any(k in shown for k in SPLIT) or any(not c["config"].get(SPLIT[0]) for c in conditions):
        return shown
    for c in conditions:
        config = c["config"]
        config[BATCH] = ((config.get("per_device_train_batch_size") or 0)
                         * (config.get("gradient_accumulation_steps") or 1) * (config.get("world_size") or 1))
    pairs = {(c["config"][BATCH], _key([c["config"].get(k) for k in SPLIT])) for c in conditions}
    if len(pairs) != len({b for b, _ in pairs}):
        for c in conditions:
            del c["config"][BATCH]
        return shown  # one batch split two ways: the split is what differs
    budget = {(c["config"][BATCH], _key(c["config"].get("max_steps"))) for c in conditions}
    drop = set(SPLIT) | ({"max_steps"} if len(budget) == len({b for b, _ in budget}) else set())
    return [BATCH] + [k for k in shown if k not in drop]


def group_conditions(runs: list[dict]) -> list[dict]:
    """Conditions: runs with equal config except the seed. Labelled by the fields that differ between
    conditions, each shown where it departs from the value most conditions share ("baseline": none)."""
    fields = sorted({k for r in runs for k in r["config"]})
    varied = [k for k in fields if len({_key(r["config"].get(k)) for r in runs}) > 1]
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(_key([run["config"].get(k) for k in varied]), []).append(run)
    conditions = []
    for members in groups.values():
        config = {k: members[0]["config"].get(k) for k in sorted(set(varied) | set(CLAIM_FIELDS))
                  if k in members[0]["config"]}
        conditions.append({"config": config, "runs": members})
    described = [k for k in varied if k not in ("tokens_per_step",)] or varied
    shown = _label_fields(described, conditions)
    conditions.sort(key=lambda c: [_order(c["config"].get(k)) for k in shown])
    for k in shown:
        counts = Counter(_key(c["config"].get(k)) for c in conditions)
        common, n = counts.most_common(1)[0]
        for c in conditions:
            if n * 2 <= len(conditions) or _key(c["config"].get(k)) != common:
                part = _fmt_field(k, c["config"].get(k), conditions, departures=True)
                if part:
                    c.setdefault("parts", []).append(part)
    for c in conditions:
        c["description"] = ", ".join(_fmt_field(k, c["config"].get(k), conditions)
                                     for k in dict.fromkeys([*shown[:1], *described]))  # the label's B, then all
        c["label"] = ", ".join(c.pop("parts", [])) or ("baseline" if len(conditions) > 1 else
                                                        runs[0]["name"] if len(runs) == 1 else "all runs")
        c["stats"], c["samples"] = summarize([r["stats"] for r in c["runs"]])
        c["n"] = len(c["runs"])
    return conditions


def _bounds(s: dict, key: str, censor: str, observed: bool) -> tuple[float, float]:
    """Where run `s`'s landmark lies: its measured `*_bounds` (the analyses around it), [time, inf)
    when censored, the time itself when nothing says more."""
    steps_key = key.replace("_tokens", "_step") if key.endswith("_tokens") else key
    scale = (s.get("tokens_per_step") or 0) if key.endswith("_tokens") else 1
    if not observed:
        return s[censor] * scale, np.inf
    measured = s.get(f"{steps_key.removesuffix('_step')}_bounds") or s.get(f"{steps_key}_bounds")
    if measured is None:
        return s[key], s[key]
    return measured[0] * scale, measured[1] * scale


def _interval_keys(summary: dict, prefix: str, result: dict) -> None:
    for k in ("ci95", "ci95_coverage", "ci95_method"):
        summary[f"{prefix}_{k}"] = result[k]


def summarize(stats: list[dict]) -> tuple[dict, dict]:
    """A condition over its seeds: for each censored landmark its Kaplan-Meier median and the
    distribution-free interval from each run's bounds (`jump_step_median`, `jump_step_ci95`,
    `jump_step_ci95_coverage`, `jump_step_ci95_method`, ...), `n_runs`, `n_jumped`; the jump's width and
    the plateau before it; the mean final exact match with its t interval; per layer the formation
    median. Also the bootstrap samples of the medians (for slopes across conditions; not written to
    report.json)."""
    summary: dict = {"n_runs": len(stats), "n_jumped": sum(s.get("jump_step") is not None for s in stats),
                     "n_unfinished": sum(s.get("finished") is False for s in stats),
                     "tokens_per_step": stats[0].get("tokens_per_step") if stats else None,
                     "steps": max((s.get("steps") or 0 for s in stats), default=None)}
    samples = {}
    for key, censor in LANDMARKS.items():
        usable = [s for s in stats if s.get(key) is not None or s.get(censor) is not None]
        observed = [s.get(key) is not None for s in usable]
        times = [s[key] if o else s[censor] * ((s.get("tokens_per_step") or 0) if key.endswith("tokens") else 1)
                 for s, o in zip(usable, observed)]  # censored in tokens: the censoring step x tokens per step
        low, high = zip(*(_bounds(s, key, censor, o) for s, o in zip(usable, observed))) if usable else ((), ())
        result = landmark_summary(times, observed, low, high)
        summary[f"{key}_median"] = result["median"]
        _interval_keys(summary, key, result)
        summary[f"{key}_lower_bound"] = median_lower_bound(times, observed)  # where the median is undefined
        samples[key] = result["samples"]
    for key in ("jump_width", "plateau_steps"):  # over the runs that jumped: how abrupt, after how long a plateau
        measured = [s for s in stats if s.get(key) is not None]
        summary[f"{key}_n"] = len(measured)
        summary[f"{key}_median"] = float(np.median([s[key] for s in measured])) if measured else None
        _interval_keys(summary, key, median_interval([(s.get(f"{key}_bounds") or [s[key]] * 2)[0] for s in measured],
                                                     [(s.get(f"{key}_bounds") or [s[key]] * 2)[1] for s in measured]))
    finals = [s["final_exact_match"] for s in stats if s.get("final_exact_match") is not None]
    if finals:
        result = mean_interval(finals, bounds=(0.0, 1.0))
        summary["final_exact_match_mean"] = result["mean"]
        _interval_keys(summary, "final_exact_match", result)
    summary["formation"] = formation_summary(stats)
    # Copying without an induction head (exact match ~0.67: the "other solution") also passes the jump's 0.5.
    # None when no run has induction scores (a sweep without the analysis), not "no head". A run the stop rule
    # ended before any head formed is not headless: it is undetermined (its next analysis never came).
    if any(s.get("formation") for s in stats):
        has_head = [any(r.get("formation_step") is not None for r in s.get("formation") or []) for s in stats]
        summary["n_with_head"] = sum(has_head)
        summary["n_head_undetermined"] = sum(not h and bool(s.get("stopped_by_rule")) for h, s in zip(has_head, stats))
    else:
        summary["n_with_head"] = summary["n_head_undetermined"] = None
    measured = [s["copies_by_induction"] for s in stats if s.get("copies_by_induction") is not None]
    summary["n_copies_by_induction"] = sum(measured) if measured else None
    summary["n_copies_measured"] = len(measured)  # runs that copy and whose final model was ablated
    summary.update(rate_summary(stats))
    return summary, samples


def rate_summary(stats: list[dict]) -> dict:
    """How many runs meet the demo's criteria (`groks`: loss first, final exact match >= 0.9, a formed
    induction head), as a rate with its exact (Clopper-Pearson) 95% interval."""
    n, k = len(stats), sum(bool(s.get("groks")) for s in stats)
    summary = {"n_groks": k, "n_rated": n, "groks_rate": k / n if n else None}
    _interval_keys(summary, "groks", proportion_interval(k, n))
    return summary


def formation_summary(stats: list[dict]) -> list[dict]:
    """Per layer over seeds: how many formed, the KM median formation step and its interval (each run's
    formation lying between two analyses, or after its last one when censored)."""
    layers = max((len(s.get("formation") or []) for s in stats), default=0)
    rows = []
    for layer in range(layers):
        rows_ = [s["formation"][layer] for s in stats if layer < len(s.get("formation") or [])]
        usable = [r for r in rows_ if r["formation_step"] is not None or r["censored_at"] is not None]
        formed = [r["formation_step"] is not None for r in usable]
        low = [(r.get("formation_bounds") or [r["formation_step"]] * 2)[0] if f else r["censored_at"]
               for r, f in zip(usable, formed)]
        high = [(r.get("formation_bounds") or [r["formation_step"]] * 2)[1] if f else np.inf
                for r, f in zip(usable, formed)]
        result = landmark_summary([r["formation_step"] if f else r["censored_at"] for r, f in zip(usable, formed)],
                                  formed, low, high)
        rows.append({"layer": layer, "n_runs": len(rows_), "n_formed": result["n_reached"],
                     "median": result["median"], "ci95": result["ci95"], "ci95_coverage": result["ci95_coverage"],
                     "ci95_method": result["ci95_method"],
                     "max_induction": max(r["max_induction"] for r in rows_),
                     "copying_at_end": (float(np.median(copying)) if (copying := [r["copying_at_end"] for r in rows_
                                        if r.get("copying_at_end") is not None]) else None)})
    return rows


# --- The paper's claims: pure functions of {label: {"config": {...}, "stats": {...}}} ------------

def families(conditions: dict, fields, key: str | None = None) -> list[list[str]]:
    """Every set of conditions equal in every config field except `fields` and taking at least two values
    of `key` (default: of `fields` together), largest first (ties in the conditions' order)."""
    groups: dict[str, list[str]] = {}
    for label, c in conditions.items():
        config = c.get("config", {})
        if key and key not in config or not key and not any(f in config for f in fields):
            continue
        other = {k: v for k, v in config.items() if k not in fields}
        groups.setdefault(_key(other), []).append(label)

    def distinct(labels):
        return len({_key(conditions[l]["config"].get(key) if key else
                         [conditions[l]["config"].get(f) for f in fields]) for l in labels})

    found = [g for g in groups.values() if distinct(g) >= 2]
    return sorted(found, key=lambda g: (-distinct(g), -len(g)))


def family(conditions: dict, fields, key: str | None = None) -> list[str]:
    """The largest of `families` ([] when there is none)."""
    found = families(conditions, fields, key)
    return found[0] if found else []
