"""`grokcopy report`: runs (or sweeps) in, the paper's figures, grokking statistics and verdicts out.

Runs are grouped into conditions by their run_config.json: runs that differ only in bookkeeping
(output folder, logging, ...) and in `seed` are one condition, averaged over seeds. The paper's
claims are pure functions of the conditions' statistics (`claim_*`), so what counts as "supported"
is written down once, tested on synthetic numbers, and reported with the numbers behind it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from grokcopy.analysis.grokking import induction_formation
from grokcopy.errors import ConfigError
from grokcopy.experiments.claims import evaluate_claims
from grokcopy.experiments.conditions import find_runs, group_conditions, load_runs, missing_members
from grokcopy.run_dir import writable_problem, write_json_atomic


def build_report(paths, out, *, threshold: float = 0.3, align_tolerance: float = 0.25, **settings) -> dict:
    """Load, group, measure, plot and write report.md + report.json into `out`; return the record."""
    from grokcopy.experiments.render import write_figures, write_markdown

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is a file, not a folder")
    problem = writable_problem(out)
    if problem:
        raise ConfigError(f"--out: {problem}")
    runs = load_runs(find_runs(paths), **settings)
    conditions = group_conditions(runs)
    claims = evaluate_claims({c["label"]: c for c in conditions}, align_tolerance)
    for c in conditions:
        c["formation"] = [induction_formation(r["induction"], threshold) for r in c["runs"] if r["induction"]]
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(conditions, out, threshold)
    record = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S"), "settings": {"threshold": threshold,
                                                                      "align_tolerance": align_tolerance, **settings},
        "runs": [{"name": r["name"], "path": r["path"], "seed": r["seed"], "unfinished": r["unfinished"],
                  "stats": r["stats"],
                  "condition": next(c["label"] for c in conditions if r in c["runs"])} for r in runs],
        "conditions": [{k: c[k] for k in ("label", "description", "config", "n", "stats", "spread",
                                                        "formation")} for c in conditions],
        "claims": claims, "figures": [p.name for p in figures], "missing": missing_members(paths),
    }
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
    for run in record["runs"]:
        if run["unfinished"]:
            print(f"note: run {run['name']} is unfinished ({run['unfinished']}); its statistics are of a run cut short")
    for member in record["missing"]:
        print(f"note: sweep member {member['name']} has no run to report ({member['status']}"
              + (f": {member['error']}" if member["error"] else "") + ")")
    for claim in record["claims"]:
        print(f"{claim['text']}: {claim['verdict']}")
    return 0
