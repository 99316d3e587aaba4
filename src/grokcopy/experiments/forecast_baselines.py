"""The baselines a forecast must beat, each fit on the same reference runs as the forecaster.

- `nearest_configuration`: the Kaplan-Meier median jump step of the reference configuration nearest in
  (ln tokens per step, ln learning rate, layers), over its seeds still without a jump at K; 80% interval: their
  10-90% quantiles.
- `mccandlish`: S(B) = S_min (1 + B_crit / B), fit (least squares in ln S) to the per-batch medians at the reference
  set's most common learning rate, from the batch with the fewest tokens to the jump up (sweep A's rule): from the
  batch alone, blind to the learning rate.
- `aoyama`: Aoyama et al. (2025)'s N = T0 sqrt(B C) tokens for B sequences of C tokens per step, i.e.
  steps = T0 / sqrt(tokens per step); with their T0 = 10^5.7 and with T0 refit (the median over reference jumps).
- `copy_extrapolation`: a line through the last three copy tests' exact match, extended to 0.5 (None when flat).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from grokcopy.analysis.survival import km_median
from grokcopy.experiments.critical_batch_fit import fit_critical_batch
from grokcopy.forecast.signals import Snapshot

AOYAMA_T0 = 10 ** 5.7


def _key(config: dict) -> tuple:
    return (config.get("tokens_per_step"), config.get("learning_rate"), config.get("num_layers") or 2)


class Baselines:
    def __init__(self, reference: dict):
        self.cells = defaultdict(list)  # configuration -> [(jump step or last step, jumped)]
        for run in reference["runs"]:
            if run["config"].get("tokens_per_step") and run["config"].get("learning_rate"):
                end = run["outcome"]
                jumped = end["jump_step"] is not None
                self.cells[_key(run["config"])].append((end["jump_step"] if jumped else end["last_step"], jumped))
        jumps = [(t, k[0]) for k, seeds in self.cells.items() for t, j in seeds if j]
        self.aoyama_t0 = float(np.median([t * math.sqrt(b) for t, b in jumps])) if jumps else None
        self.mccandlish_fit = self._mccandlish()

    def _mccandlish(self) -> tuple[float, float] | None:
        lrs = defaultdict(int)
        for (_, lr, _), seeds in self.cells.items():
            lrs[lr] += len(seeds)
        if not lrs:
            return None
        lr = max(lrs, key=lrs.get)
        medians = {}
        for (b, l, layers), seeds in self.cells.items():
            if l == lr and layers == 2:
                m = km_median([t for t, _ in seeds], [j for _, j in seeds])
                if m is not None:
                    medians[b] = m
        if len(medians) < 2:
            return None
        fewest = min(medians, key=lambda b: medians[b] * b)
        batches = sorted(b for b in medians if b >= fewest)
        return fit_critical_batch(batches, [medians[b] for b in batches])

    def nearest_configuration(self, snap: Snapshot) -> dict:
        c = snap.config
        if not c.get("tokens_per_step") or not c.get("learning_rate") or not self.cells:
            return {"jump_step": None, "interval": None}

        def distance(key):
            b, lr, layers = key
            return ((math.log(b / c["tokens_per_step"])) ** 2 + (math.log(lr / c["learning_rate"])) ** 2
                    + (layers - (c.get("num_layers") or 2)) ** 2)

        best = min(distance(k) for k in self.cells)
        seeds = [s for k in self.cells if distance(k) == best for s in self.cells[k]]
        later = [s for s in seeds if s[0] > snap.step] or seeds
        median = km_median([t for t, _ in later], [j for _, j in later])
        values = np.array([t if j else math.inf for t, j in later])
        lo, hi = np.quantile(values, 0.1, method="lower"), np.quantile(values, 0.9, method="higher")
        return {"jump_step": median, "interval": [float(lo), float(hi)]}

    def mccandlish(self, snap: Snapshot) -> dict:
        b = snap.config.get("tokens_per_step")
        if self.mccandlish_fit is None or not b:
            return {"jump_step": None, "interval": None}
        s_min, b_crit = self.mccandlish_fit
        return {"jump_step": s_min * (1 + b_crit / b), "interval": None}

    def aoyama(self, snap: Snapshot, refit: bool = True) -> dict:
        b = snap.config.get("tokens_per_step")
        t0 = self.aoyama_t0 if refit else AOYAMA_T0
        return {"jump_step": t0 / math.sqrt(b) if b and t0 else None, "interval": None}

    @staticmethod
    def copy_extrapolation(snap: Snapshot) -> dict:
        points = snap.copy_points[-3:]
        if len(points) < 2:
            return {"jump_step": None, "interval": None}
        x, y = np.array(points, dtype=float).T
        slope = np.polyfit(x, y, 1)[0] if np.ptp(x) > 0 else 0.0
        if slope <= 0:
            return {"jump_step": None, "interval": None}
        return {"jump_step": float(x[-1] + max(0.0, 0.5 - y[-1]) / slope), "interval": None}

    def all(self, snap: Snapshot) -> dict:
        return {"nearest configuration": self.nearest_configuration(snap), "McCandlish (batch only)": self.mccandlish(snap),
                "Aoyama (T0 refit)": self.aoyama(snap), "Aoyama (T0 = 10^5.7)": self.aoyama(snap, refit=False),
                "copy-test extrapolation": self.copy_extrapolation(snap)}
