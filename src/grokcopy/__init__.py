"""grokcopy: watch causal LMs grok to copy, on top of transformers.Trainer.

    from grokcopy import CopyTrainer, CopyTrainingArguments, CopyEvalCallback, analyze_induction

The public API is loaded lazily (PEP 562): `import grokcopy` and `grokcopy --help` import neither
torch nor transformers; the first use of a name imports its module. The stages behind the names:
training/ (config, data, model, CopyTrainer, callbacks), copytest/ (the paper's copy test),
analysis/ (induction heads, grokking landmarks), hub/ (checkpoint series both ways),
experiments/ (demo, sweeps, report); see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "CopyTrainer": "grokcopy.training.trainer",
    "CopyTrainingArguments": "grokcopy.training.config",
    "ModelArguments": "grokcopy.training.config",
    "DataArguments": "grokcopy.training.config",
    "parse_args": "grokcopy.training.config",
    "run_training": "grokcopy.training.pipeline",
    "CopyEvalCallback": "grokcopy.training.copy_callback",
    "InductionHeadCallback": "grokcopy.training.induction_callback",
    "CopyForecastCallback": "grokcopy.training.forecast_callback",
    "HeadAblationCallback": "grokcopy.training.ablation_callback",
    "DivergenceGuard": "grokcopy.training.callbacks",
    "attach_analyses": "grokcopy.training.callbacks",
    "HubCheckpointCallback": "grokcopy.hub.push",
    "CopyTaskConfig": "grokcopy.copytest.task",
    "build_copy_task": "grokcopy.copytest.task",
    "score_copy_task": "grokcopy.copytest.scoring",
    "analyze_induction": "grokcopy.analysis.induction",
    "InductionScores": "grokcopy.analysis.induction",
    "grokking_stats": "grokcopy.analysis.grokking",
    "analyze_series": "grokcopy.hub.series",
    "build_report": "grokcopy.experiments.report",
    "ConfigError": "grokcopy.errors",
    "RunFolder": "grokcopy.run_dir",
}

__all__ = [  # the names of _EXPORTS (tests/test_layout.py checks they agree)
    "ConfigError", "CopyEvalCallback", "CopyForecastCallback", "CopyTaskConfig", "CopyTrainer", "CopyTrainingArguments", "DataArguments",
    "DivergenceGuard", "HeadAblationCallback", "HubCheckpointCallback", "InductionHeadCallback", "InductionScores", "ModelArguments",
    "RunFolder",
    "__version__", "analyze_induction", "analyze_series", "attach_analyses", "build_copy_task", "build_report", "grokking_stats",
    "parse_args", "run_training", "score_copy_task",
]

if TYPE_CHECKING:  # for editors and type checkers; at run time names load on first use
    from grokcopy.analysis.grokking import grokking_stats
    from grokcopy.analysis.induction import InductionScores, analyze_induction
    from grokcopy.copytest.scoring import score_copy_task
    from grokcopy.copytest.task import CopyTaskConfig, build_copy_task
    from grokcopy.errors import ConfigError
    from grokcopy.experiments.report import build_report
    from grokcopy.hub.push import HubCheckpointCallback
    from grokcopy.hub.series import analyze_series
    from grokcopy.run_dir import RunFolder
    from grokcopy.training.callbacks import DivergenceGuard, attach_analyses
    from grokcopy.training.config import CopyTrainingArguments, DataArguments, ModelArguments, parse_args
    from grokcopy.training.copy_callback import CopyEvalCallback
    from grokcopy.training.ablation_callback import HeadAblationCallback
    from grokcopy.training.forecast_callback import CopyForecastCallback
    from grokcopy.training.induction_callback import InductionHeadCallback
    from grokcopy.training.pipeline import run_training
    from grokcopy.training.trainer import CopyTrainer


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'grokcopy' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
