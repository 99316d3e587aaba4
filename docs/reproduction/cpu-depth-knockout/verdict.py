"""The knock-out protocol's verdict from the committed histories (docs/reproduction/cpu-depth-knockout/PROTOCOL.md)."""
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ARCH = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reproduction/cpu-depth-knockout")
DEPTH = ARCH.parent / "cpu-depth"


def jump(folder):
    from grokcopy.analysis.grokking import jump_step

    return jump_step([json.loads(l) for l in (folder / "copy_history.jsonl").read_text().splitlines()])


rows = []
for folder in sorted(ARCH.glob("layers4-ko1-seed*")):
    history = [json.loads(l) for l in (folder / "induction_history.jsonl").read_text().splitlines()]
    formed = {}
    for layer in range(history[0]["num_layers"]):
        formed[layer] = next((r["step"] for r in sorted(history, key=lambda r: r["step"])
                              if max(r["induction"][layer]) >= 0.3), None)
    ablation = json.loads((folder / "ablation_final.json").read_text())
    em = ablation["exact_match"]
    deep = [l for l in (2, 3) if formed[l] is not None]
    carried = [l for l in deep if ablation["layer_ablated_exact_match"][l] <= 0.5 * em]
    rows.append({"run": folder.name, "formed": formed, "final_em": em, "deep_formed": deep, "deep_carries": carried,
                 "takes": bool(deep) and em >= 0.5 and bool(carried), "jump": jump(folder)[0],
                 "layer_ablated": ablation["layer_ablated_exact_match"],
                 "copies_by_induction": ablation.get("copies_by_induction"), "heads": ablation.get("induction_heads")})
for r in rows:
    print(r)
n = len(rows)
takes = sum(r["takes"] for r in rows)
none_deep = sum(not r["deep_formed"] for r in rows)
verdict = ("deeper layers take the circuit" if takes >= 3 else "deeper layers do not take it within 800 steps"
           if none_deep >= 3 else "mixed")
print(f"{takes}/{n} seeds: a layer >= 2 formed, the run copies, and ablating that layer removes >= half: {verdict}")
# descriptive: jump later than cpu-depth? exact one-sided permutation test on the jump step (censored last)
ko = [r["jump"] if r["jump"] is not None else np.inf for r in rows]
base = [jump(f)[0] or np.inf for f in sorted(DEPTH.glob("layers4-seed*"))]
both = ko + base
observed = np.mean(ko) if np.all(np.isfinite(both)) else None
ranks = np.argsort(np.argsort(both, kind="stable"), kind="stable") + 1.0
stat = ranks[:len(ko)].sum()
count = total = 0
for pick in itertools.combinations(range(len(both)), len(ko)):
    total += 1
    count += ranks[list(pick)].sum() >= stat
print("knock-out jumps", ko, "cpu-depth jumps", base, f"one-sided p (knock-out later) = {count}/{total} = {count/total:.3f}")
