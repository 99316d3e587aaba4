"""`grokcopy report`: runs (or sweeps) in, the paper's figures, grokking statistics and verdicts out.

Runs are grouped into conditions by their run_config.json: runs that differ only in bookkeeping
(output folder, logging, ...) and in `seed` are one condition, averaged over seeds. The paper's
claims are pure functions of the conditions' statistics (`claim_*`), so what counts as "supported"
is written down once, tested on synthetic numbers, and reported with the numbers behind it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from grokcopy.analysis.grokking import grokking_stats, induction_formation, load_run_histories
from grokcopy.training.config import ConfigError

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
BATCH_FIELDS = ("tokens_per_step", "per_device_train_batch_size", "gradient_accumulation_steps", "world_size")
STAT_KEYS = ("steps", "final_loss", "final_exact_match", "loss_plateau_step", "loss_plateau_tokens", "copy_jump_step",
             "copy_jump_tokens", "copy_half_step", "copy_half_tokens", "lag_steps", "lag_tokens")
SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE = "supported", "not supported", "not testable with these runs"


# --- Runs and conditions ----------------------------------------------------------------------

def _is_run(path: Path) -> bool:
    return (path / "copy_history.jsonl").is_file()


def find_runs(paths) -> list[Path]:
    """Run folders from the arguments: a run, a sweep folder (its sweep.json members), or a folder of runs."""
    found = []
    for arg in paths:
        path = Path(arg)
        if not path.is_dir():
            raise ConfigError(f"not a folder: {path}")
        record = path / "sweep.json"
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
    from grokcopy.training.callbacks import INDUCTION_HISTORY, read_jsonl

    names = [d.name for d in dirs]
    runs = []
    for d in dirs:
        data = load_run_histories(d)
        runs.append({"name": d.name if names.count(d.name) == 1 else f"{d.parent.name}/{d.name}", "path": str(d),
                     "config": flat_config(data["run_config"]), "seed": (data["run_config"].get("training") or {})
                     .get("seed"), "stats": grokking_stats(data, **settings), "data": data,
                     "induction": read_jsonl(d / INDUCTION_HISTORY)})
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


def relative_spread(values) -> float:
    """(max - min) / mean: how far apart the conditions are, as a share of their mean."""
    low, high = min(values), max(values)
    mean = sum(values) / len(values)
    return (high - low) / mean if mean > 0 else (0.0 if high == low else float("inf"))


def _claim(name, text, verdict, evidence, numbers=None):
    return {"claim": name, "text": text, "verdict": verdict, "evidence": evidence, "numbers": numbers or {}}


def _list(conditions, labels, key, fmt="{:,.0f}"):
    return "; ".join(f"{l}: " + ("none" if conditions[l]["stats"].get(key) is None else
                                 fmt.format(conditions[l]["stats"][key])) for l in labels)


def _batch_claim(conditions, name, text, landmark, tolerance):
    labels = family(conditions, BATCH_FIELDS, key="tokens_per_step")
    if not labels:
        return _claim(name, text, NOT_TESTABLE, "needs conditions that differ only in batch size (tokens per step)")
    labels.sort(key=lambda l: conditions[l]["config"]["tokens_per_step"])
    missing = [l for l in labels if conditions[l]["stats"].get(f"{landmark}_step") is None]
    found = [conditions[l]["stats"][f"{landmark}_step"] for l in labels if l not in missing]
    # A condition that trained past another's landmark without reaching it is evidence too: the
    # landmark does not come after the same number of steps.
    outran = [l for l in missing if found and (conditions[l]["stats"].get("steps") or 0) > min(found)]
    if missing and landmark == "copy_jump" and outran:
        evidence = "; ".join(
            f"{l}: " + (f"no jump by step {conditions[l]['stats']['steps']:,.0f} "
                        f"({conditions[l]['stats']['steps'] * conditions[l]['config']['tokens_per_step']:,.3g} tokens)"
                        if l in missing else f"jump at step {conditions[l]['stats']['copy_jump_step']:,.0f} "
                        f"({conditions[l]['stats']['copy_jump_tokens']:,.3g} tokens)") for l in labels)
        return _claim(name, text, NOT_SUPPORTED, evidence, {"conditions": labels, "without_jump": missing})
    if missing:
        return _claim(name, text, NOT_TESTABLE, f"no {landmark.replace('_', ' ')} in: {', '.join(missing)}")
    steps = [conditions[l]["stats"][f"{landmark}_step"] for l in labels]
    tokens = [conditions[l]["stats"][f"{landmark}_tokens"] for l in labels]
    numbers = {"conditions": labels, "steps": steps, "tokens": tokens,
               "spread_steps": relative_spread(steps), "spread_tokens": relative_spread(tokens)}
    evidence = (f"{landmark.replace('_', ' ')} in steps: {_list(conditions, labels, landmark + '_step')} "
                f"(relative spread {numbers['spread_steps']:.2f}); in tokens: "
                f"{_list(conditions, labels, landmark + '_tokens', '{:,.3g}')} "
                f"(relative spread {numbers['spread_tokens']:.2f})")
    return numbers, evidence, labels


def claim_jump_follows_steps(conditions: dict, tolerance: float = 0.25) -> dict:
    """(a) Across batch sizes the copy jump aligns in steps, not in tokens: the relative spread of the
    jump steps is at most `tolerance` and smaller than the relative spread of the jump tokens."""
    text = "(a) across batch sizes the copy jump aligns in optimizer steps, not in tokens"
    result = _batch_claim(conditions, "a", text, "copy_jump", tolerance)
    if isinstance(result, dict):
        return result
    numbers, evidence, _ = result
    ok = numbers["spread_steps"] <= tolerance and numbers["spread_steps"] < numbers["spread_tokens"]
    return _claim("a", text, SUPPORTED if ok else NOT_SUPPORTED, f"{evidence}; tolerance {tolerance}",
                  {**numbers, "tolerance": tolerance})


def claim_loss_follows_tokens(conditions: dict) -> dict:
    """(b) Across batch sizes the loss plateau aligns in tokens: its relative spread in tokens is
    smaller than in steps."""
    text = "(b) across batch sizes the training loss converges after the same number of tokens"
    result = _batch_claim(conditions, "b", text, "loss_plateau", None)
    if isinstance(result, dict):
        return result
    numbers, evidence, _ = result
    ok = numbers["spread_tokens"] < numbers["spread_steps"]
    return _claim("b", text, SUPPORTED if ok else NOT_SUPPORTED, evidence, numbers)


def claim_larger_lr_earlier(conditions: dict) -> dict:
    """(c) A larger learning rate groks earlier: the jump step strictly decreases as the learning
    rate grows (a condition without a jump counts as later than any jump)."""
    text = "(c) a larger learning rate groks earlier"
    labels = family(conditions, ("learning_rate",), key="learning_rate")
    if not labels:
        return _claim("c", text, NOT_TESTABLE, "needs conditions that differ only in learning_rate")
    labels.sort(key=lambda l: conditions[l]["config"]["learning_rate"])
    jumps = [conditions[l]["stats"].get("copy_jump_step") for l in labels]
    if all(j is None for j in jumps):
        return _claim("c", text, NOT_TESTABLE, "no condition has a copy jump")
    order = [float("inf") if j is None else j for j in jumps]
    ok = all(a > b for a, b in zip(order, order[1:]))
    evidence = (f"jump step by increasing learning rate: {_list(conditions, labels, 'copy_jump_step')}; final "
                f"exact match: {_list(conditions, labels, 'final_exact_match', '{:.3f}')}")
    return _claim("c", text, SUPPORTED if ok else NOT_SUPPORTED, evidence, {"conditions": labels, "jump_steps": jumps})


def _is_zero(value) -> bool:
    return value is None or float(value) == 0.0


def claim_regularization_helps(conditions: dict) -> dict:
    """(d) Attention dropout / weight decay grok earlier or higher: every regularised condition has
    an earlier jump step or a higher final exact match than the baseline (0 dropout, 0 weight decay,
    otherwise equal)."""
    text = "(d) attention dropout and weight decay grok earlier or reach a higher copy accuracy than the baseline"
    labels = family(conditions, ("attention_dropout", "weight_decay"))
    base = [l for l in labels if all(_is_zero(conditions[l]["config"].get(f))
                                     for f in ("attention_dropout", "weight_decay"))]
    if not base or len(labels) < 2:
        return _claim("d", text, NOT_TESTABLE, "needs a baseline (no dropout, no weight decay) and a regularised "
                                               "condition that differ in nothing else")
    b = conditions[base[0]]["stats"]
    inf = float("inf")
    rows, ok = {}, True
    for label in (l for l in labels if l != base[0]):
        s = conditions[label]["stats"]
        earlier = (s.get("copy_jump_step") if s.get("copy_jump_step") is not None else inf) < (
            b.get("copy_jump_step") if b.get("copy_jump_step") is not None else inf)
        higher = (s.get("final_exact_match") or 0) > (b.get("final_exact_match") or 0)
        rows[label] = {"earlier": earlier, "higher": higher}
        ok = ok and (earlier or higher)
    evidence = (f"against {base[0]}; jump step: {_list(conditions, labels, 'copy_jump_step')}; final exact "
                f"match: {_list(conditions, labels, 'final_exact_match', '{:.3f}')}; "
                + "; ".join(f"{l}: {'earlier' if r['earlier'] else 'not earlier'}, "
                            f"{'higher' if r['higher'] else 'not higher'}" for l, r in rows.items()))
    return _claim("d", text, SUPPORTED if ok else NOT_SUPPORTED, evidence, {"baseline": base[0], "conditions": rows})


def evaluate_claims(conditions: dict, align_tolerance: float = 0.25) -> list[dict]:
    return [claim_jump_follows_steps(conditions, align_tolerance), claim_loss_follows_tokens(conditions),
            claim_larger_lr_earlier(conditions), claim_regularization_helps(conditions)]


# --- The command ------------------------------------------------------------------------------

def build_report(paths, out, *, threshold: float = 0.3, align_tolerance: float = 0.25, **settings) -> dict:
    """Load, group, measure, plot and write report.md + report.json into `out`; return the record."""
    from grokcopy.experiments.render import write_figures, write_markdown

    runs = load_runs(find_runs(paths), **settings)
    conditions = group_conditions(runs)
    claims = evaluate_claims({c["label"]: c for c in conditions}, align_tolerance)
    for c in conditions:
        c["formation"] = [induction_formation(r["induction"], threshold) for r in c["runs"] if r["induction"]]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(conditions, out, threshold)
    record = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S"), "settings": {"threshold": threshold,
                                                                      "align_tolerance": align_tolerance, **settings},
        "runs": [{"name": r["name"], "path": r["path"], "seed": r["seed"], "stats": r["stats"],
                  "condition": next(c["label"] for c in conditions if r in c["runs"])} for r in runs],
        "conditions": [{k: c[k] for k in ("label", "description", "config", "n", "stats", "spread",
                                                        "formation")} for c in conditions],
        "claims": claims, "figures": [p.name for p in figures],
    }
    from grokcopy.training.callbacks import write_json_atomic

    write_json_atomic(out / "report.json", json.loads(json.dumps(record, default=str)))
    write_markdown(record, out / "report.md")
    return record


def run_report(ns) -> int:
    record = build_report(ns.runs, ns.out, threshold=ns.threshold, align_tolerance=ns.align_tolerance,
                          loss_tolerance=ns.loss_tolerance, relative=not ns.absolute, loss_window=ns.loss_window,
                          jump_window=ns.jump_window)
    n_runs, n_conditions = len(record["runs"]), len(record["conditions"])
    print(f"{n_runs} run{'s' * (n_runs != 1)} in {n_conditions} condition{'s' * (n_conditions != 1)} -> "
          f"{Path(ns.out) / 'report.md'}")
    for claim in record["claims"]:
        print(f"{claim['text']}: {claim['verdict']}")
    return 0
