"""Runs into conditions: which runs are the same experiment but for the seed, and their statistics.

Runs are grouped by their run_config.json: runs that differ only in bookkeeping (output folder,
logging, ...) and in `seed` are one condition. `family` picks the conditions that differ in exactly
the fields a claim is about, so a claim never compares runs that differ in something else too.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from grokcopy.analysis.grokking import grokking_stats
from grokcopy.errors import ConfigError
from grokcopy.run_dir import COPY_HISTORY, SUMMARY, SWEEP_RECORD, load_histories, read_json

# run_config fields that do not change what a run learns (or are the seed): never split conditions.
IGNORED = {"output_dir", "run_name", "logging_dir", "seed", "data_seed", "resume_from_checkpoint", "push_to_hub",
           "report_to", "disable_tqdm", "per_device_eval_batch_size", "copy_eval_batch_size", "induction_batch_size",
           "induction_analysis", "induction_eval_steps", "local_rank", "cache_dir", "preprocessing_num_workers",
           "max_eval_samples", "project", "skip_memory_metrics", "ddp_timeout", "do_train", "do_eval",
           "torch_empty_cache_steps", "log_on_each_node", "copy_eval_steps", "copy_eval_schedule"}
IGNORED_PREFIXES = ("hub_", "logging_", "save_", "eval_", "dataloader_", "log_level", "trackio_")
SHORT = {"per_device_train_batch_size": "bs", "learning_rate": "lr", "gradient_accumulation_steps": "accum"}
CLAIM_FIELDS = ("tokens_per_step", "per_device_train_batch_size", "gradient_accumulation_steps", "world_size",
                "learning_rate", "attention_dropout", "weight_decay")
STAT_KEYS = ("steps", "final_loss", "final_exact_match", "loss_plateau_step", "loss_plateau_tokens", "copy_jump_step",
             "copy_jump_tokens", "copy_half_step", "copy_half_tokens", "lag_steps", "lag_tokens")
# --- Runs and conditions ----------------------------------------------------------------------

def _is_run(path: Path) -> bool:
    return (path / COPY_HISTORY).is_file()


def find_runs(paths) -> list[Path]:
    """Run folders from the arguments: a run, a sweep folder (its sweep.json members), or a folder of runs."""
    found = []
    for arg in paths:
        path = Path(arg)
        if not path.is_dir():
            raise ConfigError(f"not a folder: {path}")
        record = path / SWEEP_RECORD
        if _is_run(path):
            runs = [path]
        elif record.is_file():
            runs = [path / m["name"] for m in json.loads(record.read_text())["members"] if _is_run(path / m["name"])]
        else:
            runs = sorted(p for p in path.iterdir() if p.is_dir() and _is_run(p))
        if not runs:
            raise ConfigError(f"{path}: no run in it (no copy_history.jsonl, in it or in its sweep members)")
        found += [r for r in runs if r.resolve() not in {f.resolve() for f in found}]
    return found


def missing_members(paths) -> list[dict]:
    """Members of the sweep folders among `paths` that have no run to report (failed before their first
    copy test, or not run yet), with their status and error from sweep.json: a report says so."""
    missing = []
    for arg in paths:
        record = read_json(Path(arg) / SWEEP_RECORD)
        for member in (record or {}).get("members", []) if isinstance(record, dict) else []:
            if not _is_run(Path(arg) / member["name"]):
                missing.append({"name": member["name"], "status": member.get("status") or "not run",
                                "error": member.get("error")})
    return missing


def unfinished(run_dir: Path, run_config: dict, steps: int | None) -> str | None:
    """Why a run is not a finished one ("10 of 20 steps", "no summary.json"), or None when it is."""
    planned = (run_config.get("training") or {}).get("max_steps")
    if isinstance(planned, int) and planned > 0 and (steps or 0) < planned:
        return f"stopped at step {steps or 0} of {planned}"
    if not (run_dir / SUMMARY).is_file():
        return f"stopped at step {steps or 0} (no {SUMMARY})"
    return None


def flat_config(run_config: dict) -> dict:
    """The run's fields that can make a condition (section names dropped; bookkeeping left out)."""
    flat = {k: run_config[k] for k in ("world_size", "tokens_per_step") if k in run_config}
    for section in ("model", "data", "training"):
        for key, value in (run_config.get(section) or {}).items():
            if key not in IGNORED and not key.startswith(IGNORED_PREFIXES):
                flat[key] = value
    if "attention_dropout" in flat and flat["attention_dropout"] is None:
        flat["attention_dropout"] = 0.0  # the models' own default
    if flat.get("train_files"):  # the same files under another machine's cache folder are the same data
        flat["train_files"] = [Path(f).name for f in flat["train_files"]]
    return flat


def load_runs(dirs: list[Path], **settings) -> list[dict]:
    """Each run's histories, flattened config, seed, grokking statistics and induction history."""
    names = [d.name for d in dirs]
    runs = []
    for d in dirs:
        data = load_histories(d)
        stats = grokking_stats(data, **settings)
        runs.append({"name": d.name if names.count(d.name) == 1 else f"{d.parent.name}/{d.name}", "path": str(d),
                     "unfinished": unfinished(d, data["run_config"], stats["steps"]),
                     "config": flat_config(data["run_config"]), "seed": (data["run_config"].get("training") or {})
                     .get("seed"), "stats": stats, "data": data,
                     "induction": data["induction_history"]})
    return runs


def _key(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _fmt_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _order(value):
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


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
    shown = [k for k in varied if k not in ("tokens_per_step",)] or varied
    conditions.sort(key=lambda c: [_order(c["config"].get(k)) for k in shown])
    for k in shown:
        counts = Counter(_key(c["config"].get(k)) for c in conditions)
        common, n = counts.most_common(1)[0]
        for c in conditions:
            if n * 2 <= len(conditions) or _key(c["config"].get(k)) != common:
                c.setdefault("parts", []).append(f"{SHORT.get(k, k)}={_fmt_value(c['config'].get(k))}")
    for c in conditions:
        c["description"] = ", ".join(f"{SHORT.get(k, k)}={_fmt_value(c['config'].get(k))}" for k in shown)
        c["label"] = ", ".join(c.pop("parts", [])) or ("baseline" if len(conditions) > 1 else
                                                        runs[0]["name"] if len(runs) == 1 else "all runs")
        c["stats"], c["spread"] = aggregate([r["stats"] for r in c["runs"]])
        c["n"] = len(c["runs"])
    return conditions


def aggregate(stats: list[dict]) -> tuple[dict, dict]:
    """Mean and (min, max, sd, count) of each statistic over seeds, ignoring missing (None) values."""
    import statistics

    mean, spread = {}, {}
    for key in STAT_KEYS + ("tokens_per_step",):
        values = [s[key] for s in stats if s.get(key) is not None]
        mean[key] = statistics.fmean(values) if values else None
        spread[key] = {"min": min(values, default=None), "max": max(values, default=None), "count": len(values),
                       "sd": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None}
    return mean, spread


# --- The paper's claims: pure functions of {label: {"config": {...}, "stats": {...}}} ------------

def family(conditions: dict, fields, key: str | None = None) -> list[str]:
    """The largest set of conditions equal in every config field except `fields` and taking at
    least two values of `key` (default: of `fields` together). [] when there is none."""
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

    best = max(groups.values(), key=lambda g: (distinct(g), len(g)), default=[])
    return best if distinct(best) >= 2 else []
